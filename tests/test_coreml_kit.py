"""coreml-fp16 / coreml-int8 kits: real coremltools conversions of the built-in models.

Core ML cannot run on Linux, so what is checked here is everything that can be: the package
opens with coremltools' spec reader, is an ML Program with the vitedge I/O names and the model
card in its metadata, every file of the directory artifact is listed for checksums, the kit
files are there (and the verify script refuses to pretend on Linux), the int8 weights inside the
package are the ones the CPU stand-in uses, and the stand-in is within the precision's tolerance
of PyTorch (the prediction the report shows)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
from cores import THREADS

ct = pytest.importorskip("coremltools", reason="needs the coreml extra")

import torch  # noqa: E402
from kits import import_kit_script  # noqa: E402
from shared_bundles import shared_bundle  # noqa: E402

from vitedge.calib.datasets import synthetic_split  # noqa: E402
from vitedge.kit_common import ship_profile  # noqa: E402
from vitedge.runtimes.ort_runner import OrtRunner  # noqa: E402
from vitedge.targets.coreml import (  # noqa: E402
    PACKAGE,
    CoreMLOptions,
    quantize_like_coreml,
)

# Both precisions on the contract's model (its bundles, no second build), and the ViT's int8
# (attention weights through coremltools' quantiser; the stand-in weights test reads it).
CASES = [("convnext-zepto", "fp16"), ("convnext-zepto", "int8"), ("vit-tiny", "int8")]


@pytest.fixture(scope="module")
def built():
    """(ctx, artifact) of `vitedge export NAME --target coreml-PRECISION`, the bundle the contract
    test also reads (tests/shared_bundles.py: built once per run)."""
    def get(name, precision):
        b = shared_bundle(f"coreml-{precision}", name)
        return b.ctx, b.artifact
    return get


def _cos(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.slow
@pytest.mark.parametrize("name, precision", CASES)
def test_coreml_kit_package_metadata_and_files(built, name, precision):
    ctx, art = built(name, precision)
    card = ctx.loaded.card
    pkg = ctx.bundle_dir / PACKAGE
    assert pkg.is_dir()
    # every file of the directory artifact is listed (checksummed), the stand-in and kit too
    on_disk = sorted(str(p.relative_to(ctx.bundle_dir)) for p in pkg.rglob("*") if p.is_file())
    assert on_disk and set(on_disk) <= set(art.files)
    assert any(f.endswith("weight.bin") for f in on_disk) and f"{PACKAGE}/Manifest.json" in on_disk
    for f in ("verify_coreml.py", "device_profile.py", "kit.json", "KIT.md", art.main_file):
        assert f in art.files and (ctx.bundle_dir / f).is_file()
    kit_note = next(n for n in art.notes if "NOT run here" in n)  # the report's notes: the build's among them
    assert art.predicted_by and art.runtime == "onnxruntime"
    # the device profile cannot be measured here: the report names the kit command that does
    assert "device profile" in kit_note and art.details["device_profile_command"] == "python verify_coreml.py"
    assert "`device_profile`" in (ctx.bundle_dir / "KIT.md").read_text()

    spec = ct.utils.load_spec(str(pkg))
    assert spec.WhichOneof("Type") == "mlProgram"
    (inp,), (out,) = spec.description.input, spec.description.output
    assert inp.name == "input" and list(inp.type.multiArrayType.shape) == [1, 3, *card.preprocess.input_size]
    assert out.name == "logits"
    meta = dict(spec.description.metadata.userDefined)
    assert json.loads(meta["vitedge.classes"]) == list(card.classes)
    assert json.loads(meta["vitedge.preprocess"]) == card.preprocess.to_dict()
    assert meta["vitedge.precision"] == precision
    # the high-level reader opens it too (without compiling: no Core ML framework on Linux)
    model = ct.models.MLModel(str(pkg), skip_model_load=True)
    assert model.user_defined_metadata["vitedge.classes"] == meta["vitedge.classes"]
    ops = [op.type for b in spec.mlProgram.functions["main"].block_specializations.values()
           for op in b.operations]
    n_quant = sum(1 for t in ops if t.startswith("constexpr_") and ("dequantize" in t or "shift_scale" in t))
    if precision == "int8":
        _, names = quantize_like_coreml(ctx.loaded.module)
        assert n_quant == len(names) == art.details["standin"]["weights_round_tripped"]
    else:
        assert n_quant == 0


@pytest.mark.slow
@pytest.mark.parametrize("name, precision", CASES)
def test_coreml_standin_predicts_parity_within_tolerance(built, name, precision):
    ctx, art = built(name, precision)
    spec = ctx.loaded.card.preprocess
    x = synthetic_split("test", spec, 64, 0).as_inputs(spec)
    with torch.no_grad():
        ref = ctx.loaded.module.eval()(torch.from_numpy(x)).numpy()
    with OrtRunner(ctx.bundle_dir / art.main_file, threads=THREADS, **art.runner_options) as r:
        out = r.infer({"input": x})["logits"]
    cos = _cos(out, ref)
    assert np.abs(out - ref).max() > 1e-5  # the stand-in really is reduced precision
    if precision == "fp16":
        assert cos.min() >= 0.9999 and (out.argmax(1) == ref.argmax(1)).mean() >= 0.999
    else:
        assert cos.mean() >= 0.998 and (out.argmax(1) == ref.argmax(1)).mean() >= 0.98


@pytest.mark.slow
def test_int8_standin_weights_are_the_packages_weights(built, tmp_path):
    """The stand-in's round-tripped weights equal the int8 constants coremltools wrote (checked
    on the in-memory MIL program of the same conversion)."""
    import coremltools.optimize as cto

    from vitedge.targets.coreml import WEIGHT_THRESHOLD, _convert, _quantize_weights

    ctx, _ = built("vit-tiny", "int8")
    from vitedge.targets.context import BuildContext

    convert_ctx = BuildContext(loaded=ctx.loaded, bundle_dir=tmp_path, work_dir=tmp_path, onnx=None,
                               options=CoreMLOptions())
    mlmodel = _quantize_weights(_convert(convert_ctx, 1))
    assert cto  # the optimize package is what produced the constexpr ops
    deq = []
    for op in mlmodel._mil_program.functions["main"].operations:
        if op.op_type == "constexpr_affine_dequantize":
            q = op.quantized_data.val.astype(np.float32)
            axis = int(op.axis.val)
            shape = [1] * q.ndim
            shape[axis] = -1
            zp = np.reshape(op.zero_point.val.astype(np.float32), shape)
            sc = np.reshape(op.scale.val.astype(np.float32), shape)
            deq.append(((q - zp) * sc, axis))
    assert deq
    module, names = quantize_like_coreml(ctx.loaded.module, WEIGHT_THRESHOLD)
    ours = dict(module.named_parameters()) | dict(module.named_buffers())
    for w, axis in deq:
        assert axis == 0
        cands = [ours[n].detach().numpy() for n in names if tuple(ours[n].shape) == w.shape]
        assert cands, w.shape
        # in quantisation steps: identical but for rounding ties of a few elements
        steps = min(np.abs(c - w).max() / (np.abs(c).max() / 127) for c in cands)
        off = min(float((np.abs(c - w) > 0.5 * np.abs(c).max() / 127).mean()) for c in cands)
        assert steps <= 1.01 and off < 1e-3, (steps, off)


@pytest.mark.slow
def test_verify_script_refuses_to_pretend_on_linux(tmp_path):
    from importlib import resources

    script = tmp_path / "verify_coreml.py"
    script.write_text((resources.files("vitedge.coreml_kit") / "verify_coreml.py").read_text())
    ship_profile(tmp_path)
    (tmp_path / "kit.json").write_text(json.dumps({"package": PACKAGE, "precision": "fp16", "input_name": "input",
                                                   "output_name": "logits", "batch": 1, "compute_units": "ALL",
                                                   "tolerance": {"max_abs": None, "cosine_min": 0.9999}}))
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 5 and "macOS" in res.stderr
    helps = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert helps.returncode == 0 and "--no-throughput" in helps.stdout


# -- the kit's device profile and throughput: numpy + the standard library, so they run here ----

KIT_JSON = {"package": PACKAGE, "precision": "fp16", "input_name": "input", "output_name": "logits", "batch": 2,
            "compute_units": "ALL", "tolerance": {"max_abs": 1e-3, "cosine_min": 0.9999}}


@pytest.fixture
def kit(tmp_path):
    """verify_coreml.py imported from a kit directory, as on the Mac (it reads kit.json on import)."""
    from importlib import resources

    (tmp_path / "verify_coreml.py").write_text((resources.files("vitedge.coreml_kit") / "verify_coreml.py").read_text())
    (tmp_path / "kit.json").write_text(json.dumps(KIT_JSON))
    ship_profile(tmp_path)  # as the target ships it, beside the script
    yield from import_kit_script(tmp_path, "verify_coreml.py", ("device_profile",))


class FakeMLModel:
    """Stand-in for a Core ML model, which cannot run here (Core ML is macOS-only): "logits" are a
    fixed function of each sample, so the kit's parity, profile and sweep run end to end."""

    loads: list = []

    def __init__(self, path, compute_units=None):
        assert path.endswith(PACKAGE)
        self.loads.append(compute_units)

    @staticmethod
    def logits(x):
        return np.asarray(x, np.float32).reshape(len(x), -1)[:, :10] * 2.0

    def predict(self, feed):
        time.sleep(0.001)
        return {"logits": self.logits(feed["input"])}


