"""Device profile and throughput for the build kits (TensorRT, Core ML): shipped beside their
verify scripts as `device_profile.py` and imported from there on the device.

Measured as vitedge measures the runtimes it runs itself (vitedge/bench/profile.py, memory.py,
throughput.py) so the fields mean the same, but with numpy and the standard library only: a kit
runs where vitedge is not installed. One file for both kits, so the two cannot drift apart.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

# The defaults of vitedge's device profile and throughput sweep, written here once: vitedge.bench
# imports them, and the kits, which run without vitedge, read them from this shipped copy.
MB = 1024.0 * 1024.0
STEADY_WARMUP = 5  # untimed runs before the steady state is timed
STEADY_BUDGET_S = 2.0  # seconds of timed steady-state runs
STEADY_MIN_RUNS = 3
SWEEP_BATCHES = (1, 4, 8)  # the throughput sweep's batches, where the artifact takes them
SWEEP_MEASURE_S = 1.5  # seconds per sweep point, after a warm-up
SWEEP_WARMUP_CALLS = 3
STREAMS = (1, 2)  # the kits' parallel streams: enough to show whether a second one pays on a device


def proc_status_mb() -> tuple[float, float] | None:
    """(VmRSS, VmHWM) of this process in MB, or None without /proc (macOS, Windows)."""
    try:
        fields = {}
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    fields[key] = int(value.split()[0]) * 1024 / MB
        return fields["VmRSS"], fields["VmHWM"]
    except (OSError, KeyError, ValueError):
        return None


def reset_peak() -> bool:
    """Reset the kernel's high-water mark to the current RSS (Linux >= 4.0; containers may forbid it)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _maxrss_mb() -> float | None:
    """The most this process has held since it started (getrusage), or None (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / MB if sys.platform == "darwin" else rss * 1024 / MB  # bytes on macOS, KiB elsewhere


def _ps_rss_mb() -> float | None:
    """Current RSS from `ps` (macOS has no /proc, and psutil is not a kit dependency)."""
    try:
        out = subprocess.run(["ps", "-o", "rss=", "-p", str(os.getpid())], capture_output=True, text=True,
                             timeout=10).stdout
        return int(out.split()[0]) * 1024 / MB  # KiB
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


class Memory:
    """This process's memory in MB above its baseline (the resident memory at construction).

    Linux: VmRSS / VmHWM, with the high-water mark reset at each phase's start, so every peak is
    that phase's own. Where that is impossible (macOS has no /proc) the peak comes from
    getrusage, which cannot be reset: each peak is then the most since the process started, and
    `method` says so."""

    def __init__(self) -> None:
        self.resettable = proc_status_mb() is not None and reset_peak()
        self.baseline = self.current()
        if self.resettable:
            self.method = ("/proc/self/status VmRSS/VmHWM, the high-water mark reset per phase: "
                           "each peak is its phase's own")
        elif _maxrss_mb() is not None:
            self.method = ("getrusage ru_maxrss: peaks since process start (it cannot be reset), so a "
                           "phase's peak includes earlier phases'; resident memory from "
                           + ("/proc" if proc_status_mb() else "ps"))
            if self.baseline is None:  # no ps either: this early, the peak so far is about the RSS
                self.baseline = _maxrss_mb()
                self.method += " (unavailable: baseline is the peak at start-up)"
        else:
            self.baseline = None
            self.method = "not measured (no /proc or getrusage on this system)"

    @property
    def peaks(self) -> str | None:
        """What a peak covers: "per phase", "since process start", or None (not measured)."""
        if self.baseline is None:
            return None
        return "per phase" if self.resettable else "since process start"

    @staticmethod
    def current() -> float | None:
        status = proc_status_mb()
        return status[0] if status else _ps_rss_mb()

    def start(self) -> None:
        """A new phase: the high-water mark back to the current RSS (where it can be reset)."""
        if self.resettable:
            reset_peak()

    def peak(self) -> float | None:
        if self.baseline is None:
            return None
        status = proc_status_mb() if self.resettable else None
        top = status[1] if status else _maxrss_mb()
        return None if top is None else _round(top - self.baseline)

    def rss(self) -> float | None:
        now = self.current()
        return None if now is None or self.baseline is None else _round(now - self.baseline)


def latency_stats(samples_ms: list[float] | np.ndarray, batch: int, warmup: int) -> dict[str, Any]:
    """The fields of vitedge.bench.latency.LatencyStats (ms per call; throughput at the median)."""
    s = np.asarray(samples_ms, np.float64)
    p50 = float(np.percentile(s, 50))
    return {"batch": batch, "runs": len(s), "warmup": warmup, "min": float(s.min()), "p50": p50,
            "p90": float(np.percentile(s, 90)), "p99": float(np.percentile(s, 99)), "max": float(s.max()),
            "mean": float(s.mean()), "throughput": batch * 1000.0 / p50 if p50 > 0 else float("inf")}


class Profiler:
    """vitedge's device profile, phase by phase: create it before the runtime is imported (the
    baseline), then wrap the import, the cold load, the first inference and the warm load in
    `phase`, and time the steady state with `steady`."""

    def __init__(self) -> None:
        self.memory = Memory()
        self.fields: dict[str, Any] = {"baseline_mb": _round(self.memory.baseline)}

    @contextmanager
    def phase(self, ms_key: str, mb_key: str | None = None) -> Iterator[None]:
        self.memory.start()
        t0 = time.perf_counter()
        yield
        self.fields[ms_key] = (time.perf_counter() - t0) * 1e3
        if mb_key:
            self.fields[mb_key] = self.memory.peak()

    def steady(self, call: Callable[[], Any], batch: int, budget_s: float | None = None) -> None:
        """Untimed warm-up calls, then calls timed back to back for `budget_s` (at least a few)."""
        budget_s = STEADY_BUDGET_S if budget_s is None else budget_s
        self.memory.start()
        for _ in range(STEADY_WARMUP):
            call()
        samples: list[float] = []
        end = time.perf_counter() + budget_s
        while time.perf_counter() < end or len(samples) < STEADY_MIN_RUNS:
            t0 = time.perf_counter_ns()
            call()
            samples.append((time.perf_counter_ns() - t0) / 1e6)
        self.fields["steady"] = latency_stats(samples, batch, STEADY_WARMUP)
        self.fields["steady_peak_mb"] = self.memory.peak()
        self.fields["steady_rss_mb"] = self.memory.rss()

    def result(self, frame: str, **extra: Any) -> dict[str, Any]:
        """The keys of vitedge's DeviceProfile.to_dict(), then what only this kit knows."""
        f = self.fields
        peaks = [f.get(k) for k in ("import_mb", "load_peak_mb", "first_peak_mb", "steady_peak_mb")]
        known = [v for v in peaks if v is not None]
        keys = ("baseline_mb", "import_mb", "load_peak_mb", "first_peak_mb", "steady_peak_mb", "steady_rss_mb",
                "import_ms", "load_cold_ms", "load_warm_ms", "first_ms", "steady")
        return {**{k: f.get(k) for k in keys}, "frame": frame, "model_cache": None,
                "peak_mb": max(known) if known else None, "memory_method": self.memory.method,
                "memory_peaks": self.memory.peaks, **extra}


