"""TensorRT engine build and execution, for TensorRT 10.12+ and 11.x (standalone module).

This file needs only `tensorrt`, `numpy` and (to run engines) `cuda-python`; it imports nothing
from vitedge, so the same file is copied into every TensorRT build kit and runs on a Jetson or
GPU box where vitedge is not installed. vitedge's TensorRT runner imports it too.

Both TensorRT lines are targeted with one code path:
- networks are strongly typed (TensorRT 11 always is; on 10.x the STRONGLY_TYPED flag asks for
  it), so precision comes from the ONNX graph itself: FP16 tensors/casts for FP16, explicit
  symmetric Q/DQ for INT8. No precision builder flags and no INT8 calibrators (removed in 11).
- parser errors are reported per node (code, node index and name, operator, description);
- dynamic batch through one optimisation profile (min/opt/max), workspace limit, builder
  optimisation level, a timing cache file reused across builds, and optional hardware- and
  version-compatibility.
Device memory and streams use cuda-python (`cuda.bindings.runtime`), no pycuda; GPU time is
measured with CUDA events around `execute_async_v3`, as trtexec reports "GPU Compute Time".
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

if TYPE_CHECKING:  # Buffer only matters to mypy (IHostMemory lacks __buffer__ in the 11.x stubs)
    import tensorrt as trt
    from typing_extensions import Buffer


class TensorRTUnavailable(RuntimeError):
    """tensorrt (or a CUDA device) is not available on this machine."""


def require_tensorrt() -> None:
    """Raise TensorRTUnavailable unless real TensorRT bindings import here.

    Functions below then `import tensorrt as trt` themselves, so mypy checks every call
    against the TensorRT stubs (10.13 and 11.4 in CI)."""
    hint = "on the GPU machine: pip install tensorrt cuda-python (or use NVIDIA's JetPack / container)"
    try:
        import tensorrt as trt
    except ImportError as e:
        raise TensorRTUnavailable(f"TensorRT is not installed ({e}); {hint}") from None
    if not hasattr(trt, "Builder"):  # e.g. only `tensorrt-stubs` (.pyi files) is installed
        raise TensorRTUnavailable(f"the importable `tensorrt` has no TensorRT bindings (stubs only?); {hint}")


def import_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError as e:
        raise TensorRTUnavailable(f"cuda-python is not installed ({e}); pip install 'cuda-python>=12.6'") from None
    return cudart


def tensorrt_version() -> str:
    require_tensorrt()
    import tensorrt as trt

    return str(getattr(trt, "__version__", "unknown"))


def gpu_available() -> str | None:
    """None when a CUDA device is usable, else the reason it is not."""
    try:
        cudart = import_cudart()
    except TensorRTUnavailable as e:
        return str(e)
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess or count == 0:
        return f"no CUDA device ({cudart.cudaGetErrorName(err)[1].decode() if err else 'count 0'})"
    return None


# -- build -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildConfig:
    input_name: str = "input"
    input_shape: tuple[int, ...] = (3, 224, 224)  # without the batch dimension
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 8
    workspace_mb: int = 2048
    optimization_level: int = 3  # 0-5, TensorRT's default is 3
    timing_cache: str | None = "timing.cache"
    version_compatible: bool = False
    hardware_compatible: bool = False  # Ampere+ compatible engine
    tf32: bool = True  # TensorRT's default; off for fp32 engines that must match fp32 references

    def validate(self) -> None:
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(f"need 1 <= min-batch <= opt-batch <= max-batch, got "
                             f"{self.min_batch}/{self.opt_batch}/{self.max_batch}")
        if not 0 <= self.optimization_level <= 5:
            raise ValueError("builder optimisation level must be 0-5")

    def trtexec_command(self, onnx_file: str, engine_file: str) -> str:
        shape = "x".join(str(d) for d in self.input_shape)
        parts = [
            "trtexec", f"--onnx={onnx_file}", f"--saveEngine={engine_file}", "--stronglyTyped",
            f"--minShapes={self.input_name}:{self.min_batch}x{shape}",
            f"--optShapes={self.input_name}:{self.opt_batch}x{shape}",
            f"--maxShapes={self.input_name}:{self.max_batch}x{shape}",
            f"--memPoolSize=workspace:{self.workspace_mb}M",
            f"--builderOptimizationLevel={self.optimization_level}",
        ]
        if self.timing_cache:
            parts.append(f"--timingCacheFile={self.timing_cache}")
        if self.hardware_compatible:
            parts.append("--hardwareCompatibilityLevel=ampere+")
        if self.version_compatible:
            parts.append("--versionCompatible")
        if not self.tf32:
            parts.append("--noTF32")
        return " ".join(parts)


class ParserFailure(RuntimeError):
    def __init__(self, errors: list[str]):
        super().__init__("TensorRT's ONNX parser rejected the model:\n  " + "\n  ".join(errors))
        self.errors = errors


def _dims(shape: Sequence[int]) -> trt.Dims:
    import tensorrt as trt

    return trt.Dims(list(shape))  # the stubs reject tuples where Dims is expected


def _host_bytes(mem: trt.IHostMemory) -> bytes:
    return bytes(cast("Buffer", mem))


def build_engine(onnx_path: str | Path, engine_path: str | Path, cfg: BuildConfig) -> dict[str, Any]:
    """Parse `onnx_path` strongly typed and write a serialised engine. Returns build facts."""
    require_tensorrt()
    import tensorrt as trt

    cfg.validate()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # Strongly typed: ignored (always on) in TensorRT 11, required for Q/DQ + FP16 graphs on 10.x.
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    ok: bool = parser.parse(onnx_path.read_bytes(), str(onnx_path))  # path: external weights
    if not ok:
        messages = []
        for i in range(parser.num_errors):
            e: trt.ParserError = parser.get_error(i)
            messages.append(f"[{e.code()}] node #{e.node()} {e.node_name()!r} ({e.node_operator()}): {e.desc()}")
        raise ParserFailure(messages)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, cfg.workspace_mb << 20)
    config.builder_optimization_level = cfg.optimization_level
    if cfg.hardware_compatible:
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if cfg.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if not cfg.tf32:
        config.clear_flag(trt.BuilderFlag.TF32)
    cache_path = engine_path.parent / cfg.timing_cache if cfg.timing_cache else None
    cache = None
    if cache_path is not None:
        cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.exists() else b"")
        cache_ok: bool = config.set_timing_cache(cache, False)
        if not cache_ok:
            cache = config.create_timing_cache(b"")  # stale cache from another GPU/version
            config.set_timing_cache(cache, True)

    profile = builder.create_optimization_profile()
    profile.set_shape(cfg.input_name, _dims((cfg.min_batch, *cfg.input_shape)),
                      _dims((cfg.opt_batch, *cfg.input_shape)), _dims((cfg.max_batch, *cfg.input_shape)))
    config.add_optimization_profile(profile)
    network.name = f"vitedge:{onnx_path.name}"[:128]  # the one string an engine carries back

    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:  # typed as IHostMemory, but a failed build returns None
        raise RuntimeError("TensorRT engine build failed (see the TensorRT log above)")
    seconds = time.perf_counter() - t0
    engine_path.write_bytes(_host_bytes(serialized))
    if cache is not None and cache_path is not None:
        cache_path.write_bytes(_host_bytes(cache.serialize()))
    facts = {"tensorrt": tensorrt_version(), "build_seconds": round(seconds, 1), "config": asdict(cfg),
             "engine_bytes": engine_path.stat().st_size, "gpu": gpu_name()}
    engine_path.with_suffix(".json").write_text(json.dumps(facts, indent=2) + "\n")  # sidecar metadata
    return facts


def gpu_name() -> str:
    try:
        cudart = import_cudart()
        err, props = cudart.cudaGetDeviceProperties(0)
        if err == cudart.cudaError_t.cudaSuccess:
            name = props.name
            return name.decode(errors="replace").rstrip("\x00") if isinstance(name, bytes) else str(name)
    except Exception:  # never fail a build over a cosmetic field
        pass
    return "unknown"


# -- run ---------------------------------------------------------------------------------------


def _check(cudart: Any, result: Any) -> Any:
    err, *rest = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        name = cudart.cudaGetErrorName(err)[1].decode()
        raise RuntimeError(f"CUDA error {name}: {cudart.cudaGetErrorString(err)[1].decode()}")
    return None if not rest else rest[0] if len(rest) == 1 else tuple(rest)


@dataclass
class IOTensor:
    name: str
    is_input: bool
    dtype: Any  # numpy dtype
    shape: tuple[int, ...]  # -1 for dynamic dimensions
    profile: tuple[tuple[int, ...], ...] = field(default_factory=tuple)  # (min, opt, max) for inputs


class TrtEngine:
    """A deserialised engine with one execution context, device buffers and a CUDA stream.

    `share`: use that TrtEngine's deserialised engine instead of reading the file again (see
    `fork`)."""

    def __init__(self, engine_path: str | Path, share: TrtEngine | None = None):
        require_tensorrt()
        import tensorrt as trt

        self.cudart = import_cudart()
        self.path = Path(engine_path)
        if share is not None:
            engine: trt.ICudaEngine | None = share.engine
        else:
            logger = trt.Logger(trt.Logger.WARNING)
            runtime = trt.Runtime(logger)
            engine = runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise RuntimeError(f"{self.path}: TensorRT cannot deserialise this engine (built with another "
                               f"TensorRT version or GPU? this is TensorRT {tensorrt_version()})")
        self.engine: trt.ICudaEngine = engine
        self.context: trt.IExecutionContext = engine.create_execution_context()
        self.stream = _check(self.cudart, self.cudart.cudaStreamCreate())
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)
        self.io = self._describe()

    def fork(self) -> TrtEngine:
        """A second execution context of the same engine, with its own CUDA stream and buffers.

        An execution context runs one inference at a time, so parallel streams (throughput) need
        one each; sharing the engine costs each only its activation memory, not the weights again."""
        return TrtEngine(self.path, share=self)

    def _describe(self) -> list[IOTensor]:
        import tensorrt as trt

        # Our own map: trt.nptype is untyped and raises for BF16/FP8/INT4 I/O.
        np_types: dict[trt.DataType, Any] = {
            trt.DataType.FLOAT: np.float32, trt.DataType.HALF: np.float16, trt.DataType.INT8: np.int8,
            trt.DataType.INT32: np.int32, trt.DataType.INT64: np.int64, trt.DataType.BOOL: np.bool_,
            trt.DataType.UINT8: np.uint8}
        out = []
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            d = self.engine.get_tensor_shape(name)
            shape = tuple(int(d[j]) for j in range(len(d)))
            profile: tuple[tuple[int, ...], ...] = ()
            if is_input:
                prof = self.engine.get_tensor_profile_shape(name, 0)
                profile = tuple(tuple(int(p[j]) for j in range(len(p))) for p in prof)
            out.append(IOTensor(name, is_input, np.dtype(np_types[self.engine.get_tensor_dtype(name)]),
                                shape, profile))
        return out

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _check(self.cudart, self.cudart.cudaFree(ptr))
            ptr = int(_check(self.cudart, self.cudart.cudaMalloc(nbytes)))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def infer(self, feed: dict[str, np.ndarray], time_gpu: bool = False) -> tuple[dict[str, np.ndarray], float | None]:
        """Run once; returns outputs and, with time_gpu, the GPU compute time in ms (CUDA events)."""
        cudart = self.cudart
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for t in self.io:
            if t.is_input:
                x = np.ascontiguousarray(feed[t.name], dtype=t.dtype)
                self.context.set_input_shape(t.name, x.shape)
                ptr = self._buffer(t.name, x.nbytes)
                _check(cudart, cudart.cudaMemcpyAsync(ptr, x.ctypes.data, x.nbytes, h2d, self.stream))
                self.context.set_tensor_address(t.name, ptr)
        missing: list[str] = self.context.infer_shapes()
        if missing:
            raise RuntimeError(f"input shapes not fully specified: {missing}")
        outputs: dict[str, np.ndarray] = {}
        for t in self.io:
            if not t.is_input:
                d = self.context.get_tensor_shape(t.name)
                outputs[t.name] = np.empty(tuple(int(d[j]) for j in range(len(d))), t.dtype)
                self.context.set_tensor_address(t.name, self._buffer(t.name, outputs[t.name].nbytes))
        start = end = None
        if time_gpu:
            start = _check(cudart, cudart.cudaEventCreate())
            end = _check(cudart, cudart.cudaEventCreate())
            _check(cudart, cudart.cudaEventRecord(start, self.stream))
        ok: bool = self.context.execute_async_v3(int(self.stream))
        if not ok:
            raise RuntimeError("TensorRT execute_async_v3 failed")
        if time_gpu:
            _check(cudart, cudart.cudaEventRecord(end, self.stream))
        for name, arr in outputs.items():
            _check(cudart, cudart.cudaMemcpyAsync(arr.ctypes.data, self._buffers[name][0], arr.nbytes, d2h,
                                                  self.stream))
        _check(cudart, cudart.cudaStreamSynchronize(self.stream))
        gpu_ms = None
        if time_gpu:
            gpu_ms = float(_check(cudart, cudart.cudaEventElapsedTime(start, end)))
            _check(cudart, cudart.cudaEventDestroy(start))
            _check(cudart, cudart.cudaEventDestroy(end))
        return outputs, gpu_ms

    def close(self) -> None:
        for ptr, _ in self._buffers.values():
            self.cudart.cudaFree(ptr)
        self._buffers.clear()
        if self.stream is not None:
            self.cudart.cudaStreamDestroy(self.stream)
            self.stream = None


def benchmark(engine: TrtEngine, feed: dict[str, np.ndarray], warmup: int = 20, runs: int = 200) -> dict[str, float]:
    """Host latency and GPU compute time (CUDA events) percentiles in ms, like trtexec."""
    for _ in range(warmup):
        engine.infer(feed)
    host, gpu = [], []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        _, g = engine.infer(feed, time_gpu=True)
        host.append((time.perf_counter_ns() - t0) / 1e6)
        gpu.append(g or 0.0)
    h, g_ = np.asarray(host), np.asarray(gpu)
    return {"host_p50": float(np.percentile(h, 50)), "host_p90": float(np.percentile(h, 90)),
            "host_p99": float(np.percentile(h, 99)), "gpu_p50": float(np.percentile(g_, 50)),
            "gpu_p90": float(np.percentile(g_, 90)), "gpu_p99": float(np.percentile(g_, 99)),
            "gpu_mean": float(g_.mean()), "runs": runs}
