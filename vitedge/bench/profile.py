"""What an edge engineer budgets by, besides latency: memory, start-up and the first inference,
measured per artifact in a process of its own.

A fresh interpreter (multiprocessing "spawn", nothing of the parent's) imports numpy and
vitedge's device side, then records its resident memory: the baseline. Then, each phase with the
kernel's high-water mark reset first (`/proc/self/clear_refs` 5, so every peak is that phase's
own):
1. import the runtime (ONNX Runtime, OpenVINO, ...);
2. cold load: open and compile the artifact, the first time in this process (its files may sit
   in the page cache: cold for the runtime, not for the disk);
3. the first inference (runtimes allocate, pack weights and JIT on it);
4. steady state: timed runs after a warm-up, p50/p90/p99;
5. warm load: the runner closed and opened again in the same process (runtime imported, files
   cached): what a second model instance or an app restart with a runtime-side cache costs.
Peaks are reported above the baseline and the baseline itself is shown, so a number means what
the artifact and its runtime add to an app. Linux only (/proc); elsewhere the memory fields are
None and the times are still measured.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from vitedge.bench.latency import LatencyStats
from vitedge.kit_common.device_profile import (  # the kits' copy: one set of defaults, one line
    STEADY_BUDGET_S,
    STEADY_MIN_RUNS,
    STEADY_WARMUP,
    summary,
)

__all__ = ["STEADY_BUDGET_S", "STEADY_WARMUP", "DeviceProfile", "from_fields", "profile", "summary"]


@dataclass(frozen=True)
class DeviceProfile:
    baseline_mb: float | None  # resident memory of the measuring process before the runtime (numpy + vitedge)
    import_mb: float | None  # peak added by importing the runtime
    load_peak_mb: float | None  # peak while opening/compiling the artifact (cold), above the baseline
    first_peak_mb: float | None  # peak during the first inference, above the baseline
    steady_peak_mb: float | None  # peak over the steady-state runs, above the baseline
    steady_rss_mb: float | None  # resident after the steady runs, above the baseline
    import_ms: float
    load_cold_ms: float  # first open + compile in the process
    load_warm_ms: float  # second open + compile in the same process
    first_ms: float  # the first inference after the cold load
    steady: LatencyStats
    frame: str  # what one call was fed, e.g. "1x3x224x224 float32" or "1x480x640x3 uint8"
    # the runtime's model cache on the cold load: "written" (compiled, cached), "read" (loaded
    # from the cache), "not writable"; None without one (OpenVINO's --ov-model-cache)
    model_cache: str | None = None

    @property
    def peak_mb(self) -> float | None:
        """The most the artifact made the process hold above its baseline, in any phase."""
        peaks = [v for v in (self.import_mb, self.load_peak_mb, self.first_peak_mb, self.steady_peak_mb)
                 if v is not None]
        return max(peaks) if peaks else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["steady"] = self.steady.to_dict()
        d["peak_mb"] = self.peak_mb
        return d


def from_fields(fields: dict[str, Any], steady: LatencyStats) -> DeviceProfile:
    return DeviceProfile(steady=steady, **{k: fields.get(k) for k in DeviceProfile.__dataclass_fields__
                                           if k != "steady"})


def profile(contestant: Any, threads: int | None = None, batch: int = 1, budget_s: float = STEADY_BUDGET_S,
            ) -> DeviceProfile:
    """Measure one artifact (a vitedge.bench.isolated.Contestant: a bundle, a model file, or a
    factory) in a fresh process of its own: the isolated timing's worker, alone (module docstring)."""
    from vitedge.bench.isolated import time_isolated

    res = time_isolated([contestant], {batch: None}, threads, warmup=STEADY_WARMUP, min_runs=STEADY_MIN_RUNS,
                        budget_s=budget_s, profile=(contestant.name,))[batch]
    return from_fields(res.profiles[contestant.name], res.stats[contestant.name])