def summary(p: dict[str, Any]) -> str:
    """One line of a device profile's dict (report.json's device_profile; vitedge.bench.profile
    re-exports it), for tables and report.md."""
    def mb(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f} MB"

    base = "" if p.get("baseline_mb") is None else f" (+{p['baseline_mb']:.0f} MB baseline)"
    cache = f" (model cache {p['model_cache']})" if p.get("model_cache") else ""
    return (f"peak {mb(p.get('peak_mb'))}{base}; load {p['load_cold_ms']:.0f} ms cold{cache} / "
            f"{p['load_warm_ms']:.0f} ms warm; first inference {p['first_ms']:.1f} ms")


def summary_line(p: dict[str, Any]) -> str:
    """The kits' line: `summary`, then the steady p50 and how far the memory peaks reach."""
    line = summary(p) + f"; steady p50 {p['steady']['p50']:.2f} ms ({p['frame']})"
    if p.get("memory_peaks") == "since process start":
        line += "; memory peaks since process start (not resettable here)"
    return line


def run_streams(calls: list[Callable[[], Any]], measure_s: float) -> tuple[int, float]:
    """Each of `calls` in a thread of its own, back to back, for `measure_s` after all are ready:
    (calls finished in the window, its seconds). Each thread makes one call of its own first
    (a runtime may keep per-thread state: OpenVINO one infer request per thread). The first
    error of any thread is raised. vitedge's own sweep (vitedge.bench.throughput) runs this too."""
    n = len(calls)
    counts = [0] * n
    errors: list[BaseException] = []
    start = threading.Barrier(n + 1)
    stop = threading.Event()

    def loop(i: int) -> None:
        try:
            calls[i]()
            start.wait()
            while not stop.is_set():
                calls[i]()
                counts[i] += 1
        except BaseException as e:  # raised below, with the setting that failed
            errors.append(e)
            start.abort()

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    try:
        start.wait(timeout=120)  # a stream that never arrives must not hang the sweep
        t0 = time.perf_counter()
        time.sleep(measure_s)
    except threading.BrokenBarrierError:
        t0 = time.perf_counter()
    stop.set()
    done = sum(counts)  # calls finished in the window (one still running is not counted)
    elapsed = time.perf_counter() - t0
    for t in threads:
        t.join(timeout=60)
    if errors:
        raise errors[0]
    return done, elapsed


