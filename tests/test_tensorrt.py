"""TensorRT targets: TensorRT-ready ONNX (FP16 / Q/DQ), lint, build kit, predicted parity, type
checks against the TensorRT 10.13 and 11.4 stubs, and real engines where a GPU exists.

This machine has no GPU and TensorRT cannot be installed here: the tests marked `gpu` build and
run real engines and skip elsewhere with the reason. Nothing here pretends to be TensorRT.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from kits import import_kit_script
from onnx import TensorProto, helper, numpy_helper

from vitedge.calib.source import load_calibration
from vitedge.cli.main import main
from vitedge.lint.tensorrt import errors, lint_model
from vitedge.models.resolve import load_model
from vitedge.pipeline import BenchConfig, ExportRequest, SharedWork, export_target
from vitedge.targets.tensorrt import why_no_engine

pytestmark = pytest.mark.slow  # TensorRT kits with predicted parity and mypy against two stub sets

FAST = BenchConfig(warmup=2, min_runs=5, budget_s=0.2)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def vit():
    return load_model("vit-tiny")


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    return SharedWork(tmp_path_factory.mktemp("trt-shared"))


def _export(vit, shared, tmp_path, target, **kw):
    calib = load_calibration("synthetic", vit.card.preprocess, 64) if target == "trt-int8" else None
    return export_target(vit, ExportRequest(target=target, out=tmp_path / "b", eval_n=500, calibration=calib,
                                            bench=FAST, **kw), shared)


def _types(model):
    m = onnx.shape_inference.infer_shapes(model)
    t = {v.name: v.type.tensor_type.elem_type for v in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output)}
    t.update({i.name: i.data_type for i in m.graph.initializer})
    return t


@pytest.mark.skipif(why_no_engine() is None, reason="TensorRT + GPU present: the engine is built instead")
def test_trt_fp16_kit_with_predicted_parity(vit, shared, tmp_path):
    report = _export(vit, shared, tmp_path, "trt-fp16")
    d = report.to_dict()
    assert report.passed and d["predicted_by"]
    assert d["parity"]["cosine_min"] >= 0.9999 and d["parity"]["top1_agreement"] >= 0.999  # issue's FP16 bar
    bundle = tmp_path / "b"
    for f in ("model.fp16.onnx", "kit.json", "build_engine.py", "engine.py", "verify_engine.py", "device_profile.py", "trtexec.sh",
              "KIT.md", "reference.npz", "manifest.json"):
        assert (bundle / f).exists(), f
    assert "predicted on CPU" in (bundle / "report.md").read_text()
    # no device profile of a stand-in; report.md and report.json say so and name the kit's command
    saved = json.loads((bundle / "report.json").read_text())
    assert saved["device_profile"] is None and "NOT measured here" in saved["device_profile_note"]
    assert "`python verify_engine.py`" in saved["device_profile_note"]
    md = [line for line in (bundle / "report.md").read_text().splitlines() if line.startswith("Device profile")]
    assert len(md) == 1 and "NOT measured here" in md[0] and "`python verify_engine.py`" in md[0]
    assert "`device_profile`" in (bundle / "KIT.md").read_text()
    model = onnx.load(str(bundle / "model.fp16.onnx"))
    types = _types(model)
    assert types[model.graph.input[0].name] == TensorProto.FLOAT  # FP32 I/O
    assert types[model.graph.output[0].name] == TensorProto.FLOAT
    for node in model.graph.node:
        if node.op_type in ("LayerNormalization", "Softmax"):
            assert types[node.input[0]] == TensorProto.FLOAT, node.name  # kept FP32
        if node.op_type in ("MatMul", "Gemm"):
            assert types[node.input[0]] == TensorProto.FLOAT16, node.name  # the bulk in FP16
    assert not errors(lint_model(model, "10")) and not errors(lint_model(model, "11"))
    kit = json.loads((bundle / "kit.json").read_text())
    assert "--stronglyTyped" in (bundle / "trtexec.sh").read_text() and kit["build"]["max_batch"] == 8


@pytest.mark.skipif(why_no_engine() is None, reason="TensorRT + GPU present: the engine is built instead")
def test_trt_int8_qdq_is_what_tensorrt_needs(vit, shared, tmp_path):
    report = _export(vit, shared, tmp_path, "trt-int8")
    d = report.to_dict()
    assert report.passed and abs(d["accuracy"]["delta_pts"]) <= 0.5 and d["parity"]["top1_agreement"] >= 0.98
    model = onnx.load(str(tmp_path / "b" / "model.int8.qdq.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    consumers = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.op_type)
    n_dq = 0
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zp = inits[n.input[2]]
            assert zp.dtype == np.int8 and not zp.any(), n.name  # symmetric int8
        if n.op_type == "DequantizeLinear":
            n_dq += 1
            assert set(consumers.get(n.output[0], [])) <= {"Conv", "MatMul", "Gemm"}, n.name  # inputs only
            if inits[n.input[1]].size > 1:  # per-channel: a weight
                assert inits[n.input[1]].ndim == 1
    assert n_dq > 20
    # The attention core stays float: exactly the Q.K^T and attn.V MatMuls of every block (two
    # per block) get no DequantizeLinear input; with the classifier head (float in every INT8
    # recipe) they are the nodes the report lists as float.
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    float_compute = {n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm")
                     and not any(producer.get(i) == "DequantizeLinear" for i in n.input)}
    head = set(report.artifact.details["float_head"])
    assert len(head) == 1 and head <= float_compute
    assert len(float_compute - head) == 2 * vit.card.config["depth"]
    assert float_compute == set(report.artifact.details["float_nodes"])


def test_cpu_int8_qdq_is_rejected_by_the_tensorrt_lint(vit, shared, tmp_path):
    calib = load_calibration("synthetic", vit.card.preprocess, 32)
    export_target(vit, ExportRequest(target="ort-int8", out=tmp_path / "b", eval_n=50, calibration=calib,
                                     bench=FAST), shared)
    bad = errors(lint_model(onnx.load(str(tmp_path / "b" / "model.int8.onnx"))))
    assert bad and any("zero point" in f.message for f in bad)


def _graph(nodes, inputs, outputs, inits=(), opset=20):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


X = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 8])


@pytest.mark.parametrize("case, needle", [
    ("opset", "outside TensorRT 10's ONNX parser range"),
    ("domain", "not an ONNX standard op"),
    ("unsupported", "not supported by TensorRT's ONNX parser"),
    ("ln_outputs", "supports only the first output"),
    ("runtime_axes", "TensorRT needs constant axes"),
    ("type", "input 'x' is FP64"),
])
def test_lint_findings(case, needle):
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    scale = numpy_helper.from_array(np.ones(8, np.float32), "s")
    bias = numpy_helper.from_array(np.zeros(8, np.float32), "b")
    if case == "opset":
        m = _graph([helper.make_node("Relu", ["x"], ["y"], name="r")], [X], [y], opset=25)
    elif case == "domain":
        m = _graph([helper.make_node("FusedGelu", ["x"], ["y"], name="g", domain="com.microsoft")], [X], [y])
        m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    elif case == "unsupported":
        m = _graph([helper.make_node("BitwiseNot", ["x"], ["y"], name="bn")], [X], [y])
    elif case == "ln_outputs":
        mean = helper.make_tensor_value_info("mean", TensorProto.FLOAT, None)
        m = _graph([helper.make_node("LayerNormalization", ["x", "s", "b"], ["y", "mean"], name="ln")],
                   [X], [y, mean], [scale, bias])
    elif case == "runtime_axes":
        m = _graph([helper.make_node("Shape", ["x"], ["shp"], name="shape", start=2),
                    helper.make_node("ReduceMean", ["x", "shp"], ["y"], name="rm")], [X], [y])
    else:
        x64 = helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["batch", 4, 8])
        m = _graph([helper.make_node("Softmax", ["x"], ["y"], name="sm")], [x64], [y])
    bad = errors(lint_model(m, "10"))
    assert any(needle in f.message for f in bad), [f.message for f in bad]


def test_lint_cli_exit_codes(vit, shared, tmp_path, capsys):
    export_target(vit, ExportRequest(target="onnx-fp32", out=tmp_path / "ok", eval_n=20, bench=FAST), shared)
    assert main(["lint", str(tmp_path / "ok" / "model.onnx")]) == 0
    bad = _graph([helper.make_node("BitwiseNot", ["x"], ["y"], name="bn")], [X],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    onnx.save(bad, str(tmp_path / "bad.onnx"))
    assert main(["lint", str(tmp_path / "bad.onnx")]) == 7
    assert "BitwiseNot" in capsys.readouterr().err
    assert main(["lint", str(tmp_path / "missing.onnx")]) == 3


@pytest.mark.skipif(why_no_engine() is None, reason="TensorRT + GPU present")
def test_require_engine_fails_fast_without_tensorrt(tmp_path, capsys):
    code = main(["export", "vit-tiny", "--target", "trt-fp16", "--out", str(tmp_path / "b"), "--trt-require-engine"])
    assert code == 5 and "--trt-require-engine" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


@pytest.mark.skipif(why_no_engine() is None, reason="TensorRT + GPU present")
def test_kit_scripts_explain_missing_tensorrt(vit, shared, tmp_path):
    _export(vit, shared, tmp_path, "trt-fp32")
    kit = tmp_path / "b"
    shutil.copytree(kit, tmp_path / "device")  # as if copied to the device
    helpers = subprocess.run([sys.executable, "build_engine.py", "--help"], cwd=tmp_path / "device",
                             capture_output=True, text=True)
    assert helpers.returncode == 0 and "--max-batch" in helpers.stdout
    for script, code in (("build_engine.py", 5), ("verify_engine.py", 5)):
        proc = subprocess.run([sys.executable, script], cwd=tmp_path / "device", capture_output=True, text=True)
        assert proc.returncode == code, proc.stderr
        assert "TensorRT" in proc.stderr and "Traceback" not in proc.stderr
    # the kit's comparison is plain numpy: check it with real reference data
    sys.path.insert(0, str(tmp_path / "device"))
    try:
        import verify_engine  # the kit's own module

        ref = np.load(tmp_path / "device" / "reference.npz")["images/logits"]
        assert verify_engine.compare(ref, ref)["max_abs"] == 0.0
        assert verify_engine.compare(ref, -ref)["cosine_min"] < 0
    finally:
        sys.path.pop(0)
        sys.modules.pop("verify_engine", None)
        sys.modules.pop("engine", None)
        sys.modules.pop("device_profile", None)


def _stubs_1013(tmp_path: Path) -> Path:
    """The tensorrt-stubs 10.13 files, with the fixes they need to parse (see shared/trt/README)."""
    try:
        dist = metadata.distribution("tensorrt-stubs")
    except metadata.PackageNotFoundError:
        pytest.skip("tensorrt-stubs not installed (the README test command installs it with --no-deps)")
    out = tmp_path / "stubs-10.13"
    for f in dist.files or []:
        if f.suffix == ".pyi" or f.name == "py.typed":
            src = Path(dist.locate_file(f))
            dst = out / f
            dst.parent.mkdir(parents=True, exist_ok=True)
            text = src.read_text() if f.suffix == ".pyi" else ""
            text = re.sub(r"^import tensorrt_libs as tensorrt_libs\n", "", text, flags=re.M)
            text = text.replace(", 'tensorrt_libs'", "")
            text = re.sub(r"([(,] ?)in: ", r"\1in_: ", text)
            text = text.replace("channel_axis: int)", "channel_axis: int = ...)")
            dst.write_text(text)
    return out


def _stubs_114() -> Path:
    path = Path(os.environ.get("VITEDGE_TRT_STUBS_11", REPO.parent / "shared" / "trt" / "stubs-11.4"))
    if not (path / "tensorrt").is_dir():
        pytest.skip(f"TensorRT 11.4 stubs not found at {path} (CI has ../shared/trt/stubs-11.4)")
    return path


@pytest.mark.parametrize("version", ["10.13", "11.4"])
def test_tensorrt_code_type_checks_against_the_stubs(tmp_path, version):
    stubs = _stubs_1013(tmp_path) if version == "10.13" else _stubs_114()
    cfg = tmp_path / "mypy.ini"
    cfg.write_text("[mypy]\nstrict = True\nwarn_unreachable = True\nfollow_imports = silent\n"
                   "[mypy-tensorrt,tensorrt.*,tensorrt_bindings,tensorrt_bindings.*]\nignore_errors = True\n"
                   "[mypy-cuda,cuda.*]\nignore_missing_imports = True\n")
    target = REPO / "vitedge" / "trt_kit" / "engine.py"
    env = {**os.environ, "MYPYPATH": str(stubs)}
    proc = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(cfg), "--no-incremental",
                           "--cache-dir", str(tmp_path / "cache"), str(target)],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The check has teeth: TensorRT 11 removed the FP16 builder flag, and the stubs know it.
    broken = tmp_path / "broken.py"
    broken.write_text(target.read_text().replace(
        "config.clear_flag(trt.BuilderFlag.TF32)", "config.set_flag(trt.BuilderFlag.FP16)"))
    proc = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(cfg), "--no-incremental",
                           "--cache-dir", str(tmp_path / "cache"), str(broken)],
                          capture_output=True, text=True, env=env)
    if version == "11.4":
        assert proc.returncode != 0 and "FP16" in proc.stdout
    else:
        assert proc.returncode == 0, proc.stdout  # still valid (deprecated) on 10.x


# -- real TensorRT: run wherever TensorRT and a GPU exist ----------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("target", ["trt-fp32", "trt-fp16", "trt-int8"])
def test_real_engine_matches_the_reference(vit, shared, tmp_path, target):
    reason = why_no_engine()
    if reason:
        pytest.skip(f"needs TensorRT + a CUDA GPU: {reason}")
    report = _export(vit, shared, tmp_path, target)
    assert report.artifact.runtime == "tensorrt" and report.artifact.predicted_by is None
    assert report.passed, report.to_dict()["parity"]["checks"]
    assert main(["verify", str(tmp_path / "b")]) == 0
    proc = subprocess.run([sys.executable, "verify_engine.py"], cwd=tmp_path / "b", capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["latency_ms"]["gpu_p50"] > 0


# -- the kit's device profile and throughput: numpy + the standard library, so they run here ----

KIT_DIR = REPO / "vitedge" / "trt_kit"
PROFILE = REPO / "vitedge" / "kit_common" / "device_profile.py"  # shipped beside the kit scripts


@pytest.fixture
def kit(tmp_path):
    """verify_engine.py imported from a copy of the kit, as on the device (engine.py beside it)."""
    for name in ("engine.py", "verify_engine.py"):
        shutil.copy(KIT_DIR / name, tmp_path / name)
    shutil.copy(PROFILE, tmp_path / PROFILE.name)
    yield from import_kit_script(tmp_path, "verify_engine.py", ("engine", "device_profile"))


class FakeTrtEngine:
    """Stand-in for a TensorRT engine, which cannot exist here (no GPU, no TensorRT): "logits"
    are a fixed function of the input, so the kit's parity, profile and sweep run end to end."""

    events: list = []

    def __init__(self, path, share=None):
        if not Path(path).is_file():
            raise FileNotFoundError(path)
        self.path, self.forked = path, share is not None
        self.io = [SimpleNamespace(name="input", is_input=True, profile=((1, 3, 8, 8), (1, 3, 8, 8), (4, 3, 8, 8))),
                   SimpleNamespace(name="logits", is_input=False, profile=())]
        self.engine = SimpleNamespace(device_memory_size_v2=3 * 2**20)
        self.events.append("fork" if share else "load")

    @staticmethod
    def logits(x):
        return x.reshape(len(x), -1)[:, :10] * 2.0

    def infer(self, feed, time_gpu=False):
        self.events.append("infer")
        return {"logits": self.logits(np.asarray(feed["input"], np.float32))}, 0.1 if time_gpu else None

    def fork(self):
        return FakeTrtEngine(self.path, share=self)

    def close(self):
        self.events.append("close-fork" if self.forked else "close")


