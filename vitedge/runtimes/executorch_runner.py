"""ExecuTorch runner: a .pte program under ExecuTorch's Python bindings (XNNPACK + portable kernels).

The bindings (`executorch.runtime`) link libtorch and take/return torch tensors, so this runner
needs torch on the machine that runs it (`needs_torch=True`); on a phone the same .pte runs under
ExecuTorch's C++ runtime (Java/Kotlin and Swift/Objective-C wrappers) without Python or torch.

Threads: the bindings share one process-wide XNNPACK thread pool; `_unsafe_reset_threadpool(n)`
(an experimental binding, not thread-safe) resizes it, so the runner sets it on activation and
before each call if another runner changed it. One program is not safe to call from several
threads at once (`thread_safe=False`). Input/output shapes come from the method metadata; for a
dynamic-batch program that metadata holds the upper bound, which the bundle's runner options mark.
"""

from __future__ import annotations

import contextlib
import os
import re
import statistics
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from vitedge.errors import InputError
from vitedge.runtimes.base import Runner, TensorSpec, default_threads
from vitedge.runtimes.op_profile import PROFILED_RUNS
from vitedge.runtimes.registry import RuntimeSpec

RUNTIME = RuntimeSpec(name="executorch", runner="vitedge.runtimes.executorch_runner:ExecuTorchRunner",
                      module="executorch", packages=("executorch", "torch"), opens=(".pte",),
                      thread_safe=False, needs_torch=True,
                      install="pip install 'vitedge[executorch]' (with torch==2.14.1); on Android/iOS use "
                              "ExecuTorch's C++/Java/Swift runtime",
                      snippets=(("Kotlin (Android, org.pytorch.executorch; not compiled here)", """\
val module = Module.load(File(context.filesDir, "{file}").path)
val data = FloatArray(3 * {h} * {w})  // {fill}
val input = Tensor.fromBlob(data, longArrayOf(1, 3, {h}, {w}))
val logits = module.forward(EValue.from(input))[0].toTensor().dataAsFloatArray  // {c} values"""),
                                ("Swift (iOS, ExecuTorch's Swift package; not compiled here)", """\
let module = Module(filePath: Bundle.main.path(forResource: "model", ofType: "pte")!)
try module.load("forward")
var data = [Float](repeating: 0, count: 3 * {h} * {w})  // {fill}
let input = Tensor<Float>(&data, shape: [1, 3, {h}, {w}])
let logits: Tensor<Float> = try module.forward(input)[0].tensor()!  // {c} values""")))

# executorch/runtime/core/portable_type/scalar_type.h
_SCALAR_TYPES = {0: "uint8", 1: "int8", 2: "int16", 3: "int32", 4: "int64", 5: "float16", 6: "float32",
                 7: "float64", 11: "bool"}
INPUT_NAME, OUTPUT_NAME = "input", "logits"


def _bindings() -> tuple[Any, Any]:
    try:
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime
    except ImportError:
        raise RUNTIME.missing_error() from None
    return Runtime, portable_lib


@contextlib.contextmanager
def native_stderr(sink: list[str]) -> Iterator[None]:
    """Capture what ExecuTorch's C++ code writes to file descriptor 2 (cpuinfo probing lines on
    every first load, XNNPACK errors) into `sink`, so a load is quiet and a failure can quote it."""
    fd = 2  # native code writes to the descriptor, whatever sys.stderr is at the Python level
    with contextlib.suppress(AttributeError, OSError, ValueError):
        sys.stderr.flush()
    try:
        saved = os.dup(fd)
    except OSError:  # no descriptor 2 (a daemon): nothing to capture
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            sink.extend(tmp.read().decode(errors="replace").splitlines())


def native_errors(lines: list[str]) -> str:
    """The lines worth quoting from captured native stderr (errors, not cpuinfo probing)."""
    # ExecuTorch's log lines carry no level ("[XNNCompiler.cpp:NN] Failed to ..."), hence "ailed"
    keep = [ln.strip() for ln in lines if ("rror" in ln or "ailed" in ln) and "cpuinfo" not in ln]
    return "; ".join(keep[-2:])[:300]


