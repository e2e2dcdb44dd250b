"""Throughput with all cores (several cameras on one box): images/s at the best of a small
batch x parallel-streams sweep, each runtime parallelised its own way.

A point of the sweep is (batch, streams): `streams` Python threads each call infer back to back
on a batch of `batch` for the measuring time, and the images they finished per second are
counted (every runtime here releases the GIL while it computes). How the streams share the cores
is the runtime's own mechanism, declared in its runtime file (`RuntimeSpec.parallel`):
- by default, one runner per stream with cores // streams threads each (ONNX Runtime sessions,
  LiteRT interpreters, ExecuTorch programs);
- OpenVINO: one compiled model with the THROUGHPUT hint and NUM_STREAMS = streams, one infer
  request per thread (its CPU plugin pins each stream to its share of the cores).
The report names the setting that won and shows every point, so "throughput" is never a number
without its batch and parallelism.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from vitedge.kit_common.device_profile import (  # the kits' loop and defaults: one for both
    SWEEP_BATCHES,
    SWEEP_MEASURE_S,
    SWEEP_WARMUP_CALLS,
    run_streams,
)
from vitedge.runtimes.base import Runner, default_threads


@dataclass(frozen=True)
class ThroughputPoint:
    batch: int
    streams: int
    instances: int  # runners opened (1 when the runtime shares one across streams)
    threads_each: int  # runtime threads per runner
    images_per_s: float
    calls: int


@dataclass
class ThroughputResult:
    best: ThroughputPoint
    points: list[ThroughputPoint] = field(default_factory=list)
    cores: int = 1
    frame: str = ""

    @property
    def setting(self) -> str:
        b = self.best
        how = (f"{b.instances} runner(s) x {b.threads_each} thread(s)" if b.instances > 1
               else f"one runner, {b.threads_each} thread(s)")
        return f"batch {b.batch}, {b.streams} parallel stream(s), {how}"

    def to_dict(self) -> dict[str, Any]:
        return {"images_per_s": self.best.images_per_s, "setting": self.setting, "cores": self.cores,
                "frame": self.frame, "best": asdict(self.best), "points": [asdict(p) for p in self.points]}


def stream_counts(cores: int) -> list[int]:
    """1, 2, 4, ... up to the core count (and the core count itself)."""
    out, s = [], 1
    while s < cores:
        out.append(s)
        s *= 2
    return [*out, cores]


def _feed(runner: Runner, batch: int) -> dict[str, np.ndarray]:
    from vitedge.runtimes.open import seeded_input

    return {runner.inputs()[0].name: seeded_input(runner, batch)}


def _point(open_runner: Any, runtime: Any, batch: int, streams: int, cores: int, measure_s: float) -> ThroughputPoint:
    instances, threads_each, options = runtime.parallel_plan(streams, cores)
    runners = [open_runner(threads_each, options) for _ in range(instances)]
    try:
        for r in runners:
            r.activate()
        feed = _feed(runners[0], batch)
        for r in runners:
            for _ in range(SWEEP_WARMUP_CALLS):
                r.infer(feed)
        try:
            done, elapsed = run_streams([partial(runners[i % instances].infer, feed) for i in range(streams)],
                                        measure_s)
        except Exception as e:  # one line naming the setting; the sweep's other points were fine or never ran
            from vitedge.errors import ExportError

            first = str(e).splitlines()[0][:200] if str(e) else ""
            raise ExportError(f"throughput at batch {batch}, {streams} parallel stream(s) failed: "
                              f"{type(e).__name__}: {first}; run `vitedge bench` without --throughput "
                              "for the latency alone") from e
        return ThroughputPoint(batch, streams, instances, threads_each, round(done * batch / elapsed, 1), done)
    finally:
        for r in runners:
            r.deactivate()


def sweep(source: str | Path, cores: int | None = None, batches: tuple[int, ...] = SWEEP_BATCHES,
          measure_s: float = SWEEP_MEASURE_S, on_point: Any = None) -> ThroughputResult:
    """The sweep on a bundle (or model file): every (batch, streams) point the artifact takes."""
    from vitedge.bundle.manifest import MANIFEST, read_manifest
    from vitedge.runtimes.open import runner_for
    from vitedge.runtimes.registry import get_runtime, runtime_for_file

    path = Path(source)
    if path.is_dir() and (path / MANIFEST).is_file():
        manifest = read_manifest(path)
        runtime, model, base_options = get_runtime(manifest.runtime), manifest.main_file, manifest.runner_options
    else:
        runtime, model, base_options = runtime_for_file(path), path, {}
    cores = cores or default_threads()

    def open_one(threads: int, options: dict[str, Any]) -> Runner:
        return runner_for(runtime.name, model, threads, {**base_options, **options})

    probe = open_one(1, {})
    with probe:
        fixed = probe.inputs()[0].shape[0]
        frame = " ".join(f"{'x'.join(map(str, v.shape[1:]))} {v.dtype}" for v in _feed(probe, 1).values())
    sizes = [fixed] if isinstance(fixed, int) else list(batches)
    points = []
    for b in sizes:
        for s in stream_counts(cores):
            points.append(_point(open_one, runtime, b, s, cores, measure_s))
            if on_point:
                on_point(points[-1])
    best = max(points, key=lambda p: p.images_per_s)
    return ThroughputResult(best, points, cores, frame)
