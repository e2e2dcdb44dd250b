"""Timing contestants side by side without letting them time each other.

`time_calls` interleaves runners inside one process. That leaves two kinds of cross-talk: the
runtimes share one process (PyTorch's OpenMP pool, ONNX Runtime's and OpenVINO's thread pools,
one allocator, CPU pinning decisions made per process), and a runtime's worker threads keep
spinning for a while after its last call, on the cores the next contestant needs. Issue 14
measured ConvNeXt-T ov-int8 at 30.0 ms next to torch in one process against 22.8 ms alone.

Here every contestant runs in its own process, and rounds still alternate between them (so drift
and background load hit everyone alike). Exactly one process works at a time: the others wait
on a pipe, and a block only starts once every other contestant's process has gone quiet, i.e.
its threads (all of them, read from /proc/<pid>/task/*/schedstat) used almost no CPU over the
last few milliseconds. The CPU time the other processes still used during each block is
recorded (`cross_talk`), so a report can show the isolation held instead of asserting it.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vitedge.bench.latency import (
    BLOCK_S,
    BUDGET_S,
    MAX_RUNS,
    MIN_RUNS,
    REWARM,
    WARMUP,
    LatencyStats,
    block_seconds,
    summarize,
)

QUIET_WINDOW_S = 0.005  # quiet: < QUIET_SHARE of one core in each of QUIET_WINDOWS windows in a row
QUIET_SHARE = 0.02
QUIET_WINDOWS = 2  # runtimes' pools spin in bursts: one quiet window can fall between two
QUIET_TIMEOUT_S = 2.0  # give up waiting (and record it) after this long


@dataclass(frozen=True)
class Contestant:
    """What a worker process opens: a bundle dir / model file (`open_runner`), or a vitedge
    checkpoint timed as the PyTorch reference (`torch=True`)."""

    name: str
    path: Path
    torch: bool = False
    # "module:function" called in the worker as function(path) -> a Runner-like object (inputs(),
    # infer(), activate(), deactivate()); for contestants that are built, not opened (benchmarks'
    # peers: torch.compile, a runtime with its own defaults). The module must be importable there.
    factory: str = ""
    # A bare model file opened with its runtime's options (an artifact before its bundle is
    # complete: e.g. OpenVINO's pinned inference precision), instead of by its suffix.
    runtime: str = ""
    runner_options: dict[str, Any] = field(default_factory=dict)
    threads: int | None = None  # its own thread count instead of time_isolated's (auto's thread choice)


@dataclass
class IsolatedResult:
    stats: dict[str, LatencyStats]
    # per contestant: CPU seconds the *other* contestants' processes used during its blocks, and
    # the wall seconds of those blocks (cross-talk share = cpu / wall)
    cross_talk: dict[str, dict[str, float]] = field(default_factory=dict)
    not_quiet: int = 0  # blocks that started after QUIET_TIMEOUT_S without the others going quiet
    pids: dict[str, int] = field(default_factory=dict)
    # per contestant: its first output for `time_isolated(collect=...)`, one image at a time
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    # per contestant asked for: its device profile fields (vitedge.bench.profile.DeviceProfile)
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)

    def worst_cross_talk(self) -> float:
        shares = [c["other_cpu_s"] / c["wall_s"] for c in self.cross_talk.values() if c["wall_s"] > 0]
        return max(shares, default=0.0)


def process_cpu_ns(pid: int) -> int | None:
    """CPU time of every thread of `pid` in ns (Linux schedstat), None where unavailable."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (FileNotFoundError, ProcessLookupError):
                continue  # a thread that just exited
    except (FileNotFoundError, PermissionError):
        return None
    return total


def _cpu(pids: list[int]) -> int | None:
    vals = [process_cpu_ns(p) for p in pids]
    return None if any(v is None for v in vals) else sum(v for v in vals if v is not None)


def wait_quiet(pids: list[int], window_s: float = QUIET_WINDOW_S, share: float = QUIET_SHARE,
               timeout_s: float = QUIET_TIMEOUT_S) -> bool:
    """Block until `pids` together used < `share` of one core over `window_s`. False on timeout
    (or, without /proc, after one window: nothing to read, a short pause is all one can do)."""
    deadline = time.perf_counter() + timeout_s
    before, quiet_windows = _cpu(pids), 0
    while True:
        time.sleep(window_s)
        after = _cpu(pids)
        if before is None or after is None:
            return False
        quiet_windows = quiet_windows + 1 if after - before < share * window_s * 1e9 else 0
        if quiet_windows >= QUIET_WINDOWS:
            return True
        if time.perf_counter() > deadline:
            return False
        before = after


# -- the worker ---------------------------------------------------------------------------------------