class ExecuTorchRunner(Runner):
    runtime = "executorch"

    def __init__(self, path: str | Path, threads: int | None = None, name: str | None = None,
                 dynamic_batch: bool = False, device_threads: int | None = None, **options: Any):
        super().__init__(name)
        self.path = Path(path)
        self.threads = threads or default_threads()
        self.dynamic_batch = bool(dynamic_batch)
        self.device_threads = device_threads  # what the bundle asks of the device's runtime (recorded)
        self.options = options
        self.method: Any = None
        self._meta: Any = None

    def _activate(self) -> None:
        runtime_cls, lib = _bindings()
        if not self.path.is_file():
            raise InputError(f"{self.path}: no such ExecuTorch program")
        import torch  # noqa: F401  (the bindings exchange torch tensors)

        self._lib = lib
        self._set_threads()
        logged: list[str] = []
        try:
            with native_stderr(logged):
                program = runtime_cls.get().load_program(self.path)
                self.method = program.load_method("forward")
        except Exception as e:  # the bindings raise RuntimeError with ExecuTorch error codes
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            native = native_errors(logged)
            raise InputError(f"{self.path}: ExecuTorch cannot load it ({first})"
                             + (f": {native}" if native else "")) from None
        self._program = program  # the method borrows the program's memory
        self._meta = self.method.metadata

    def _set_threads(self) -> None:
        if self._lib._threadpool_get_thread_count() != self.threads:
            self._lib._unsafe_reset_threadpool(self.threads)

    def _deactivate(self) -> None:
        self.method = None
        self._program = None

    def _spec(self, info: Any, name: str) -> TensorSpec:
        shape: tuple[int | str | None, ...] = tuple(int(d) for d in info.sizes())
        if self.dynamic_batch:
            shape = ("batch", *shape[1:])
        return TensorSpec(name, _SCALAR_TYPES.get(int(info.dtype()), str(info.dtype())), shape)

    def inputs(self) -> list[TensorSpec]:
        n = self._meta.num_inputs()
        return [self._spec(self._meta.input_tensor_meta(i), INPUT_NAME if n == 1 else f"input_{i}")
                for i in range(n)]

    def outputs(self) -> list[TensorSpec]:
        n = self._meta.num_outputs()
        return [self._spec(self._meta.output_tensor_meta(i), OUTPUT_NAME if n == 1 else f"output_{i}")
                for i in range(n)]

    def max_batch(self) -> int | None:
        # static: the fixed batch; dynamic: the upper bound the program was memory-planned for
        return int(self._meta.input_tensor_meta(0).sizes()[0])

    def info(self) -> dict[str, Any]:
        import executorch.version

        out: dict[str, Any] = {"runtime": self.runtime, "version": executorch.version.__version__,
                               "device": "cpu", "threads": self.threads, "bindings": "executorch.runtime (Python)",
                               "dynamic_batch": self.dynamic_batch}
        if self.is_active:
            runtime_cls, _ = _bindings()
            out["backends"] = list(runtime_cls.get().backend_registry.registered_backend_names)
            out["threadpool"] = int(self._lib._threadpool_get_thread_count())
        if self.device_threads:
            out["device_threads"] = self.device_threads
        return out

    def op_profile(self, runs: int = PROFILED_RUNS) -> dict[str, Any] | None:
        """The program's ETDump (a second load with the event tracer on): one event per
        portable-kernel call and, inside each XNNPACK delegate call, per XNNPACK operator; the
        whole call (`Method::execute`, the tracer's own cost included) is `profiled_call_ms`."""
        import torch
        from executorch.devtools import Inspector

        from vitedge.runtimes.op_profile import op_times
        from vitedge.runtimes.open import seeded_input

        self._set_threads()
        spec = self.inputs()[0]
        x = torch.from_numpy(seeded_input(self, spec.shape[0] if isinstance(spec.shape[0], int) else 1))
        logged: list[str] = []
        with tempfile.TemporaryDirectory(prefix="vitedge-etdump-") as tmp, native_stderr(logged), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Output Buffer not found": no tensor debug data asked for
            module = self._lib._load_for_executorch(str(self.path), enable_etdump=True)
            for _ in range(runs + 1):  # the first (warm-up) is left out below
                module.forward((x,))
            module.write_etdump_result_to_file(str(Path(tmp) / "run.etdp"))
            blocks = Inspector(etdump_path=str(Path(tmp) / "run.etdp")).event_blocks
        nodes, whole = [], None
        for block in blocks:
            for e in block.events:
                ms = list(e.perf_data.raw[1:]) if e.perf_data is not None else []
                if e.name == "Method::execute":
                    whole = statistics.median(ms) if ms else None
                elif e.name not in ("DELEGATE_CALL", "OPERATOR_CALL") and block.name == "Execute":
                    kind = re.sub(r" #\d+$", "", e.name).removeprefix("native_call_")
                    nodes.append((kind, "XNNPACK" if e.is_delegated_op else "portable kernels", ms))
        return op_times(nodes, "ExecuTorch ETDump", runs, whole)

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        self._set_threads()  # the pool is process-wide: another runner may have resized it
        names = [s.name for s in self.inputs()]
        args = [torch.from_numpy(np.ascontiguousarray(feed[n])) for n in names]
        outs = self.method.execute(args)
        onames = [s.name for s in self.outputs()]
        # copy: the output may alias the program's planned memory, reused by the next call
        return {n: o.detach().numpy().copy() for n, o in zip(onames, outs, strict=True)}
