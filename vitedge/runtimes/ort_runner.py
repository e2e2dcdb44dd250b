"""ONNX Runtime runner (CPU execution provider; the provider list is an explicit option).

Graph optimisation level, thread counts and session config entries are explicit options and are
reported by `info()`, because they change numerics (e.g. QDQ graphs run as fused int8 kernels at
the default level) as well as speed. `InferenceSession.run` is thread-safe, so one session
serves every thread.
"""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from vitedge.errors import InputError
from vitedge.runtimes.base import Runner, TensorSpec, default_threads
from vitedge.runtimes.op_profile import PROFILED_RUNS
from vitedge.runtimes.registry import RuntimeSpec

# InferenceSession.run is thread-safe: one session serves every thread.
RUNTIME = RuntimeSpec(name="onnxruntime", runner="vitedge.runtimes.ort_runner:OrtRunner", module="onnxruntime",
                      packages=("onnxruntime",), opens=(".onnx",), label="ONNX Runtime", install="pip install 'vitedge[ort]'")

_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(uint8)": "uint8", "tensor(int8)": "int8",
    "tensor(bool)": "bool",
}
LEVELS = ("disable", "basic", "extended", "all")


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise RUNTIME.missing_error() from None
    return onnxruntime


# Compute kernels by the arithmetic they run (ONNX Runtime's CPU provider and its contrib ops).
INT8_KERNELS = frozenset({"QLinearMatMul", "QLinearConv", "MatMulInteger", "ConvInteger", "QGemm",
                          "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QAttention"})
FLOAT_KERNELS = frozenset({"MatMul", "Gemm", "Conv", "FusedConv", "FusedMatMul", "FusedGemm", "NhwcFusedConv",
                           "Attention", "MultiHeadAttention", "ConvTranspose"})


class OrtRunner(Runner):
    runtime = "onnxruntime"

    def __init__(
        self,
        path: str | Path,
        threads: int | None = None,
        graph_optimization: str = "all",
        providers: tuple[str, ...] = ("CPUExecutionProvider",),
        session_config: dict[str, str] | None = None,
        name: str | None = None,
    ):
        super().__init__(name)
        if graph_optimization not in LEVELS:
            raise ValueError(f"graph_optimization must be one of {LEVELS}")
        self.path = Path(path)
        self.threads = threads or default_threads()
        self.graph_optimization = graph_optimization
        self.providers = tuple(providers)
        self.session_config = dict(session_config or {})
        self.session: Any = None

    def _activate(self) -> None:
        ort = _ort()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.graph_optimization]
        opts.log_severity_level = 3
        for k, v in self.session_config.items():
            opts.add_session_config_entry(k, v)
        if not self.path.is_file():
            raise InputError(f"{self.path}: no such ONNX file")
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=list(self.providers))
        except Exception as e:  # ORT raises its own Fail/InvalidGraph/InvalidProtobuf types
            raise InputError(f"{self.path}: ONNX Runtime cannot load it ({str(e).splitlines()[0][:200]})") from None
        self._output_names = [o.name for o in self.session.get_outputs()]

    def _deactivate(self) -> None:
        self.session = None

    @staticmethod
    def _spec(node: Any) -> TensorSpec:
        return TensorSpec(node.name, _ORT_TYPES.get(node.type, node.type), tuple(node.shape))

    def inputs(self) -> list[TensorSpec]:
        return [self._spec(i) for i in self.session.get_inputs()]

    def outputs(self) -> list[TensorSpec]:
        return [self._spec(o) for o in self.session.get_outputs()]

    def info(self) -> dict[str, Any]:
        return {
            "runtime": self.runtime,
            "version": _ort().__version__,
            "device": "cpu",
            "providers": list(self.session.get_providers()) if self.session else list(self.providers),
            "threads": self.threads,
            "graph_optimization": self.graph_optimization,
            "session_config": self.session_config,
        }

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._output_names, self.session.run(self._output_names, feed), strict=True))

    def _profiled_events(self, runs: int) -> list[dict[str, Any]]:
        """ONNX Runtime's profiler events of `runs` calls on the seeded input, from a second
        session with this one's settings (profiling is a session option)."""
        import json
        import tempfile

        from vitedge.runtimes.open import seeded_input

        ort = _ort()
        with tempfile.TemporaryDirectory(prefix="vitedge-ort-profile-") as tmp:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = self.threads
            opts.log_severity_level = 3
            opts.graph_optimization_level = self.session.get_session_options().graph_optimization_level
            opts.enable_profiling = True
            opts.profile_file_prefix = str(Path(tmp) / "run")
            for k, v in self.session_config.items():
                opts.add_session_config_entry(k, v)
            session = ort.InferenceSession(str(self.path), opts, providers=list(self.providers))
            spec = self.inputs()[0]
            feed = {spec.name: seeded_input(self, spec.shape[0] if isinstance(spec.shape[0], int) else 1)}
            for _ in range(runs):
                session.run(None, feed)
            return list(json.loads(Path(session.end_profiling()).read_text()))

    def op_profile(self, runs: int = PROFILED_RUNS) -> dict[str, Any] | None:
        """Each node's `*_kernel_time` per run, by the op type the session ran (after its own
        fusions) and its execution provider; the total is the profiler's `model_run`."""
        from vitedge.runtimes.op_profile import op_times

        events = self._profiled_events(runs + 1)  # the first run (warm-up) is left out below
        nodes: dict[str, tuple[str, str, list[float]]] = {}
        for e in events:
            if _is_kernel(e):
                provider = e["args"].get("provider", "").replace("ExecutionProvider", " EP")
                nodes.setdefault(e["name"], (e["args"]["op_name"], provider, []))[2].append(e["dur"] / 1000)
        whole = [e["dur"] / 1000 for e in events if e.get("name") == "model_run"][1:]
        return op_times([(k, p, ms[1:]) for k, p, ms in nodes.values()], "ONNX Runtime profiler", runs,
                        statistics.median(whole) if whole else None)

    def placement(self) -> dict[str, Any] | None:
        """The kernels ONNX Runtime ran, from its own profiler (one run of a second, profiling
        session with this one's settings): matrix products and convolutions on int8 kernels
        (QLinearMatMul, QLinearConv, MatMulInteger, ...) or on float ones. A float artifact has
        no int8 path: every compute op counts as on its (float) fast path."""
        from vitedge.runtimes.base import placement_report

        events = self._profiled_events(1)
        ops = Counter(e["args"]["op_name"] for e in events if _is_kernel(e))
        int8 = {k: v for k, v in ops.items() if k in INT8_KERNELS}
        floats = {k: v for k, v in ops.items() if k in FLOAT_KERNELS}
        if not int8:
            return placement_report("float kernels (a float artifact)", floats, {})
        return placement_report("int8 kernels", int8, floats)


def _is_kernel(event: dict[str, Any]) -> bool:
    return event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time")
