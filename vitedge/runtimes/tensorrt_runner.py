"""TensorRT runner: a serialised engine run with `execute_async_v3` on device buffers.

Wraps `vitedge.trt_kit.engine.TrtEngine` (the standalone module shipped in build kits), so
vitedge and a kit on a device without vitedge run engines the same way. Latency here is host
time (copies included); GPU compute time (CUDA events, the number trtexec reports) comes from
the kit's `verify_engine.py` (`trt_kit.engine.benchmark`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vitedge.errors import InputError, MissingDependencyError
from vitedge.runtimes.base import Runner, TensorSpec
from vitedge.runtimes.registry import RuntimeSpec

# An execution context is not thread-safe: callers serialise (vitedge.load() takes a lock).
RUNTIME = RuntimeSpec(name="tensorrt", runner="vitedge.runtimes.tensorrt_runner:TensorRTRunner", module="tensorrt",
                      packages=("tensorrt", "cuda-python"), opens=(".engine", ".plan"), thread_safe=False,
                      label="TensorRT", install="pip install tensorrt cuda-python (or JetPack / an NVIDIA container)")


class TensorRTRunner(Runner):
    runtime = "tensorrt"

    def __init__(self, path: str | Path, threads: int | None = None, name: str | None = None):
        super().__init__(name)
        self.path = Path(path)
        self.engine: Any = None

    def _activate(self) -> None:
        from vitedge.trt_kit.engine import TensorRTUnavailable, TrtEngine, gpu_available

        if not self.path.is_file():
            raise InputError(f"{self.path}: no such TensorRT engine")
        try:
            why = gpu_available()
            if why:
                raise TensorRTUnavailable(why)
            self.engine = TrtEngine(self.path)
        except TensorRTUnavailable as e:
            raise MissingDependencyError(f"cannot run {self.path.name}: {e}") from None

    def _deactivate(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec(t.name, t.dtype.name, tuple(d if d >= 0 else None for d in t.shape))
                for t in self.engine.io if t.is_input]

    def outputs(self) -> list[TensorSpec]:
        return [TensorSpec(t.name, t.dtype.name, tuple(d if d >= 0 else None for d in t.shape))
                for t in self.engine.io if not t.is_input]

    def validate(self, feed: dict[str, np.ndarray]) -> None:
        super().validate(feed)
        for t in self.engine.io:  # batch within the optimisation profile
            if t.is_input and t.profile:
                lo, hi = t.profile[0][0], t.profile[2][0]
                b = feed[t.name].shape[0]
                if not lo <= b <= hi:
                    raise InputError(f"{self.name}: batch {b} is outside the engine's optimisation profile "
                                     f"{lo}..{hi}; rebuild with --min-batch/--max-batch")

    def max_batch(self) -> int | None:
        profiles = [t.profile[2][0] for t in self.engine.io if t.is_input and t.profile]
        return min(profiles) if profiles else super().max_batch()

    def info(self) -> dict[str, Any]:
        from vitedge.trt_kit.engine import gpu_name, tensorrt_version

        return {"runtime": self.runtime, "version": tensorrt_version(), "device": gpu_name(),
                "engine": self.path.name}

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs, _ = self.engine.infer(feed)
        return outputs
