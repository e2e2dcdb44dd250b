"""Side-by-side timing with each contestant in its own process (issue 14's cross-talk fix):
the mechanism is tested, not the timings - one process works at a time, the others use no CPU
during its blocks, and a busy process is never taken for a quiet one."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from vitedge.bench.isolated import Contestant, process_cpu_ns, time_isolated, wait_quiet
from vitedge.errors import VitedgeError

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="reads Linux /proc schedstat")


def test_a_spinning_process_is_not_quiet_and_a_sleeping_one_is():
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.3)  # both started
        assert not wait_quiet([busy.pid], timeout_s=0.2)
        assert wait_quiet([idle.pid], timeout_s=2.0)
        c0 = process_cpu_ns(busy.pid)
        time.sleep(0.1)
        assert process_cpu_ns(busy.pid) - c0 > 2e7  # > 20 ms of CPU in 100 ms: it is counted
    finally:
        busy.kill()
        idle.kill()


def test_a_contestant_that_cannot_open_is_named(tmp_path):
    with pytest.raises(VitedgeError, match="timing broken in its own process failed"):
        time_isolated([Contestant("broken", tmp_path / "missing.onnx")], {1: np.zeros((1, 3, 8, 8), np.float32)},
                      budget_s=0.1)


@pytest.mark.slow
def test_contestants_time_in_their_own_processes_one_at_a_time(tmp_path):
    import torch

    from vitedge.export.onnx_export import ExportConfig, export_onnx
    from vitedge.models.checkpoint import save_checkpoint
    from vitedge.models.resolve import load_model

    loaded = load_model("vit-tiny")
    save_checkpoint(tmp_path / "ref.safetensors", loaded.module, loaded.card)
    onnx_path = export_onnx(loaded.module, loaded.card, tmp_path / "m.onnx", ExportConfig()).path
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    images = np.random.default_rng(1).standard_normal((5, 3, 64, 64)).astype(np.float32)
    res = time_isolated([Contestant("torch", tmp_path / "ref.safetensors", torch=True),
                         Contestant("onnx", onnx_path)], {1: x}, threads=2, min_runs=20, budget_s=1.0,
                        collect=images)[1]
    assert set(res.stats) == {"torch", "onnx"} and all(s.runs >= 20 for s in res.stats.values())
    # What was timed also answered `collect`, image by image: the same model, the same logits.
    with torch.no_grad():
        expected = loaded.module(torch.from_numpy(images)).numpy()
    for name in ("torch", "onnx"):
        assert res.outputs[name].shape == (5, 10) and np.abs(res.outputs[name] - expected).max() < 1e-4
    pids = set(res.pids.values())
    assert len(pids) == 2 and os.getpid() not in pids  # two processes, neither of them this one
    assert all(c["wall_s"] > 0 for c in res.cross_talk.values())
    # While one contestant timed, the other's process (all its threads) used < 5% of a core.
    assert res.worst_cross_talk() < 0.05, res.cross_talk
    assert res.not_quiet == 0
    for pid in pids:  # workers are gone afterwards
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"


def test_an_artifact_file_opens_with_its_runtime_options_not_by_suffix(tmp_path):
    # Before its bundle is complete an artifact is a bare file; opened by suffix, an OpenVINO IR
    # would lose its pinned f32 inference precision (and run bf16 on CPUs that have it).
    pytest.importorskip("openvino")
    from vitedge.bench.isolated import _open
    from vitedge.runtimes.openvino_runner import OpenVinoRunner

    runner = _open(Contestant("artifact", tmp_path / "model.xml", runtime="openvino",
                              runner_options={"inference_precision": "f32"}), threads=1)
    assert isinstance(runner, OpenVinoRunner) and runner.info()["requested"]["INFERENCE_PRECISION_HINT"] == "f32"


@pytest.mark.slow
def test_vitedge_export_times_artifact_and_reference_in_their_own_processes(tmp_path):
    import json

    from vitedge.cli.main import main

    out = tmp_path / "b"
    assert main(["export", "vit-tiny", "--target", "onnx-fp32", "--out", str(out), "--eval-n", "32",
                 "--bench-budget", "0.5"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["latency_measured"].startswith("artifact and reference each in its own process")
    assert report["latency_ms"]["artifact"]["runs"] >= 10 and report["latency_ms"]["reference"]["runs"] >= 10
    assert "own process" in (out / "report.md").read_text()
