"""vitedge.bench.profile: memory, load and first inference measured in a fresh process.

The memory measure is checked against a process that allocates a known amount (tests/memhog.py);
no timed assertions (times are only checked to be measured and positive)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from shared_bundles import shared_bundle

from vitedge.bench.isolated import Contestant
from vitedge.bench.profile import profile

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_memory_phases_match_what_the_process_allocated(tmp_path):
    from memhog import FIRST_MB, LOAD_MB

    p = profile(Contestant("hog", tmp_path, factory="memhog:open_hog"), budget_s=0.2)
    slack = 12.0  # MB: numpy's temporaries, the interpreter's own growth
    assert p.baseline_mb is not None and 10 < p.baseline_mb < 400
    assert abs(p.load_peak_mb - LOAD_MB) < slack, p
    assert abs(p.first_peak_mb - (LOAD_MB + FIRST_MB)) < slack, p  # the first call's transient counts
    assert abs(p.steady_peak_mb - LOAD_MB) < slack, p  # and is gone afterwards: the peak was reset per phase
    assert abs(p.steady_rss_mb - LOAD_MB) < slack, p
    assert p.peak_mb == max(p.load_peak_mb, p.first_peak_mb, p.steady_peak_mb, p.import_mb or 0)
    assert p.load_cold_ms > 0 and p.load_warm_ms > 0 and p.first_ms > 0 and p.steady.runs >= 3
    assert p.frame == "1x3x8x8 float32"


def test_bench_prints_the_profile_of_a_real_bundle(tmp_path, capsys, all_cores):
    from vitedge.cli.main import main

    b = shared_bundle("onnx-fp32", "convnext-zepto")  # the contract test's bundle (read-only)
    assert b.exit_code == 0, b.stderr
    out = b.dir
    # the export's own isolated timing measured it too, in the artifact's process
    exported = json.loads((out / "report.json").read_text())["device_profile"]
    assert exported["load_peak_mb"] > 0 and exported["first_ms"] > 0 and exported["frame"] == "1x3x64x64 float32"
    assert "In its own process" in (out / "report.md").read_text()
    assert main(["bench", str(out), "--budget", "0.3", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)["profile"]
    # onnxruntime and an 8 MB model: it adds memory, all of it measured above the baseline
    assert d["import_mb"] > 5 and d["load_peak_mb"] > d["import_mb"] and d["peak_mb"] >= d["load_peak_mb"]
    assert d["frame"] == "1x3x64x64 float32" and d["steady"]["runs"] >= 3
    assert main(["bench", str(out), "--budget", "0.3"]) == 0
    text = capsys.readouterr().out
    assert "load (cold)" in text and "first inference" in text and "peak MB" in text
    assert main(["bench", str(out), "--budget", "0.3", "--no-profile", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["profile"] is None
    # throughput: every (batch, streams) point of the sweep, the best one named with its setting
    assert main(["bench", str(out), "--budget", "0.2", "--no-profile", "--throughput", "--threads", "2",
                 "--json"]) == 0
    t = json.loads(capsys.readouterr().out)["throughput"]
    assert [(q["batch"], q["streams"]) for q in t["points"]] == [(b, s) for b in (1, 4, 8) for s in (1, 2)]
    assert all(q["images_per_s"] > 0 for q in t["points"]) and t["cores"] == 2
    assert t["images_per_s"] == max(q["images_per_s"] for q in t["points"])
    assert f"batch {t['best']['batch']}, {t['best']['streams']} parallel stream(s)" in t["setting"]
    # ONNX Runtime's way: one session per stream, the cores split between them
    assert all((q["instances"], q["threads_each"]) == (q["streams"], 2 // q["streams"]) for q in t["points"])


def test_openvino_streams_are_its_own_throughput_mechanism():
    from vitedge.runtimes.registry import get_runtime

    assert get_runtime("openvino").parallel_plan(2, 8) == (
        1, 8, {"performance_hint": "THROUGHPUT", "config": {"NUM_STREAMS": "2"}})
    assert get_runtime("litert").parallel_plan(4, 8) == (4, 2, {})


def test_a_crashing_artifact_is_one_line(tmp_path):
    from vitedge.errors import VitedgeError

    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(VitedgeError, match=r"in its own process failed: .*model.onnx: ONNX Runtime cannot load it"):
        profile(Contestant("bad", Path(bad)), budget_s=0.1)


def test_placement_names_what_runs_off_the_int8_kernels(tmp_path, capsys):
    """ort-int8 on vit-tiny: its recipe keeps the attention's activation x activation products and
    the classifier head float (vitedge.models.family); ONNX Runtime's profiler must show exactly
    that, in report.json and in `vitedge bench`."""
    from vitedge.cli.main import main

    b = shared_bundle("ort-int8", "vit-tiny")  # `vitedge export`, built once per run (read-only)
    assert b.exit_code == 0, b.stderr
    out = b.dir
    p = json.loads((out / "report.json").read_text())["placement"]
    # 24 Linears (qkv, proj, fc1, fc2 x 6 blocks: QLinearMatMul or QGemm) and the patch Conv
    assert p["fast_path"] == "int8 kernels" and p["on_fast_path"] == 25 and p["on"].get("QLinearConv") == 1
    assert p["on_fast_path"] + p["off_fast_path"] == p["ops"]
    assert p["off"].get("Gemm") == 1  # the head
    assert p["off"].get("FusedMatMul", 0) + p["off"].get("MatMul", 0) == 12  # q @ k and attn @ v, 6 blocks
    assert "Op placement (onnxruntime's own tools)" in (out / "report.md").read_text()
    capsys.readouterr()
    assert main(["bench", str(out), "--budget", "0.2", "--no-profile"]) == 0
    assert "ops on int8 kernels; off it: " in capsys.readouterr().out


def test_openvino_model_cache_is_made_on_the_device_and_read_on_later_loads(tmp_path):
    pytest.importorskip("openvino")
    from vitedge.cli.main import main

    out = tmp_path / "ov"
    assert main(["export", "vit-tiny", "-t", "ov-fp32", "--ov-model-cache", "--out", str(out), "--eval-n", "20",
                 "--bench-budget", "0.2"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["artifact"]["runner_options"]["cache_dir"] == "ov-cache"
    assert not (out / "ov-cache").exists()  # the export's own cache is the build machine's: not shipped
    first = profile(Contestant("a", out), budget_s=0.1)
    again = profile(Contestant("a", out), budget_s=0.1)
    assert (first.model_cache, again.model_cache) == ("written", "read")
    assert any(p.suffix == ".blob" for p in (out / "ov-cache").iterdir())
    assert main(["verify", str(out)]) == 0  # the cache beside the files is not a checksum problem


def test_op_times_takes_each_nodes_median_and_sums_per_kind():
    from vitedge.runtimes.op_profile import by_path, op_times, slowest_line

    p = op_times([("GEMM", "XNNPACK", [9.0, 1.0, 1.2]), ("GEMM", "XNNPACK", [2.0, 2.0, 2.0]),
                  ("layer_norm", "portable", [0.5, 0.6, 0.4]), ("empty", "x", [])], "test", 3, total_ms=5.0)
    assert [(r["op"], r["count"], r["ms"]) for r in p["ops"]] == [("GEMM", 2, 3.2), ("layer_norm", 1, 0.5)]
    assert p["ops_ms"] == 3.7 and p["profiled_call_ms"] == 5.0
    assert abs(sum(r["share"] for r in p["ops"]) - 1) < 1e-3
    assert by_path(p) == {"XNNPACK": 3.2, "portable": 0.5}
    assert "GEMM on XNNPACK x2 3.20 ms (86%)" in slowest_line(p)


# Each runtime's own profiler, on the contract's INT8 bundles: the kinds name the int8 kernels
# the runtime ran (ORT's QLinear*/...Integer ops, OpenVINO's i8/u8 kernel names, XNNPACK's
# QS8/QC8 operators inside ExecuTorch's delegate calls).
OP_PROFILES = [("ort-int8", ("QLinear", "Integer")), ("ov-int8", ("_I8", "_i8", "_u8", "_U8")),
               ("et-int8", ("QS8", "QC8"))]


@pytest.mark.parametrize("target, int8", OP_PROFILES, ids=[t for t, _ in OP_PROFILES])
def test_op_profile_names_the_kernels_each_runtime_ran(target, int8, capfd):
    from vitedge.cli.main import main
    from vitedge.runtimes.open import open_runner

    b = shared_bundle(target, "convnext-zepto")  # the contract's bundle (read-only)
    assert b.exit_code == 0, b.stderr
    with open_runner(b.dir, 1) as runner:
        prof = runner.op_profile(runs=3)
    assert prof["runs"] == 3 and prof["ops_ms"] > 0 and len(prof["ops"]) >= 3
    assert [r["ms"] for r in prof["ops"]] == sorted((r["ms"] for r in prof["ops"]), reverse=True)
    assert abs(sum(r["share"] for r in prof["ops"]) - 1) < 0.01
    assert any(k in r["op"] for r in prof["ops"] for k in int8), [r["op"] for r in prof["ops"]]
    if target == "et-int8":  # convnext-zepto's LayerNorms run on the portable kernels
        paths = {r["path"] for r in prof["ops"]}
        assert paths == {"XNNPACK", "portable kernels"}
        assert any(r["op"].startswith("native_layer_norm") for r in prof["ops"] if r["path"] == "portable kernels")
        capfd.readouterr()
        assert main(["bench", str(b.dir), "--ops", "--no-profile", "--budget", "0.2", "--json"]) == 0
        assert json.loads(capfd.readouterr().out)["ops"]["source"] == "ExecuTorch ETDump"
        assert main(["bench", str(b.dir), "--ops", "--no-profile", "--budget", "0.2"]) == 0
        printed = capfd.readouterr()
        assert "where the time goes (ExecuTorch ETDump)" in printed.out
        assert "cpuinfo" not in printed.err  # the runtime's native probing (fd 2) stays inside


def test_a_runtime_without_an_op_profiler_says_so(capsys):
    pytest.importorskip("ai_edge_litert")
    from vitedge.cli.main import main

    b = shared_bundle("litert-fp32", "convnext-zepto")
    assert b.exit_code == 0, b.stderr
    capsys.readouterr()
    assert main(["bench", str(b.dir), "--ops", "--no-profile", "--budget", "0.2"]) == 0
    assert "litert has no op profiler here" in capsys.readouterr().out
