"""Export to ONNX + runners + parity + latency: the spine, on real runtimes."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
import torch
from cores import INTERLEAVED, THREADS
from no_torch import NO_TORCH

from vitedge.card import ModelCard
from vitedge.cli.main import main
from vitedge.errors import InputError, UsageError
from vitedge.export.metadata import card_from_metadata, read_metadata
from vitedge.export.onnx_export import ExportConfig, export_onnx
from vitedge.models.resolve import load_model
from vitedge.pipeline import BenchConfig, ExportRequest, export_target
from vitedge.runtimes.openvino_runner import OpenVinoRunner
from vitedge.runtimes.ort_runner import OrtRunner
from vitedge.targets.registry import Artifact, Hooks, Target, register_target

FAST_BENCH = BenchConfig(warmup=2, min_runs=5, budget_s=0.2)


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    """The built-in vit-tiny exported once to ONNX (dynamic batch)."""
    loaded = load_model("vit-tiny")
    path = tmp_path_factory.mktemp("vit") / "model.onnx"
    info = export_onnx(loaded.module, loaded.card, path)
    return loaded, path, info


def torch_logits(module, x):
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def test_dynamic_batch_1_and_5_on_the_same_file(vit):
    loaded, path, info = vit
    assert info.exporter == "dynamo" and info.dynamic_batch and info.opset == 20
    model = onnx.load(str(path))
    ops = {n.op_type for n in model.graph.node}
    assert "LayerNormalization" in ops and "Gelu" in ops  # opset 20 ops, not decompositions
    dim0 = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.dim_value  # symbolic batch, nothing baked in
    with OrtRunner(path, threads=THREADS) as runner:
        for batch in (1, 5):
            x = np.random.default_rng(batch).standard_normal((batch, 3, 64, 64)).astype(np.float32)
            got = runner.infer({"input": x})["logits"]
            np.testing.assert_allclose(got, torch_logits(loaded.module, x), atol=1e-4)


def test_openvino_targets_start_from_an_onnx_without_the_gemm_rewrite(vit, tmp_path):
    """onnxslim's FusionGemm rewrites the MLPs' MatMul+Add on 3-D activations as Reshape -> Gemm
    -> Reshape, which keeps OpenVINO from fusing each fc1's GELU into the FullyConnected (why:
    vitedge.targets.openvino). The OpenVINO targets export without it; the others keep it."""
    from vitedge.targets.registry import get_target

    loaded = vit[0]
    cfg = ExportConfig(static_batch=1)  # as auto builds them: the rewrite needs a static shape
    assert get_target("onnx-fp32").export_config(cfg) is cfg
    ov_cfg = get_target("ov-int8").export_config(cfg)
    assert ov_cfg.slim_skip == ("FusionGemm",) and ov_cfg.static_batch == 1

    def gemms(c, name):
        info = export_onnx(loaded.module, loaded.card, tmp_path / name, c)
        return [n.op_type for n in onnx.load(str(tmp_path / name)).graph.node].count("Gemm"), info

    rewritten, _ = gemms(cfg, "default.onnx")
    exporters_own, _ = gemms(ExportConfig(static_batch=1, slim=False), "raw.onnx")
    kept, info = gemms(ov_cfg, "ov.onnx")
    assert rewritten >= exporters_own + 12  # fc1 and fc2 of 6 blocks (else this test tests nothing)
    assert kept == exporters_own and info.slim["skipped_fusions"] == ["FusionGemm"]
    x = np.random.default_rng(3).standard_normal((1, 3, 64, 64)).astype(np.float32)
    with OpenVinoRunner(tmp_path / "ov.onnx", threads=THREADS) as runner:
        np.testing.assert_allclose(runner.infer({"input": x})["logits"], torch_logits(loaded.module, x), atol=1e-4)


def test_metadata_round_trip(vit):
    loaded, path, _ = vit
    props = read_metadata(onnx.load(str(path), load_external_data=False))
    card = card_from_metadata(props)
    assert isinstance(card, ModelCard)
    assert card.to_dict() == loaded.card.to_dict()
    assert json.loads(props["vitedge.export"])["exporter"] == "dynamo"


def test_plain_onnxruntime_runs_it_without_vitedge(vit, tmp_path):
    loaded, path, _ = vit
    x = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code = textwrap.dedent(f"""
        import sys, numpy as np, onnxruntime as ort
        sys.modules["vitedge"] = None  # nothing from vitedge
        s = ort.InferenceSession({str(path)!r}, providers=["CPUExecutionProvider"])
        np.save({str(tmp_path / 'y.npy')!r}, s.run(None, {{"input": np.load({str(tmp_path / 'x.npy')!r})}})[0])
    """)
    subprocess.run([sys.executable, "-c", code], check=True)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), torch_logits(loaded.module, x), atol=1e-4)


@pytest.mark.slow
def test_external_data_path(tmp_path):
    loaded = load_model("vit-tiny")
    path = tmp_path / "model.onnx"
    info = export_onnx(loaded.module, loaded.card, path, ExportConfig(external_data_threshold=1_000_000))
    assert info.external_data
    assert (tmp_path / "model.onnx.data").stat().st_size > 10_000_000  # the weights
    assert path.stat().st_size < 1_000_000  # the graph only
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with OrtRunner(path, threads=THREADS) as r:
        np.testing.assert_allclose(r.infer({"input": x})["logits"], torch_logits(loaded.module, x), atol=1e-4)


def test_static_batch_and_opset_flags(tmp_path):
    loaded = load_model("convnext-zepto")
    path = tmp_path / "m.onnx"
    info = export_onnx(loaded.module, loaded.card, path, ExportConfig(opset=18, static_batch=4))
    model = onnx.load(str(path))
    assert info.opset == 18 and model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 4
    with OrtRunner(path, threads=THREADS) as r:
        with pytest.raises(InputError, match="dimension 0 must be 4"):
            r.infer({"input": np.zeros((2, 3, 64, 64), np.float32)})
    with pytest.raises(UsageError, match="out of range"):
        ExportConfig(opset=12)
    with pytest.raises(UsageError, match="must be >= 1"):
        ExportConfig(static_batch=0)


@pytest.mark.parametrize("feed, needle", [
    ({"input": np.zeros((1, 3, 64, 64), np.float64)}, "dtype float64, expected float32"),
    ({"input": np.zeros((3, 64, 64), np.float32)}, "rank 3"),
    ({"input": np.zeros((1, 1, 64, 64), np.float32)}, "dimension 1 must be 3"),
    ({"pixels": np.zeros((1, 3, 64, 64), np.float32)}, "feed has inputs"),
    ({"input": np.zeros((0, 3, 64, 64), np.float32)}, "is empty"),
    ({"input": [[1.0]]}, "must be a numpy array"),
])
@pytest.mark.parametrize("runner_cls", [OrtRunner, OpenVinoRunner])
def test_runner_input_validation(vit, feed, needle, runner_cls):
    _, path, _ = vit
    with runner_cls(path, threads=1) as r:
        with pytest.raises(InputError, match=needle):
            r.infer(feed)


def test_runner_must_be_activated(vit):
    _, path, _ = vit
    with pytest.raises(RuntimeError, match="activate"):
        OrtRunner(path).infer({"input": np.zeros((1, 3, 64, 64), np.float32)})


def test_openvino_fp32_matches_and_reports_its_precision(vit):
    loaded, path, _ = vit
    x = np.random.default_rng(0).standard_normal((4, 3, 64, 64)).astype(np.float32)
    with OpenVinoRunner(path, threads=THREADS, inference_precision="f32") as r:
        np.testing.assert_allclose(r.infer({"input": x})["logits"], torch_logits(loaded.module, x), atol=1e-4)
        assert r.info()["actual"]["INFERENCE_PRECISION_HINT"] in ("f32", "<Type: 'float32'>", "float32")
    from vitedge.sysinfo import cpu_flags

    if "avx512_bf16" in cpu_flags() or "amx_bf16" in cpu_flags():
        # The trap the explicit hint avoids: left alone, the CPU plugin computes in bf16 here.
        with OpenVinoRunner(path, threads=THREADS, inference_precision=None) as r:
            assert "bf16" in r.info()["actual"]["INFERENCE_PRECISION_HINT"].lower() or \
                "bfloat16" in r.info()["actual"]["INFERENCE_PRECISION_HINT"].lower()


@pytest.mark.slow
@pytest.mark.parametrize("model", ["vit-tiny", "convnext-zepto"])
def test_builtin_models_meet_the_fp32_goal(tmp_path, model):
    report = export_target(load_model(model), ExportRequest(
        target="onnx-fp32", out=tmp_path / "b", eval_n=500, bench=FAST_BENCH, threads=THREADS))
    d = report.to_dict()
    assert report.passed
    assert d["parity"]["max_abs"] <= 1e-4 and d["parity"]["top1_agreement"] == 1.0
    assert d["accuracy"]["reference"] == d["accuracy"]["artifact"] > 0.9
    for key in ("target", "artifact", "passed", "parity", "accuracy", "latency_ms", "artifact_bytes"):
        assert key in json.loads((tmp_path / "b" / "report.json").read_text())
    assert d["latency_ms"]["artifact"]["p50"] > 0 and d["latency_ms"]["reference"]["p50"] > 0
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.onnx", "reference.npz", "report.json", "report.md", "README.md"}
    assert "| max_abs |" in (tmp_path / "b" / "report.md").read_text()


@pytest.mark.slow
def test_timm_vit_checkpoint_exports_with_parity(tmp_path):
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    src = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=64)
    save_file(src.state_dict(), str(tmp_path / "w.safetensors"))
    code = main(["export", *INTERLEAVED, "timm:vit_tiny_patch16_224", "--weights", str(tmp_path / "w.safetensors"),
                 "--img-size", "64", "--out", str(tmp_path / "b"), "--eval-n", "50", "--bench-budget", "0.2"])
    assert code == 0
    d = json.loads((tmp_path / "b" / "report.json").read_text())
    assert d["passed"] and d["parity"]["max_abs"] <= 1e-4
    # --timing interleaved: timed in the export's process, so no device profile; the report says so
    assert d["latency_measured"] == "interleaved in one process" and d["device_profile"] is None
    assert d["latency_ms"]["artifact"]["p50"] > 0


def _perturbed(ctx):
    """A real onnx-fp32 artifact whose classifier bias was nudged after export."""
    from onnx import numpy_helper

    from vitedge.targets.onnx import build_onnx_fp32

    art = build_onnx_fp32(ctx)
    path = ctx.bundle_dir / art.main_file
    model = onnx.load(str(path))
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.ndim == 1 and arr.shape[0] == 10:  # the head bias
            init.CopyFrom(numpy_helper.from_array(arr + np.float32(0.05), init.name))
            break
    onnx.save(model, str(path))
    return Artifact(**{**art.__dict__})


register_target(Target(name="test-perturbed-onnx", runtime="onnxruntime", precision="fp32",
                       description="test only: onnx-fp32 with a perturbed bias", hooks=Hooks(build=_perturbed),
                       in_matrix=False))


@pytest.mark.slow
def test_parity_failure_on_a_perturbed_artifact_exits_non_zero(tmp_path, capsys):
    code = main(["export", *INTERLEAVED, "vit-tiny", "--target", "test-perturbed-onnx", "--out", str(tmp_path / "b"),
                 "--eval-n", "50", "--bench-budget", "0.2"])
    err = capsys.readouterr().err
    assert code == 4
    assert "max_abs" in err and "FAILED" in err
    assert json.loads((tmp_path / "b" / "report.json").read_text())["passed"] is False


def test_existing_output_is_refused_without_force(tmp_path, capsys):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep.txt").write_text("mine")
    code = main(["export", "vit-tiny", "--out", str(tmp_path / "b"), "--eval-n", "20"])
    assert code == 6 and "--force" in capsys.readouterr().err
    assert (tmp_path / "b" / "keep.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["b"]  # no temp dirs left behind


@pytest.mark.slow
def test_device_side_runs_without_torch(tmp_path):
    report = export_target(load_model("vit-tiny"), ExportRequest(
        target="onnx-fp32", out=tmp_path / "b", eval_n=20, bench=FAST_BENCH, threads=1))
    assert report.passed
    code = NO_TORCH + textwrap.dedent(f"""
        import numpy as np
        from vitedge.runtimes.ort_runner import OrtRunner
        from vitedge.runtimes.openvino_runner import OpenVinoRunner
        x = np.zeros((2, 3, 64, 64), np.float32)
        for cls in (OrtRunner, OpenVinoRunner):
            with cls({str(tmp_path / 'b' / 'model.onnx')!r}, threads=1) as r:
                assert r.infer({{"input": x}})["logits"].shape == (2, 10)
        from vitedge.cli.main import main
        assert main(["bench", {str(tmp_path / 'b')!r}, "--batch", "1,2", "--budget", "0.2"]) == 0
        try:
            import torch
        except ImportError:
            print("TORCH-BLOCKED")
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "TORCH-BLOCKED" in proc.stdout