def _sweep_point(open_stream: Callable[[int, int], tuple[Callable[[], Any], Callable[[], None]]], batch: int,
                 streams: int, measure_s: float) -> dict[str, Any]:
    opened: list[tuple[Callable[[], Any], Callable[[], None]]] = []
    try:
        for i in range(streams):
            opened.append(open_stream(batch, i))
        for call, _ in opened:
            for _ in range(SWEEP_WARMUP_CALLS):
                call()
        done, elapsed = run_streams([call for call, _ in opened], measure_s)
        return {"batch": batch, "streams": streams, "images_per_s": round(done * batch / elapsed, 1),
                "calls": done, "seconds": round(elapsed, 3)}
    finally:
        for _, close in opened:
            close()


def throughput_sweep(open_stream: Callable[[int, int], tuple[Callable[[], Any], Callable[[], None]]],
                     batches: list[int], streams: tuple[int, ...] | None = None, how: str = "",
                     measure_s: float | None = None) -> dict[str, Any]:
    """Images/s at every (batch, parallel streams) point, and the best of them.

    `open_stream(batch, i)` returns `(call, close)` for stream i: `call()` runs one batch on that
    stream's own context (so streams can run at once), `close()` releases it. Each stream is a
    thread calling back to back for `measure_s` after a warm-up. A point that fails (out of
    memory at a large batch, say) is listed with its error and the sweep goes on."""
    streams = STREAMS if streams is None else streams
    measure_s = SWEEP_MEASURE_S if measure_s is None else measure_s
    points = []
    for b in batches:
        for s in streams:
            try:
                points.append(_sweep_point(open_stream, b, s, measure_s))
            except Exception as e:
                first = str(e).splitlines()[0][:200] if str(e) else ""
                points.append({"batch": b, "streams": s, "error": f"{type(e).__name__}: {first}"})
    ok = [p for p in points if "images_per_s" in p]
    best = max(ok, key=lambda p: p["images_per_s"]) if ok else None
    setting = (f"batch {best['batch']}, {best['streams']} parallel stream(s), {how}" if best
               else "none: every point failed")
    return {"images_per_s": best["images_per_s"] if best else None, "setting": setting, "best": best,
            "points": points}