@pytest.mark.parametrize("broken", [False, True])
def test_kit_verify_main_end_to_end_with_a_stand_in_model(kit, monkeypatch, capsys, broken):
    here = kit.HERE
    x = np.random.default_rng(1).standard_normal((3, 3, 8, 8)).astype(np.float32)  # 3: one padded batch of 2
    np.savez(here / "reference.npz", **{"images/input": x, "images/logits": FakeMLModel.logits(x) + broken})
    FakeMLModel.loads = []
    fake_coremltools = SimpleNamespace(models=SimpleNamespace(MLModel=FakeMLModel), __version__="stand-in",
                                       ComputeUnit=SimpleNamespace(ALL="ALL", CPU_ONLY="CPU_ONLY"))
    monkeypatch.setitem(sys.modules, "coremltools", fake_coremltools)
    monkeypatch.setattr(kit.platform, "system", lambda: "Darwin")
    monkeypatch.setattr(sys.modules["device_profile"], "STEADY_BUDGET_S", 0.05)
    monkeypatch.setattr(sys.modules["device_profile"], "SWEEP_MEASURE_S", 0.05)
    assert kit.main(["--compute-units", "ALL,CPU_ONLY", "--runs", "3", "--warmup", "1"]) == (4 if broken else 0)
    out, err = capsys.readouterr()
    d = json.loads(out)
    assert {"package", "precision", "coremltools", "parity", "latency_ms"} <= set(d)
    assert set(d["parity"]) == {"ALL/images", "CPU_ONLY/images"} and set(d["latency_ms"]) == {"ALL", "CPU_ONLY"}
    assert all(p["passed"] is not broken for p in d["parity"].values())
    dp = d["device_profile"]
    assert dp["frame"] == "2x3x8x8 float32" and dp["compute_units"] == "ALL" and dp["steady"]["batch"] == 2
    assert dp["first_ms"] >= 1.0 and dp["memory_peaks"] in ("per phase", "since process start")
    t = d["throughput"]
    assert [(p["batch"], p["streams"]) for p in t["points"]] == [(2, 1), (2, 2)]  # the package's static batch
    assert t["images_per_s"] > 0 and t["setting"].endswith("one MLModel each (ALL)")
    # the profile's cold and warm loads first, then the other unit, then the sweep's second stream
    assert FakeMLModel.loads == ["ALL", "ALL", "CPU_ONLY", "ALL"]
    assert json.loads((here / "coreml_report.json").read_text()) == d
    assert "device profile (ALL): peak" in err and ("FAILED" in err) is broken


def test_kit_profile_matches_vitedges_fields(kit):
    from vitedge.bench.latency import LatencyStats
    from vitedge.bench.profile import DeviceProfile, summary

    prof = kit.Profiler()
    for ms, mb in (("import_ms", "import_mb"), ("load_cold_ms", "load_peak_mb"), ("first_ms", "first_peak_mb")):
        with prof.phase(ms, mb):
            pass
    prof.steady(lambda: None, batch=2, budget_s=0.01)
    with prof.phase("load_warm_ms"):
        pass
    d = prof.result("2x3x8x8 float32")
    assert set(DeviceProfile.__dataclass_fields__) | {"peak_mb"} <= set(d)
    assert set(d["steady"]) == set(LatencyStats.__dataclass_fields__)
    assert kit.summary_line(d).startswith(summary(d))