class _DataDependent(torch.nn.Module):
    """Python control flow on tensor values: torch.export refuses it, TorchScript traces it."""

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(3, 10)

    def forward(self, x):
        pooled = x.mean(dim=(2, 3))
        if bool(pooled.sum() > -1e9):  # data-dependent branch
            pooled = pooled * 2
        return self.head(pooled)


def test_torchscript_fallback_is_recorded(tmp_path):
    card = load_model("vit-tiny").card
    module = _DataDependent().eval()
    info = export_onnx(module, card, tmp_path / "m.onnx")
    assert info.exporter == "torchscript" and info.fallback_reason
    x = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)
    with OrtRunner(tmp_path / "m.onnx") as r:  # dynamic batch survives the fallback too
        np.testing.assert_allclose(r.infer({"input": x})["logits"], torch_logits(module, x), atol=1e-5)
    props = read_metadata(onnx.load(str(tmp_path / "m.onnx")))
    assert json.loads(props["vitedge.export"])["exporter"] == "torchscript"
    from vitedge.errors import ExportError

    with pytest.raises(ExportError, match="dynamo ONNX export failed"):
        export_onnx(module, card, tmp_path / "n.onnx", ExportConfig(exporter="dynamo"))


def test_the_export_cache_copies_the_same_export_and_misses_on_what_changes_the_graph(tmp_path, monkeypatch):
    from vitedge.export import cache, onnx_export

    card = load_model("vit-tiny").card
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                 torch.nn.Linear(4, len(card.classes))).eval()
    monkeypatch.setenv(cache.ENV, str(tmp_path / "cache"))  # this test's own cache, not the session's
    (tmp_path / "a").mkdir()
    first = export_onnx(module, card, tmp_path / "a" / "model.onnx")
    assert len(list((tmp_path / "cache").rglob("info.json"))) == 1
    real = onnx_export._export_onnx

    def no_export(*a, **k):
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx_export, "_export_onnx", no_export)
    (tmp_path / "b").mkdir()
    again = export_onnx(module, card, tmp_path / "b" / "model.onnx")  # a hit: nothing exported
    assert (tmp_path / "b" / "model.onnx").read_bytes() == (tmp_path / "a" / "model.onnx").read_bytes()
    assert again.to_dict() == first.to_dict() and again.path == tmp_path / "b" / "model.onnx"
    # what changes the graph changes the key: a weight, a plain attribute forward may read, the config
    changed_weight = copy.deepcopy(module)
    with torch.no_grad():
        changed_weight[3].bias[0] += 1
    flagged = copy.deepcopy(module)
    flagged[1].fused = True
    for m, cfg in ((changed_weight, ExportConfig()), (flagged, ExportConfig()), (module, ExportConfig(static_batch=1))):
        with pytest.raises(AssertionError, match="exported again"):
            export_onnx(m, card, tmp_path / "b" / "model.onnx", cfg)
    # an entry damaged by hand is exported again, not an error; a cache that cannot be written
    # never fails the export
    monkeypatch.setattr(onnx_export, "_export_onnx", real)
    next((tmp_path / "cache").rglob("model.onnx")).unlink()
    assert export_onnx(module, card, tmp_path / "b" / "model.onnx").to_dict() == first.to_dict()
    (tmp_path / "not-a-dir").write_text("x")
    monkeypatch.setenv(cache.ENV, str(tmp_path / "not-a-dir"))
    assert export_onnx(module, card, tmp_path / "b" / "model.onnx").exporter == "dynamo"