@pytest.mark.parametrize("broken", [False, True])
def test_kit_verify_main_end_to_end_with_a_stand_in_engine(kit, tmp_path, monkeypatch, capsys, broken):
    x = np.random.default_rng(1).standard_normal((4, 3, 8, 8)).astype(np.float32)
    ref = FakeTrtEngine.logits(x) + (1.0 if broken else 0.0)
    np.savez(tmp_path / "reference.npz", **{"images/input": x, "images/logits": ref})
    (tmp_path / "kit.json").write_text(json.dumps({
        "input_name": "input", "output_name": "logits", "build": {"input_shape": [3, 8, 8]},
        "tolerance": {"max_abs": 1e-4, "cosine_min": 0.999, "top1_agreement": None}}))
    (tmp_path / "model.engine").write_bytes(b"stand-in")
    FakeTrtEngine.events = []
    monkeypatch.setattr(kit, "TrtEngine", FakeTrtEngine)
    monkeypatch.setattr(kit, "require_tensorrt", lambda: FakeTrtEngine.events.append("import"))
    monkeypatch.setattr(kit, "import_cudart", lambda: SimpleNamespace())  # no cudaMemGetInfo: GPU memory None
    monkeypatch.setattr(kit, "gpu_available", lambda: None)
    monkeypatch.setattr(sys.modules["device_profile"], "STEADY_BUDGET_S", 0.05)
    monkeypatch.setattr(sys.modules["device_profile"], "SWEEP_MEASURE_S", 0.05)
    monkeypatch.setattr(sys, "argv", ["verify_engine.py", "--runs", "3"])
    assert kit.main() == (4 if broken else 0)
    out, err = capsys.readouterr()
    d = json.loads(out)
    assert {"parity", "tolerance", "latency_ms", "batch", "passed"} <= set(d) and d["passed"] is not broken
    dp = d["device_profile"]
    assert dp["frame"] == "1x3x8x8 float32" and dp["gpu_memory"]["context_activation_mb"] == 3.0
    assert dp["steady"]["runs"] >= 3 and dp["load_warm_ms"] >= 0
    t = d["throughput"]
    assert [(p["batch"], p["streams"]) for p in t["points"]] == [(1, 1), (1, 2), (4, 1), (4, 2)]  # profile 1..4
    assert "execution context" in t["setting"] and t["frame"] == "3x8x8 float32"
    # vitedge's order: import, cold load, first inference, steady, close, warm load, then the rest
    ev = FakeTrtEngine.events
    assert ev[:3] == ["import", "load", "infer"] and ev.index("close") < ev.index("load", 2) < ev.index("fork")
    assert ev.count("fork") == ev.count("close-fork") == 2
    assert "device profile: peak" in err and "throughput:" in err
    assert ("parity failed" in err) is broken


def test_kit_verify_exits_5_without_tensorrt_and_offers_no_throughput(tmp_path):
    if why_no_engine() is None:
        pytest.skip("TensorRT + GPU present")
    for name in ("engine.py", "verify_engine.py"):
        shutil.copy(KIT_DIR / name, tmp_path / name)
    shutil.copy(PROFILE, tmp_path / PROFILE.name)
    (tmp_path / "kit.json").write_text(json.dumps({"input_name": "input", "output_name": "logits",
                                                   "build": {"input_shape": [3, 8, 8]}, "tolerance": {}}))
    proc = subprocess.run([sys.executable, "verify_engine.py"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 5 and "TensorRT" in proc.stderr and "Traceback" not in proc.stderr
    helps = subprocess.run([sys.executable, "verify_engine.py", "--help"], cwd=tmp_path, capture_output=True,
                           text=True)
    assert helps.returncode == 0 and "--no-throughput" in helps.stdout and "device_profile" in helps.stdout
