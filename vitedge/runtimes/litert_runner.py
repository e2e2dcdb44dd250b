"""LiteRT runner (`ai_edge_litert.interpreter`, TensorFlow Lite's successor) for `.tflite` files.

The interpreter is created with the BUILTIN op resolver, which applies the XNNPACK delegate by
default (the `ai-edge-litert` wheel ships XNNPACK inside the interpreter, there is no separate
delegate library to load), and with an explicit thread count that XNNPACK uses. `info()`
reports whether XNNPACK actually took the graph (number of delegate partitions), because an
undelegated op runs on TFLite's own kernels, which is the usual reason a .tflite is slow on a
phone. `delegate="none"` uses BUILTIN_WITHOUT_DEFAULT_DELEGATES (TFLite kernels only).

Full-integer models (litert-int8) take and return int8 tensors: the converter folds the
model's first quantise and last dequantise into the interface. The runner keeps vitedge's
float interface ("input" float32 NCHW -> "logits" float32) and quantises/dequantises with the
tensor's own scale and zero point, exactly what an app on the device does. The first input is
exposed as "input" and the first output as "logits" (the converter names them
`serving_default_args_0` / `..._output_0`).

Batch is static (whatever the artifact was converted with): `resize_tensor_input` on these
graphs fails inside XNNPACK (reshape constants carry the batch), and vitedge's `run_batched`
pads to the static batch. The interpreter is not thread-safe: one runner, one caller at a time
(calls are serialised with a lock anyway). No torch here: only numpy and ai_edge_litert.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from vitedge.errors import InputError
from vitedge.runtimes.base import PIXELS_NAME, Runner, TensorSpec, default_threads
from vitedge.runtimes.registry import RuntimeSpec

RUNTIME = RuntimeSpec(name="litert", runner="vitedge.runtimes.litert_runner:LiteRTRunner", module="ai_edge_litert",
                      packages=("ai-edge-litert",), opens=(".tflite",), thread_safe=False, needs_torch=False,
                      label="LiteRT", install="pip install 'vitedge[litert]' (device: pip install ai-edge-litert)",
                      snippets=(("Kotlin (Android, LiteRT's Interpreter API; not compiled here)", """\
