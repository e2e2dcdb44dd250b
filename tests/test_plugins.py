"""The plugin design: a target (and a runtime) added in one file each, with no other edit,
appears everywhere; one way to open and judge a bundle; caches keyed by what they cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cores import INTERLEAVED

from vitedge.cli.flags import rewrite_argv
from vitedge.cli.main import main
from vitedge.models.resolve import load_model
from vitedge.pipeline import SharedWork, export_target
from vitedge.request import BenchConfig, ExportRequest

ROOT = Path(__file__).resolve().parents[1]
FAST = BenchConfig(warmup=1, min_runs=3, budget_s=0.1)

# A whole new target and runtime, written the way a contributor would: one file. The runtime
# opens `.dummyonnx` files (ONNX Runtime underneath, so the artifact is real and runs); the
# target writes one and has one option. Loaded through VITEDGE_PLUGINS, the out-of-tree
# registration line.
PLUGIN = '''
from dataclasses import dataclass
from typing import ClassVar

from vitedge.options import opt
from vitedge.runtimes.ort_runner import OrtRunner
from vitedge.runtimes.registry import RuntimeSpec
from vitedge.targets.registry import Artifact, Hooks, Target, register_target

RUNTIME = RuntimeSpec(name="dummy-ort", runner="dummy_plugin:DummyRunner", module="onnxruntime",
                      packages=("onnxruntime",), opens=(".dummyonnx",), install="pip install onnxruntime")


class DummyRunner(OrtRunner):
    runtime = "dummy-ort"


@dataclass(frozen=True)
class DummyOptions:
    prefix: ClassVar[str] = "dummy"
    note: str = opt("none", "a note written into the report")


def build(ctx):
    import shutil

    dst = ctx.bundle_dir / "model.dummyonnx"
    shutil.copy2(ctx.require_onnx().path, dst)
    return Artifact(dst.name, [dst.name], "dummy-ort", {}, details={"note": ctx.options.note})


register_target(Target(name="dummy-fp32", runtime="dummy-ort", precision="fp32", hooks=Hooks(build=build),
                       options=DummyOptions, description="test plugin: ONNX under another suffix"))
'''

SCRIPT = '''
import json, sys
import numpy as np
from vitedge.cli.main import main

out = sys.argv[1]
common = ["--eval-n", "20", "--bench-budget", "0.2"]
assert main(["targets"]) == 0
assert main(["targets", "--options", "dummy-fp32"]) == 0
assert main(["export", "vit-tiny", "-t", "dummy-fp32", "--dummy-note", "hello", "--out", out + "/b", *common]) == 0
report = json.load(open(out + "/b/report.json"))
assert report["runtime"] == "dummy-ort" and report["details"]["note"] == "hello", report
assert report["options"] == {"note": "hello"}
assert main(["verify", out + "/b"]) == 0
assert main(["bench", out + "/b/model.dummyonnx", "--budget", "0.2"]) == 0
import vitedge
with vitedge.load(out + "/b") as model:
    assert model.predict(np.zeros((64, 64, 3), np.uint8)).label in model.classes
assert main(["matrix", "vit-tiny", "--targets", "dummy-fp32", "--out", out + "/m", "--eval-n", "20",
             "--bench-budget", "0.3"]) == 0
rows = json.load(open(out + "/m/matrix.json"))["rows"]
assert [r["status"] for r in rows] == ["passed"], rows
print("PLUGIN-OK")
'''


@pytest.mark.slow
def test_a_target_in_one_file_appears_everywhere(tmp_path):
    (tmp_path / "dummy_plugin.py").write_text(PLUGIN)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}", "VITEDGE_PLUGINS": "dummy_plugin"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "out")], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0 and "PLUGIN-OK" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "dummy-fp32" in proc.stdout and "--dummy-note" in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("static", [1, 3, None], ids=["static-1", "static-3", "dynamic"])
def test_verify_and_load_work_for_static_and_dynamic_batches(tmp_path, capsys, static):
    args = ["export", *INTERLEAVED, "vit-tiny", "--out", str(tmp_path / "b"), "--eval-n", "7", "--bench-budget", "0.1"]
    assert main([*args, *(["--static-batch", str(static)] if static else [])]) == 0
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["input"]["shape"][0] == (static or "batch")
    assert main(["verify", str(tmp_path / "b")]) == 0, capsys.readouterr().err
    import vitedge

    with vitedge.load(tmp_path / "b") as model:
        preds = model.predict(np.zeros((5, 64, 64, 3), np.uint8))  # 5 is not a multiple of 3
    assert len(preds) == 5


@pytest.mark.slow
def test_shared_work_is_keyed_by_the_eval_data(tmp_path):
    loaded = load_model("vit-tiny")
    shared = SharedWork(tmp_path / "shared")
    base = ExportRequest(target="onnx-fp32", out=tmp_path / "a", eval_n=20, bench=FAST, threads=1)
    first = export_target(loaded, base, shared)
    second = export_target(loaded, ExportRequest(**{**base.__dict__, "out": tmp_path / "b", "eval_n": 30,
                                                    "seed": 5}), shared)
    alone = export_target(loaded, ExportRequest(**{**base.__dict__, "out": tmp_path / "c", "eval_n": 30,
                                                   "seed": 5}))
    assert first.parity.accuracy["n"] == 20 and second.parity.accuracy["n"] == 30
    ref_b, ref_c = np.load(tmp_path / "b" / "reference.npz"), np.load(tmp_path / "c" / "reference.npz")
    ref_a = np.load(tmp_path / "a" / "reference.npz")
    for key in ("images/input", "random/input", "images/logits", "random/logits"):
        np.testing.assert_array_equal(ref_b[key], ref_c[key])  # shared == computed alone
    assert not np.array_equal(ref_a["random/input"], ref_b["random/input"])  # another seed, other inputs
    assert second.parity.accuracy == alone.parity.accuracy


def test_old_spellings_still_work_with_one_deprecation_line():
    warned: list[str] = []
    args = rewrite_argv(["export", "m", "--calib-method", "entropy", "--min-batch=2", "--no-quantize-attention",
                         "--cosine-min", "0.9"], warned.append)
    assert args == ["export", "m", "--option", "calib_method=entropy", "--option", "trt-min-batch=2",
                    "--option", "ort-quantize-attention=false", "--tol-cosine-min", "0.9"]
    assert len(warned) == 4 and all(w.startswith("vitedge: deprecated: ") for w in warned)
    assert "--ort-calib-method / --trt-calib-method" in warned[0]
    assert rewrite_argv(["eval", "m", "--limit", "5"], warned.append) == ["eval", "m", "--eval-n", "5"]


def test_a_target_declares_its_hooks_together_and_the_old_spelling_still_works():
    from vitedge.targets.registry import HOOK_NAMES, Hooks, Target, all_targets

    def build(ctx):  # never called: the declaration is what is tested
        raise AssertionError

    new = Target(name="t-new", runtime="onnxruntime", precision="fp32", description="d", hooks=Hooks(build=build))
    with pytest.warns(DeprecationWarning, match="hooks=Hooks"):
        old = Target(name="t-old", runtime="onnxruntime", precision="fp32", description="d", build=build,
                     diagnose=len, in_matrix=False)
    assert old.hooks == Hooks(build=build, diagnose=len) and old.build is build and old.diagnose is len
    assert new.build is build and new.diagnose is None and old.in_matrix is False and new.in_matrix is True
    with pytest.raises(TypeError, match="unknown field"):
        Target(name="t", runtime="onnxruntime", precision="fp32", description="d", hooks=Hooks(build=build), bild=1)
    with pytest.raises(TypeError, match="hooks=Hooks"):
        Target(name="t", runtime="onnxruntime", precision="fp32", description="d", hooks=Hooks(build=build),
               build=build)
    # every registered target is declared the new way: no hook among its declaration fields
    for t in all_targets():
        assert isinstance(t.hooks, Hooks) and not set(HOOK_NAMES) & set(t.__dataclass_fields__), t.name


def test_generated_flags_become_typed_options():
    from vitedge.cli.flags import parse_option_values
    from vitedge.targets.registry import get_target

    args = rewrite_argv(["export", "m", "--ort-calib-method", "percentile", "--no-ort-reduce-range",
                         "--ort-exclude", "a,b", "--ort-exclude", "c"])
    values = parse_option_values([a for i, a in enumerate(args) if i and args[i - 1] == "--option"])
    options = get_target("ort-int8").options_from(values)
    assert (options.calib_method, options.reduce_range, options.exclude) == ("percentile", False, ("a", "b", "c"))
    assert get_target("onnx-fp32").options_from(values).__class__.__name__ == "NoOptions"


def test_each_default_is_written_once():
    """No target name in a table outside its own file, and the defaults the issue named (opset,
    TensorRT max batch) written in one place."""
    import re

    from vitedge.targets.registry import all_targets

    sources = {p: p.read_text() for p in (ROOT / "vitedge").rglob("*.py")}
    catalog = ROOT / "vitedge" / "targets" / "catalog.py"  # the registration list (and the default target)
    for target in all_targets():
        own = Path(sys.modules[target.build.__module__].__file__).resolve()
        if ROOT not in own.parents:
            continue  # a test's own target
        quoted = re.compile("[\"']" + re.escape(target.name) + "[\"']")
        homes = [p for p, text in sources.items() if quoted.search(text) and p.resolve() not in (own, catalog)]
        assert not homes, f"{target.name} is named outside its target file: {homes}"
    assert sum(len(re.findall(r"\bopset: int = \d+|DEFAULT_OPSET = \d+", t)) for t in sources.values()) == 1
    assert sum(len(re.findall(r"max_batch: int = 8\b", t)) for t in sources.values()) == 1

    def count(pattern: str) -> int:
        # The device kits (trt_kit, coreml_kit) are copied into bundles and run without vitedge
        # installed: they spell their own constants.
        return sum(len(re.findall(pattern, t)) for p, t in sources.items() if not p.parent.name.endswith("_kit"))

    assert count(r'\(\s*"MatMul",\s*"Gemm",\s*"Conv"\s*\)') == 1  # models.family.INT8_OP_TYPES
    assert count(r'"reference\.npz"') == 1  # bundle.manifest.REFERENCE
    assert count(r"99\.999\b") == 1 and count(r'opt\("minmax"') == 0  # calibration defaults (ORT and TensorRT)
    assert count(r"\bwarmup: int = \d") == 0 and count(r"\bmin_runs: int = \d") == 0  # bench.latency's
    assert count(r"\bWARMUP, MIN_RUNS, MAX_RUNS = ") == 1
    # the device profile's and throughput sweep's, shared with the kits (kit_common.device_profile)
    assert count(r"\(1, 4, 8\)") == 1 and count(r"peak \{mb\(") == 1
    assert count(r"\bSTEADY_WARMUP = \d") == 1 and count(r"\bSWEEP_MEASURE_S = ") == 1


@pytest.mark.parametrize("option_class, flag", [("vitedge.targets.ort_int8:OrtInt8Options", "--ort-calib-percentile"),
                                                 ("vitedge.targets.tensorrt:TrtOptions", "--trt-calib-percentile")])
def test_a_calibration_percentile_out_of_range_names_its_own_flag(option_class, flag):
    import importlib

    from vitedge.errors import UsageError

    module, name = option_class.split(":")
    with pytest.raises(UsageError, match=f"^{flag} 50 must be in \\[90, 100\\]"):
        getattr(importlib.import_module(module), name)(calib_percentile=50.0)


def test_the_plan_resolves_options_once_and_the_build_gets_them_typed(tmp_path):
    """plan_export: typed options (the target's own frozen dataclass), the budget as the gate,
    the same instance in the request the pipeline runs; matrix cells as plans."""
    from vitedge.errors import UsageError
    from vitedge.plan import plan_cells, plan_export
    from vitedge.targets.ort_int8 import OrtInt8Options

    plan = plan_export("ort-int8", {"ort-calib-method": "percentile", "calib_percentile": "99.9"},
                       ignore=["/blocks.0/attn/MatMul"], max_drop=0.4, tolerance={"max_abs": 1.0})
    assert isinstance(plan.options, OrtInt8Options) and not plan.is_auto and plan.needs_calibration
    assert (plan.options.calib_method, plan.options.calib_percentile) == ("percentile", 99.9)
    assert plan.options.exclude == ("/blocks.0/attn/MatMul",)  # --ignore is the target's fallback option
    assert plan.tolerance == {"max_abs": 1.0, "max_accuracy_drop": 0.4, "cosine_mean": None}
    request = plan.request(tmp_path / "b", eval_n=10)
    assert request.options is plan.options and request.budget is plan.budget and request.target == "ort-int8"
    auto = plan_export("auto-cpu", {"ov-transformer": "false"})
    assert auto.is_auto and auto.options == {"ov-transformer": "false"} and len(auto.candidates) > 2
    with pytest.raises(UsageError, match="--ort-calib-method"):
        plan_export("ort-int8", {"ort-calib-method": "nope"})
    cells = plan_cells(["onnx-fp32", "ort-int8"], {"ort-calib-method": "entropy"}, max_drop=0.5)
    assert [c.budget is None for c in cells] == [True, False]  # the budget only where layers can be kept
    assert cells[1].options.calib_method == "entropy" and cells[0].options.__class__.__name__ == "NoOptions"
    with pytest.raises(UsageError, match="no target has this option"):
        plan_cells(["onnx-fp32"], {"nonsense-key": "1"})
    # One spelling past the plan: the old field name (what the deprecated --calib-method hands
    # over) becomes the key of each selected target that declares it, and nothing else reads it.
    both = plan_cells(["ort-int8", "trt-int8"], {"calib_method": "entropy"})
    assert [c.options.calib_method for c in both] == ["entropy", "entropy"]
    assert plan_export("auto-cpu", {"calib_method": "entropy"}).options == {"ort-calib-method": "entropy"}
    from vitedge.targets.registry import get_target

    assert not get_target("ort-int8").takes("calib_method") and get_target("ort-int8").takes("ort-calib-method")
    with pytest.raises(UsageError, match="has no option 'calib_method'"):
        get_target("ort-int8").make_options({"calib_method": "entropy"})
    with pytest.raises(UsageError, match="does not apply to onnx-fp32"):
        plan_cells(["onnx-fp32"], {"calib_method": "entropy"})
