"""OpenVINO runner: reads IR (.xml + .bin) or ONNX, compiles for a device (CPU here).

The inference precision hint is set explicitly: OpenVINO's CPU plugin silently computes in
bf16/fp16 on CPUs that support it unless told otherwise, so an "fp32" artifact would not
compute in fp32. `info()` reports what the compiled model actually uses. An InferRequest is not
thread-safe, so each calling thread gets its own request on the shared compiled model.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from vitedge.errors import InputError
from vitedge.runtimes import sigstack
from vitedge.runtimes.base import Runner, TensorSpec, default_threads
from vitedge.runtimes.op_profile import PROFILED_RUNS
from vitedge.runtimes.registry import RuntimeSpec

# One compiled model, one infer request per calling thread (see OpenVinoRunner): thread-safe.
COMPUTE_LAYERS = frozenset({"FullyConnected", "Convolution", "MatMul", "GroupConvolution", "Deconvolution"})


def _parallel(streams: int, cores: int) -> tuple[int, int, dict[str, Any]]:
    """OpenVINO's own throughput mechanism: one compiled model, the THROUGHPUT hint with NUM_STREAMS
    streams (the CPU plugin pins each to its share of the cores), one infer request per thread."""
    return 1, cores, {"performance_hint": "THROUGHPUT", "config": {"NUM_STREAMS": str(streams)}}


RUNTIME = RuntimeSpec(name="openvino", runner="vitedge.runtimes.openvino_runner:OpenVinoRunner", module="openvino",
                      packages=("openvino",), opens=(".xml",), label="OpenVINO", install="pip install 'vitedge[ov]'",
                      parallel=_parallel)

PRECISIONS = ("f32", "f16", "bf16")


def _ov() -> Any:
    try:
        import openvino
    except ImportError:
        raise RUNTIME.missing_error() from None
    return openvino


def _dtype(t: Any) -> str:
    name = t.to_dtype().name if hasattr(t, "to_dtype") else str(t)
    return name


class OpenVinoRunner(Runner):
    runtime = "openvino"

    def __init__(
        self,
        path: str | Path,
        device: str = "CPU",
        threads: int | None = None,
        inference_precision: str | None = "f32",
        performance_hint: str = "LATENCY",
        config: dict[str, Any] | None = None,
        cache_dir: str | None = None,
        name: str | None = None,
    ):
        super().__init__(name)
        if inference_precision is not None and inference_precision not in PRECISIONS:
            raise ValueError(f"inference_precision must be one of {PRECISIONS} or None")
        self.path = Path(path)
        self.device = device
        self.threads = threads or default_threads()
        self.inference_precision = inference_precision
        self.performance_hint = performance_hint
        self.config = dict(config or {})
        # OpenVINO's model cache (CACHE_DIR), relative to the model file: the first load compiles
        # and writes the blob, later ones read it. `cache_state`: "written", "read", or why not.
        self.cache_dir = None if cache_dir is None else self.path.parent / cache_dir
        self.cache_state: str | None = None
        self.compiled: Any = None
        self._local = threading.local()

    def compile_config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "PERFORMANCE_HINT": self.performance_hint,
            "INFERENCE_NUM_THREADS": str(self.threads),
            "NUM_STREAMS": "1",
        }
        if self.inference_precision:
            cfg["INFERENCE_PRECISION_HINT"] = self.inference_precision
        if self.cache_dir is not None and self.cache_state != "not writable":
            cfg["CACHE_DIR"] = str(self.cache_dir)
        cfg.update(self.config)
        return cfg

    def _prepare_cache(self) -> None:
        if self.cache_dir is None:
            return
        try:
            self.cache_dir.mkdir(exist_ok=True)
            probe = self.cache_dir / ".probe"
            probe.touch()
            probe.unlink()
        except OSError:  # a read-only bundle: compile every time, as without the option
            self.cache_state = "not writable"
            return
        self.cache_state = "read" if any(p.suffix == ".blob" for p in self.cache_dir.iterdir()) else "written"

    def _activate(self) -> None:
        ov = _ov()
        if not self.path.is_file():
            raise InputError(f"{self.path}: no such model file")
        try:
            with sigstack.preserved():  # the CPU plugin swaps our signal stack; see sigstack
                core = ov.Core()
                self._prepare_cache()
                model = core.read_model(str(self.path))
                self.compiled = core.compile_model(model, self.device, self.compile_config())
                self._outputs = [(port.get_any_name(), port) for port in self.compiled.outputs]
        except Exception as e:
            raise InputError(f"{self.path}: OpenVINO cannot load/compile it ({str(e).splitlines()[0][:200]})") from None
        self._local = threading.local()

    def _deactivate(self) -> None:
        with sigstack.preserved():
            self.compiled = None
            self._local = threading.local()

    @staticmethod
    def _spec(port: Any) -> TensorSpec:
        shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
        return TensorSpec(port.get_any_name(), _dtype(port.get_element_type()), shape)

    def inputs(self) -> list[TensorSpec]:
        return [self._spec(p) for p in self.compiled.inputs]

    def outputs(self) -> list[TensorSpec]:
        return [self._spec(p) for p in self.compiled.outputs]

    def info(self) -> dict[str, Any]:
        ov = _ov()
        out: dict[str, Any] = {
            "runtime": self.runtime,
            "version": ov.get_version(),
            "device": self.device,
            "threads": self.threads,
            "requested": self.compile_config(),
        }
        if self.cache_dir is not None:
            out["model_cache"] = self.cache_state
        if self.compiled is not None:
            # What the plugin actually chose (may differ from the request on some CPUs).
            for key in ("INFERENCE_PRECISION_HINT", "EXECUTION_DEVICES", "INFERENCE_NUM_THREADS",
                        "NUM_STREAMS", "PERFORMANCE_HINT"):
                try:
                    out.setdefault("actual", {})[key] = str(self.compiled.get_property(key))
                except Exception:  # not every property exists on every device/version
                    pass
        return out

    def placement(self) -> dict[str, Any] | None:
        """The compiled model's own layers (its runtime model): compute layers (FullyConnected,
        Convolution, MatMul) by the precision the CPU plugin runs them in, and the layout
        conversions (Reorder) it had to insert. An IR without int8 layers has no int8 path."""
        from vitedge.runtimes.base import placement_report

        layers: Counter[tuple[str, str]] = Counter()
        for op in self.compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            kind = info["layerType"].astype(str) if "layerType" in info else op.get_type_name()
            precision = info["runtimePrecision"].astype(str) if "runtimePrecision" in info else "?"
            layers[(kind, precision)] += 1
        compute = {(k, p): n for (k, p), n in layers.items() if k in COMPUTE_LAYERS}
        reorders = sum(n for (k, _), n in layers.items() if k == "Reorder")
        int8 = {f"{k} {p}": n for (k, p), n in compute.items() if p in ("i8", "u8")}
        other = {f"{k} {p}": n for (k, p), n in compute.items() if p not in ("i8", "u8")}
        if not int8:
            return placement_report("float kernels (no int8 layers in this IR)", other, {}, reorders=reorders)
        return placement_report("int8 kernels", int8, other, reorders=reorders)

    def op_profile(self, runs: int = PROFILED_RUNS) -> dict[str, Any] | None:
        """The CPU plugin's performance counters (PERF_COUNT, on a second compile with this one's
        settings) per layer of the compiled model, by layer type and the kernel it ran
        (`FullyConnected brgemm_avx512_I8`: the precision it really ran in)."""
        from vitedge.runtimes.op_profile import op_times
        from vitedge.runtimes.open import seeded_input

        ov = _ov()
        with sigstack.preserved():
            compiled = ov.Core().compile_model(str(self.path), self.device,
                                               {**self.compile_config(), "PERF_COUNT": "YES"})
            request = compiled.create_infer_request()
            spec = self.inputs()[0]
            feed = {spec.name: seeded_input(self, spec.shape[0] if isinstance(spec.shape[0], int) else 1)}
            request.infer(feed)  # warm-up
            nodes: dict[str, tuple[str, str, list[float]]] = {}
            for _ in range(runs):
                request.infer(feed)
                for p in request.profiling_info:
                    if str(p.status).endswith("EXECUTED"):
                        kind = f"{p.node_type} {p.exec_type}"
                        nodes.setdefault(p.node_name, (kind, "CPU plugin", []))[2].append(
                            p.real_time.total_seconds() * 1000)
        return op_times(nodes.values(), "OpenVINO PERF_COUNT", runs)

    def _request(self) -> Any:
        req = getattr(self._local, "request", None)
        if req is None:
            req = self.compiled.create_infer_request()
            self._local.request = req
        return req

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        req = self._request()
        result = req.infer(feed)
        # Copy: the request reuses its output buffers on the next call.
        return {name: np.array(result[port]) for name, port in self._outputs}