def _open(c: Contestant, threads: int | None) -> Any:
    if c.factory:
        import importlib

        module, _, fn = c.factory.partition(":")
        return getattr(importlib.import_module(module), fn)(c.path, threads)
    if c.torch:
        from vitedge.models.resolve import load_model
        from vitedge.runtimes.torch_runner import TorchRunner

        loaded = load_model(str(c.path))
        h, w = loaded.card.preprocess.input_size
        return TorchRunner(loaded.module, (3, h, w), threads=threads)
    from vitedge.runtimes.open import open_runner, runner_for

    if c.runtime:
        return runner_for(c.runtime, c.path, threads, c.runner_options)

    return open_runner(c.path, threads)


def _worker(conn: Any, contestant: Contestant, threads: int | None) -> None:
    """Open the runner, then serve ("input", x, warmup), ("block", seconds, rewarm, min_calls,
    max_calls), ("outputs", x) and ("close",) until told to stop; every reply is ("ok", payload)
    or ("error", text)."""
    from vitedge.quiet import native_stderr

    # Native libraries write banners straight to fd 2 when a runtime opens or first runs
    # (XNNPACK's cpuinfo probing, oneDNN): held for the worker's life; errors reach the
    # coordinator through the pipe.
    with native_stderr():
        _serve(conn, contestant, threads)


def _serve(conn: Any, contestant: Contestant, threads: int | None) -> None:
    from vitedge.bench.memory import Phases, import_runtime
    from vitedge.quiet import quiet
    from vitedge.runtimes.open import seeded_input

    runner = None
    # The device profile (vitedge.bench.profile) of this fresh process, phase by phase, for free
    # beside the timing: baseline, runtime import, cold load, first inference, steady state.
    phases = Phases()
    prof: dict[str, Any] = {"baseline_mb": phases.baseline_mb}
    try:
        with quiet():
            phases.start()
            t0 = time.perf_counter()
            import_runtime(contestant)
            prof.update(import_ms=(time.perf_counter() - t0) * 1e3, import_mb=phases.peak())
            phases.start()
            t0 = time.perf_counter()
            runner = _open(contestant, threads)
            runner.activate()
            prof.update(load_cold_ms=(time.perf_counter() - t0) * 1e3, load_peak_mb=phases.peak(),
                        model_cache=getattr(runner, "cache_state", None))
        conn.send(("ok", None))
        feed: dict[str, np.ndarray] = {}

        def infer(f: dict[str, np.ndarray]) -> Any:
            if "first_ms" in prof:
                return runner.infer(f)
            phases.start()
            t0 = time.perf_counter()
            out = runner.infer(f)
            prof.update(first_ms=(time.perf_counter() - t0) * 1e3, first_peak_mb=phases.peak(),
                        frame=" ".join(f"{'x'.join(map(str, v.shape))} {v.dtype}" for v in f.values()))
            phases.start()  # from here on: the steady state's peak
            return out

        while True:
            msg = conn.recv()
            if msg[0] == "close":
                break
            if msg[0] == "input":
                x = msg[1] if msg[1] is not None else seeded_input(runner, msg[3])
                feed = {runner.inputs()[0].name: _feed_for(runner, x)}
                for _ in range(msg[2]):
                    infer(feed)
                conn.send(("ok", None))
            elif msg[0] == "outputs":  # one image at a time: static-batch-1 contestants take it too
                name = runner.inputs()[0].name
                conn.send(("ok", np.concatenate([_first_output(infer({name: msg[1][i:i + 1]}))
                                                 for i in range(len(msg[1]))])))
            elif msg[0] == "block":
                _, seconds, rewarm, min_calls, max_calls = msg
                for _ in range(rewarm):
                    infer(feed)
                got: list[float] = []
                end = time.perf_counter() + seconds
                while len(got) < max_calls and (time.perf_counter() < end or len(got) < min_calls):
                    t0 = time.perf_counter_ns()
                    runner.infer(feed)
                    got.append((time.perf_counter_ns() - t0) / 1e6)
                conn.send(("ok", got))
            elif msg[0] == "profile":  # after the timing: the steady numbers, then a warm reload
                prof.update(steady_peak_mb=phases.peak(), steady_rss_mb=phases.rss())
                runner.deactivate()
                runner = None
                with quiet():
                    t0 = time.perf_counter()
                    runner = _open(contestant, threads)
                    runner.activate()
                    prof["load_warm_ms"] = (time.perf_counter() - t0) * 1e3
                conn.send(("ok", prof))
    except Exception as e:  # reported to the coordinator, which raises it with the contestant's name
        conn.send(("error", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"))
    finally:
        if runner is not None:
            runner.deactivate()
        conn.close()


def _feed_for(runner: Any, x: np.ndarray) -> np.ndarray:
    """A vitedge Runner that takes pixels gets its own kind of input (runtimes.open.timing_feed);
    a benchmark's factory object is fed `x` as it is."""
    from vitedge.runtimes.base import Runner
    from vitedge.runtimes.open import timing_feed

    return timing_feed(runner, x) if isinstance(runner, Runner) else x


def _first_output(out: Any) -> np.ndarray:
    """The first output of a vitedge Runner ({name: array}) or of a benchmark's callable (an
    OpenVINO result, ONNX Runtime's list, a torch tensor)."""
    if hasattr(out, "keys"):  # a mapping (not `values`: a torch.Tensor has a sparse .values())
        out = next(iter(out.values()))
    elif isinstance(out, (list, tuple)):
        out = out[0]
    if hasattr(out, "detach"):
        out = out.detach().numpy()
    return np.asarray(out, dtype=np.float32)


class _Worker:
    def __init__(self, ctx: Any, contestant: Contestant, threads: int | None):
        self.name = contestant.name
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, contestant, threads), daemon=True,
                                name=f"vitedge-timing-{contestant.name}")
        self.proc.start()
        child.close()

    def call(self, *msg: Any) -> Any:
        if msg:
            self.conn.send(msg)
        status, payload = self.conn.recv()
        if status != "ok":
            from vitedge.errors import VitedgeError

            raise VitedgeError(f"timing {self.name} in its own process failed: {payload}")
        return payload

    def close(self) -> None:
        try:
            self.conn.send(("close",))
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.kill()