val model = FileUtil.loadMappedFile(context, "{file}")
val interpreter = Interpreter(model, Interpreter.Options().setNumThreads(4))  // XNNPACK is on by default
val input = ByteBuffer.allocateDirect(interpreter.getInputTensor(0).numBytes()).order(ByteOrder.nativeOrder())
// {fill}
val logits = Array(1) {{ FloatArray({c}) }}
interpreter.run(input.rewind(), logits)
val top1 = logits[0].indices.maxBy {{ logits[0][it] }}"""),))

DELEGATES = ("xnnpack", "none")
INPUT_NAME = "input"  # the float model input (PIXELS_NAME: pixels, vitedge.export.pixels)
OUTPUT_NAME = "logits"


def _litert() -> Any:
    try:
        from ai_edge_litert import interpreter
    except ImportError:
        raise RUNTIME.missing_error() from None
    return interpreter


def litert_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ai-edge-litert")
    except PackageNotFoundError:
        return "?"


def _interpreter(path: Path, threads: int, delegate: str, unfused: bool = False) -> Any:
    lite = _litert()
    resolver = (lite.OpResolverType.BUILTIN if delegate == "xnnpack"
                else lite.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    from vitedge.quiet import native_stderr

    try:
        with native_stderr():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." on every interpreter
            it = lite.Interpreter(model_path=str(path), num_threads=int(threads),
                                  experimental_op_resolver_type=resolver,
                                  experimental_disable_delegate_node_fusion=unfused)
            it.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise InputError(f"{path}: LiteRT cannot load it ({str(e).splitlines()[0][:200]})") from None
    return it


def _node_names(it: Any) -> list[tuple[str, tuple[int, ...]]]:
    """(op name, output tensor ids) of every node. A delegate kernel is a node named DELEGATE;
    the nodes it replaced stay listed (the wrapper lists all nodes, not the execution plan)."""
    w = it._interpreter  # the wrapper's node accessors: the same ones Interpreter._get_ops_details uses
    return [(w.NodeName(i), tuple(int(t) for t in w.NodeOutputs(i))) for i in range(w.NumNodes())]


def op_coverage(path: str | Path, threads: int = 1) -> dict[str, Any]:
    """Which ops of a .tflite the XNNPACK delegate takes and which stay on TFLite's kernels.

    Built with delegate node fusion off, XNNPACK wraps every op it takes in its own DELEGATE
    node with that op's outputs, so an op is delegated iff some DELEGATE node has exactly its
    outputs. A second, normal interpreter gives the number of partitions a device would run."""
    path = Path(path)
    nodes = _node_names(_interpreter(path, threads, "xnnpack", unfused=True))
    delegate_outputs = {outs for name, outs in nodes if name == "DELEGATE"}
    ops = [(name, outs) for name, outs in nodes if name != "DELEGATE"]
    taken = Counter(name for name, outs in ops if outs in delegate_outputs)
    left = Counter(name for name, outs in ops if outs not in delegate_outputs)
    partitions = sum(1 for name, _ in _node_names(_interpreter(path, threads, "xnnpack")) if name == "DELEGATE")
    return {
        "delegate": "xnnpack",
        "ops_total": len(ops),
        "ops_delegated": sum(taken.values()),
        "ops_not_delegated": sum(left.values()),
        "delegated": dict(sorted(taken.items())),
        "not_delegated": dict(sorted(left.items())),
        "xnnpack_partitions": partitions,
    }


def op_counts(path: str | Path) -> dict[str, int]:
    """Builtin op name -> count in the model (no delegate)."""
    nodes = _node_names(_interpreter(Path(path), 1, "none"))
    return dict(sorted(Counter(name for name, _ in nodes).items()))


def _quantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return x.astype(dtype, copy=False)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    if y.dtype.kind == "f":
        return y.astype(np.float32, copy=False)
    scale, zero = detail["quantization"]
    return ((y.astype(np.float32) - zero) * scale).astype(np.float32)


class LiteRTRunner(Runner):
    runtime = "litert"

    def __init__(self, path: str | Path, threads: int | None = None, delegate: str = "xnnpack",
                 name: str | None = None):
        super().__init__(name)
        if delegate not in DELEGATES:
            raise ValueError(f"delegate must be one of {DELEGATES}")
        self.path = Path(path)
        self.threads = threads or default_threads()
        self.delegate = delegate
        self.interpreter: Any = None
        self._lock = threading.Lock()

    def _activate(self) -> None:
        if not self.path.is_file():
            raise InputError(f"{self.path}: no such .tflite file")
        it = _interpreter(self.path, self.threads, self.delegate)
        self._in = it.get_input_details()
        self._out = it.get_output_details()
        if len(self._in) != 1:
            raise InputError(f"{self.path}: expected one image input, the model has {len(self._in)}")
        self._partitions = sum(1 for name, _ in _node_names(it) if name == "DELEGATE")
        self.interpreter = it

    def _deactivate(self) -> None:
        self.interpreter = None

    def _takes_pixels(self) -> bool:
        """uint8 without quantisation parameters: camera pixels (--embed-preprocessing), fed as they are."""
        d = self._in[0]
        return np.dtype(d["dtype"]) == np.uint8 and not d["quantization"][0]

    def inputs(self) -> list[TensorSpec]:
        shape = tuple(int(d) for d in self._in[0]["shape"])
        if self._takes_pixels():
            return [TensorSpec(PIXELS_NAME, "uint8", shape)]
        # vitedge feeds float32 even to full-int8 models (quantised here, see module doc).
        return [TensorSpec(INPUT_NAME, "float32", shape)]

    def placement(self) -> dict[str, Any] | None:
        """Which ops the XNNPACK delegate takes (op_coverage); with --litert-delegate none there is
        no fast path to fall off."""
        from vitedge.runtimes.base import placement_report

        if self.delegate == "none":
            return None
        cov = op_coverage(self.path, threads=self.threads)
        return placement_report("the XNNPACK delegate", cov["delegated"], cov["not_delegated"],
                                partitions=cov["xnnpack_partitions"])

    def _output_name(self, i: int) -> str:
        return OUTPUT_NAME if i == 0 else str(self._out[i]["name"])

    def outputs(self) -> list[TensorSpec]:
        return [TensorSpec(self._output_name(i), "float32", tuple(int(d) for d in o["shape"]))
                for i, o in enumerate(self._out)]

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"runtime": self.runtime, "version": litert_version(), "device": "cpu",
                               "threads": self.threads, "delegate": self.delegate}
        if self.interpreter is not None:
            out["xnnpack_partitions"] = self._partitions
            out["io_dtype"] = [np.dtype(self._in[0]["dtype"]).name, np.dtype(self._out[0]["dtype"]).name]
            if np.dtype(self._in[0]["dtype"]).kind != "f":
                out["io_quantization"] = {"input": [float(v) for v in self._in[0]["quantization"]],
                                          "output": [float(v) for v in self._out[0]["quantization"]]}
        return out

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = feed[PIXELS_NAME] if self._takes_pixels() else _quantize(feed[INPUT_NAME], self._in[0])
        with self._lock:
            it = self.interpreter
            it.set_tensor(self._in[0]["index"], x)
            it.invoke()
            raw = [it.get_tensor(o["index"]) for o in self._out]  # get_tensor copies
        return {self._output_name(i): _dequantize(y, o) for i, (y, o) in enumerate(zip(raw, self._out, strict=True))}
