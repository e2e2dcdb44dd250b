"""Timing honestly (after nanoGPT's bench.py): warm up, time many runs, report percentiles.

The first calls are never timed (warm-up: lazy allocation, kernel selection, caches). Several
runners are timed *interleaved* - a block of calls of each in turn, round after round - so that
thermal drift and other load hit all of them alike and ratios between them are fair.
Synchronous CPU runtimes need no explicit synchronisation, and the TensorRT runner's `infer`
synchronises its stream before returning, so these are host latencies; GPU compute time (CUDA
events) is measured by the build kit's `trt_kit.engine.benchmark`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from vitedge.kit_common.device_profile import latency_stats  # the kits' copy: one formula for both

# The timing defaults, written once (time_calls, time_isolated and BenchConfig read them): 10
# untimed calls, then rounds of BLOCK_S-second blocks until MIN_RUNS calls and the time budget
# are both spent (or MAX_RUNS), with REWARM untimed calls at the start of each block.
WARMUP, MIN_RUNS, MAX_RUNS = 10, 30, 5000
BUDGET_S, BLOCK_S, REWARM = 5.0, 0.25, 3


@dataclass(frozen=True)
class LatencyStats:
    batch: int
    runs: int
    warmup: int
    min: float  # ms per call
    p50: float
    p90: float
    p99: float
    max: float
    mean: float
    throughput: float  # images per second at the median latency

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(samples_ms: list[float] | np.ndarray, batch: int, warmup: int) -> LatencyStats:
    return LatencyStats(**latency_stats(samples_ms, batch, warmup))


def block_seconds(block_s: float, budget_s: float, contestants: int) -> float:
    """Length of one contestant's block: at least `block_s`, and about 20 rounds in the budget."""
    return max(block_s, budget_s / (contestants * 20)) if budget_s > 0 else block_s


def time_calls(
    calls: dict[str, Callable[[], Any]],
    batch: int,
    warmup: int = WARMUP,
    min_runs: int = MIN_RUNS,
    max_runs: int = MAX_RUNS,
    budget_s: float = BUDGET_S,
    block_s: float = BLOCK_S,
    rewarm: int = REWARM,
    on_round: Callable[[float], None] | None = None,
) -> dict[str, LatencyStats]:
    """Time each callable in interleaved blocks, within a total time budget.

    Each round gives every callable one block of about `block_s` seconds; the first `rewarm`
    calls of a block are not timed. Measured here: switching runtime on every call makes the
    previous runtime's still-spinning worker threads (ONNX Runtime, OpenVINO/TBB, OpenMP) steal
    the CPU from the next one for a scheduler tick (4 ms spikes on a 1 ms model), so
    contestants would time each other; blocks with a re-warm keep rounds alternating (drift
    still hits everyone alike) without that cross-talk. Every callable gets at least `min_runs`
    timed calls (even past the budget) and at most `max_runs`; `on_round(fraction)` reports
    progress in [0, 1].
    """
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    start = time.perf_counter()
    block = block_seconds(block_s, budget_s, len(names))
    rounds = 0
    while True:
        # Rotate the order each round so no callable always runs right after another.
        order = names[rounds % len(names):] + names[: rounds % len(names)]
        for name in order:
            fn = calls[name]
            for _ in range(rewarm):
                fn()
            block_end = time.perf_counter() + block
            got = samples[name]
            n0 = len(got)
            while len(got) < max_runs and (time.perf_counter() < block_end or len(got) - n0 < 3):
                t0 = time.perf_counter_ns()
                fn()
                got.append((time.perf_counter_ns() - t0) / 1e6)
        rounds += 1
        n = min(len(v) for v in samples.values())
        elapsed = time.perf_counter() - start
        if on_round:
            on_round(min(1.0, max(elapsed / budget_s if budget_s > 0 else 1.0, n / max_runs)))
        if n >= max_runs or (n >= min_runs and elapsed >= budget_s):
            break
    return {name: summarize(v, batch, warmup) for name, v in samples.items()}


def time_calls_with_progress(calls: dict[str, Callable[[], Any]], batch: int, description: str,
                             **kwargs: Any) -> dict[str, LatencyStats]:
    """`time_calls` with a progress bar on stderr (over the time budget)."""
    from vitedge.progress import make_progress

    with make_progress() as progress:
        task = progress.add_task(description, total=100)
        stats = time_calls(calls, batch, on_round=lambda f: progress.update(task, completed=100 * f),
                           **kwargs)
        progress.update(task, completed=100)
    return stats
