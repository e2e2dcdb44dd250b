"""The device profile both build kits ship (vitedge/kit_common/device_profile.py: numpy + the
standard library, run on a GPU box or a Mac where vitedge is not installed): the same fields,
measured the same way, as vitedge's own (vitedge.bench.profile, .throughput). The runtimes it
measures there cannot exist here, so the phases and streams are driven by stand-ins, named as
such; the memory reader runs for real."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from vitedge.kit_common import device_profile

KIT_DIR = Path(device_profile.__file__).parent


@pytest.fixture
def kit():
    return device_profile


def _in_fresh_process(kit_dir: Path, script: str, module: str = "device_profile") -> dict:
    """Run `script` in a new interpreter with the kit module imported as `v`: a baseline of numpy
    and the kit only, as on the device (the test process's own history would blur peaks)."""
    code = f"import json, sys\nsys.path.insert(0, {str(kit_dir)!r})\nimport numpy as np\nimport {module} as v\n"
    proc = subprocess.run([sys.executable, "-c", code + script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_kit_memory_phases_see_a_known_allocation_per_phase():
    r = _in_fresh_process(KIT_DIR, """
m = v.Memory()
m.start()
a = np.ones(200 * 2**20 // 8)  # 200 MB, written: resident
big, held = m.peak(), m.rss()
del a
freed = m.rss()
m.start()  # a new phase: the high-water mark starts again from here
print(json.dumps({"baseline": m.baseline, "method": m.method, "peaks": m.peaks, "big": big, "held": held,
                  "freed": freed, "next_phase": m.peak()}))
""")
    assert r["peaks"] == "per phase" and "reset per phase" in r["method"]
    assert 10 < r["baseline"] < 2000  # numpy's interpreter, in MB
    assert r["big"] >= 180 and r["held"] >= 180
    assert r["freed"] < 100 and r["next_phase"] < 100  # the reset works: the next peak is its own


def test_kit_memory_without_proc_says_peaks_are_cumulative():
    """macOS has no /proc: getrusage's peak cannot be reset, RSS comes from ps. Simulated by
    hiding /proc from the kit's reader (in a fresh process, whose maximum is still its current)."""
    r = _in_fresh_process(KIT_DIR, """
v.proc_status_mb = lambda: None
v.reset_peak = lambda: False
m = v.Memory()
m.start()
a = np.ones(200 * 2**20 // 8)
big = m.peak()
del a
m.start()
print(json.dumps({"baseline": m.baseline, "method": m.method, "peaks": m.peaks, "big": big, "after": m.peak(),
                  "rss": m.rss()}))
""")
    assert r["peaks"] == "since process start" and "since process start" in r["method"]
    assert r["baseline"] > 10
    assert r["big"] >= 180 and r["after"] >= 180  # cumulative: the next phase cannot hide it
    assert r["rss"] is not None and r["rss"] < 100  # the current RSS (from ps) fell back


def test_kit_latency_stats_are_vitedges(kit):
    """One formula (vitedge.bench.latency.summarize is built on it): checked on known numbers."""
    from vitedge.bench.latency import LatencyStats

    s = kit.latency_stats([1.0, 2.0, 3.0, 4.0, 100.0], 2, 0)
    assert (s["p50"], s["max"], s["runs"], s["throughput"]) == (3.0, 100.0, 5, 2000.0 / 3.0)
    assert set(s) == set(LatencyStats.__dataclass_fields__)


def test_kit_profile_has_vitedges_fields_and_summary(kit):
    """The phases driven by stand-ins for a runtime that cannot exist here: a "load" that holds
    100 MB, an "inference" that sleeps 1 ms. In a fresh process (numpy + the kit only), as on the
    device: in this test process, memory freed since the baseline blurs "above the baseline"
    (measured 85.7 MB for the 100 MB under CI's load)."""
    from vitedge.bench.latency import LatencyStats
    from vitedge.bench.profile import DeviceProfile, from_fields, summary

    d = _in_fresh_process(KIT_DIR, """
import time
prof = v.Profiler()
with prof.phase("import_ms", "import_mb"):
    pass
with prof.phase("load_cold_ms", "load_peak_mb"):
    fake_model = np.ones(100 * 2**20 // 8)  # stand-in for a loaded model: 100 MB, written
with prof.phase("first_ms", "first_peak_mb"):
    time.sleep(0.001)
prof.steady(lambda: time.sleep(0.001), batch=1, budget_s=0.05)
with prof.phase("load_warm_ms"):
    pass
print(json.dumps(prof.result("1x3x224x224 float32", gpu_memory={"load_mb": None})))
""")
    assert set(DeviceProfile.__dataclass_fields__) | {"peak_mb"} <= set(d)
    assert set(d["steady"]) == set(LatencyStats.__dataclass_fields__) and d["steady"]["runs"] >= 3
    assert min(d["import_ms"], d["load_cold_ms"], d["first_ms"], d["load_warm_ms"]) >= 0
    assert d["first_ms"] >= 1.0 and d["frame"] == "1x3x224x224 float32" and d["gpu_memory"] == {"load_mb": None}
    if Path("/proc/self/clear_refs").exists():  # Linux: each phase's own peak (elsewhere: since start)
        assert d["memory_peaks"] == "per phase"
        assert d["load_peak_mb"] >= 90 and d["steady_rss_mb"] >= 90
    assert d["peak_mb"] == max(d[k] for k in ("import_mb", "load_peak_mb", "first_peak_mb", "steady_peak_mb"))
    # vitedge reads it as its own: the dataclass takes it and the kit's line starts with vitedge's
    p = from_fields(d, LatencyStats(**d["steady"]))
    assert p.peak_mb == d["peak_mb"]
    assert kit.summary_line(d).startswith(summary(d)) and "steady p50" in kit.summary_line(d)


def _streams(log: dict, fail: tuple[int, int] | None = None, raise_after: dict | None = None):
    lock = threading.Lock()

    def open_stream(batch, i):
        if fail == (batch, i):
            raise RuntimeError("out of memory (stand-in)")
        log["opened"].append((batch, i))
        calls = [0]

        def fake_predict():
            """Stand-in for an engine that cannot exist here: 1 ms per batch, whatever its size."""
            with lock:
                log["active"] += 1
                log["most"] = max(log["most"], log["active"])
            try:
                calls[0] += 1
                if raise_after and batch in raise_after and calls[0] > raise_after[batch]:
                    raise ValueError("stand-in failure")
                time.sleep(0.001)
            finally:
                with lock:
                    log["active"] -= 1

        return fake_predict, lambda: log["closed"].append((batch, i))

    return open_stream


def test_kit_throughput_sweep_structure(kit):
    log = {"opened": [], "closed": [], "active": 0, "most": 0}
    r = kit.throughput_sweep(_streams(log), [1, 4, 8], streams=(1, 2), how="fake streams", measure_s=0.1)
    points = r["points"]
    assert [(p["batch"], p["streams"]) for p in points] == [(b, s) for b in (1, 4, 8) for s in (1, 2)]
    for p in points:
        assert p["calls"] > 0 and p["images_per_s"] == pytest.approx(p["calls"] * p["batch"] / p["seconds"], rel=0.02)
    best = max(points, key=lambda p: p["images_per_s"])
    assert r["best"] == best and r["images_per_s"] == best["images_per_s"]
    assert r["setting"] == f"batch {best['batch']}, {best['streams']} parallel stream(s), fake streams"
    assert len(log["opened"]) == 9 and sorted(log["opened"]) == sorted(log["closed"])  # 3 x (1 + 2), all closed
    assert log["most"] == 2  # two streams were really in flight at once


def test_kit_throughput_sweep_lists_failed_points(kit):
    log = {"opened": [], "closed": [], "active": 0, "most": 0}
    r = kit.throughput_sweep(_streams(log, fail=(8, 1), raise_after={4: 10}), [1, 4, 8], streams=(1, 2),
                             how="fake", measure_s=0.05)
    by = {(p["batch"], p["streams"]): p for p in r["points"]}
    assert by[(8, 2)]["error"] == "RuntimeError: out of memory (stand-in)"
    assert by[(4, 1)]["error"].startswith("ValueError") and "images_per_s" not in by[(4, 2)]
    assert (8, 0) in log["closed"]  # the stream opened before the failing one is released
    ok = [p for p in r["points"] if "images_per_s" in p]
    assert r["best"] == max(ok, key=lambda p: p["images_per_s"]) and len(ok) == 3
    assert sorted(log["opened"]) == sorted(log["closed"])
    none = kit.throughput_sweep(_streams(log, fail=(1, 0)), [1], streams=(1,), measure_s=0.05)
    assert none["images_per_s"] is None and none["setting"].startswith("none")
