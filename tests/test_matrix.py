"""`vitedge matrix`: one failing target is a row, cells merge across runs, the plot is drawn."""

from __future__ import annotations

import json

import pytest

from vitedge.cli.main import main
from vitedge.errors import ExportError
from vitedge.matrix.plot import pareto_front
from vitedge.targets.registry import Hooks, Target, register_target

pytestmark = pytest.mark.slow  # full matrices with side-by-side timing (~1 min)


def _broken(ctx):
    raise ExportError("this test target always fails to build")


register_target(Target(name="test-broken", runtime="onnxruntime", precision="fp32", in_matrix=False,
                       description="test only: a target whose build fails", hooks=Hooks(build=_broken)))


def test_matrix_with_a_failing_target(tmp_path, all_cores):
    out = tmp_path / "m"
    code = main(["matrix", "convnext-zepto", "--targets", "onnx-fp32,ov-fp32,test-broken,trt-fp16",
                 "--out", str(out), "--eval-n", "200", "--bench-budget", "0.3", "--batch-sweep", "1,4"])
    assert code == 0
    rows = {r["target"]: r for r in json.loads((out / "matrix.json").read_text())["rows"]}
    assert rows["test-broken"]["status"] == "error" and "always fails" in rows["test-broken"]["error"]
    assert rows["onnx-fp32"]["status"] == "passed" and rows["onnx-fp32"]["p50_ms"] > 0
    assert rows["onnx-fp32"]["speedup_vs_pytorch"] > 0
    assert "side by side" in rows["onnx-fp32"]["latency_measured"]
    assert set(rows["ov-fp32"]["batch_sweep"]) == {"1", "4"}
    # each artifact's device profile, from its own timing process; a kit has none
    assert rows["onnx-fp32"]["peak_mb"] > 0 and rows["ov-fp32"]["load_ms"] > 0 and rows["ov-fp32"]["first_ms"] > 0
    assert rows["trt-fp16"]["peak_mb"] is None
    # images/s with all cores, the best of its sweep, and the setting that won; none for a kit
    assert rows["onnx-fp32"]["images_per_s"] > 0 and "parallel stream" in rows["ov-fp32"]["throughput_setting"]
    assert rows["trt-fp16"]["images_per_s"] is None
    assert rows["trt-fp16"]["status"].startswith("kit only") and rows["trt-fp16"]["p50_ms"] is None
    md = (out / "matrix.md").read_text()
    assert "| test-broken | error: ExportError" in md and "speed-up vs PyTorch" in md and "| peak MB | load ms | first ms | img/s |" in md
    png = out / "pareto.png"
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "bundles" / "onnx-fp32" / "manifest.json").exists()


def test_cells_from_separate_runs_merge(tmp_path, capsys):
    for target in ("onnx-fp32", "ort-int8"):
        assert main(["matrix", "vit-tiny", "--targets", target, "--out", str(tmp_path / target),
                     "--eval-n", "100", "--num-calib", "32", "--bench-budget", "0.5", "--no-throughput"]) == 0
    assert main(["matrix", "--merge", str(tmp_path / "onnx-fp32"), "--merge", str(tmp_path / "ort-int8" / "cells"),
                 "--out", str(tmp_path / "merged")]) == 0
    rows = json.loads((tmp_path / "merged" / "matrix.json").read_text())["rows"]
    assert {r["target"] for r in rows} == {"onnx-fp32", "ort-int8"}
    assert all(r["status"] == "passed" for r in rows)
    assert (tmp_path / "merged" / "pareto.png").exists()
    assert main(["matrix", "--merge", str(tmp_path / "nothing-here"), "--out", str(tmp_path / "x")]) == 3


def test_pareto_front():
    pts = [(1.0, -0.1, "int8"), (1.5, 0.0, "fp32"), (2.0, 0.0, "fp16"), (3.0, -0.2, "slow-bad"), (0.9, -0.5, "tiny")]
    assert [p[2] for p in pareto_front(pts)] == ["tiny", "int8", "fp32"]