def time_isolated(
    contestants: list[Contestant],
    inputs: dict[int, np.ndarray | None],
    threads: int | None = None,
    warmup: int = WARMUP,
    min_runs: int = MIN_RUNS,
    max_runs: int = MAX_RUNS,
    budget_s: float = BUDGET_S,
    block_s: float = BLOCK_S,
    rewarm: int = REWARM,
    on_round: Callable[[float], None] | None = None,
    collect: np.ndarray | None = None,
    profile: tuple[str, ...] = (),
) -> dict[int, IsolatedResult]:
    """Time every contestant at every batch size in `inputs` ({batch: (B, C, H, W) array}), each
    in its own process, interleaved in blocks, one process working at a time (module docstring).
    Same block/warm-up/budget rules as `vitedge.bench.latency.time_calls`, per batch size.
    `collect`: images every contestant also runs (before timing), so that what was timed can be
    checked for accuracy too; their first outputs land in each result's `outputs`.
    An input of None: each contestant runs a seeded input of its own spec. `profile`: names of
    contestants whose device profile (vitedge.bench.profile) lands in each result's `profiles`."""
    ctx = mp.get_context("spawn")  # fork after torch/OpenMP initialised is not safe
    workers = [_Worker(ctx, c, c.threads or threads) for c in contestants]
    results: dict[int, IsolatedResult] = {}
    try:
        for w in workers:
            w.call()  # opened
        pids = {w.name: w.proc.pid for w in workers if w.proc.pid is not None}
        outputs = {w.name: w.call("outputs", collect) for w in workers} if collect is not None else {}
        for bi, (batch, x) in enumerate(inputs.items()):
            for w in workers:
                w.call("input", x, warmup, batch)
            samples: dict[str, list[float]] = {w.name: [] for w in workers}
            cross = {w.name: {"other_cpu_s": 0.0, "wall_s": 0.0} for w in workers}
            not_quiet = 0
            start, rounds = time.perf_counter(), 0
            block = block_seconds(block_s, budget_s, len(workers))
            while True:
                order = workers[rounds % len(workers):] + workers[: rounds % len(workers)]
                for w in order:
                    others = [p for n, p in pids.items() if n != w.name]
                    if not wait_quiet(others):
                        not_quiet += 1
                    c0, t0 = _cpu(others), time.perf_counter()
                    got = w.call("block", block, rewarm, 3, max_runs - len(samples[w.name]))
                    c1, t1 = _cpu(others), time.perf_counter()
                    samples[w.name] += got
                    if c0 is not None and c1 is not None:
                        cross[w.name]["other_cpu_s"] += (c1 - c0) / 1e9
                        cross[w.name]["wall_s"] += t1 - t0
                rounds += 1
                n = min(len(v) for v in samples.values())
                elapsed = time.perf_counter() - start
                if on_round:
                    done = min(1.0, elapsed / budget_s if budget_s > 0 else 1.0)
                    on_round((bi + done) / len(inputs))
                if n >= max_runs or (n >= min_runs and elapsed >= budget_s):
                    break
            results[batch] = IsolatedResult(
                {name: summarize(v, batch, warmup) for name, v in samples.items()}, cross, not_quiet, dict(pids),
                outputs)
        profiled = {w.name: w.call("profile") for w in workers if w.name in profile}
        for r in results.values():
            r.profiles = profiled
    finally:
        for w in workers:
            w.close()
    return results
