"""CI's sample of the timm zoo (`benchmarks/zoo.py` runs the whole list into docs/zoo.md): the
smallest member of each family exported through the real pipeline to onnx-fp32 and ort-int8 with
random weights, judged by the untrained gate; and that gate itself on given logits."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cores import INTERLEAVED

from vitedge.verify.parity import compare
from vitedge.verify.tolerances import UNTRAINED_NOTE, tolerance_for

FAST_BENCH = {"warmup": 1, "min_runs": 3, "budget_s": 0.2}

# (timm name, input size): the smallest member of each family at the smallest size it runs at.
# Swin/SwinV2/BEiT/CaiT/DINOv2 (>= 20M parameters or minutes of export) run in the zoo only.
SAMPLE = [
    ("vit_tiny_patch16_224", 32),  # ViT / DeiT
    ("deit_tiny_distilled_patch16_224", 32),  # two heads
    ("eva02_tiny_patch14_224", 56),  # RoPE, SwiGLU
    ("convnextv2_atto", 32),  # GRN: ORT's symbolic shape inference fails, the fallback is used
    ("resnet18", 32),  # CNN baseline
    ("levit_128s", 64),  # hybrid, attention biases
    ("mobilevit_xxs", 64),  # hybrid
    ("mixer_s16_224", 32),  # unknown family: the generic recipe
]


def _flat_logits(n: int = 64, c: int = 10, seed: int = 0) -> np.ndarray:
    """Logits of an untrained model: a large common offset, tiny differences between classes."""
    rng = np.random.default_rng(seed)
    return (3.0 + 0.01 * rng.standard_normal((n, c))).astype(np.float32)


def test_untrained_gate_ignores_arg_max_flips_but_catches_a_broken_artifact():
    ref = _flat_logits()
    rng = np.random.default_rng(1)
    # Sound INT8: noise 12% of the class scores' std (18 dB); flips many arg-maxes of flat logits.
    good = ref + 0.0012 * rng.standard_normal(ref.shape).astype(np.float32)
    # Broken recipe: class scores replaced by noise of the same size (the common offset survives,
    # which is why raw cosine alone would call this fine).
    broken = 3.0 + 0.01 * rng.standard_normal(ref.shape).astype(np.float32)
    trained_gate, untrained_gate = tolerance_for("int8"), tolerance_for("int8", untrained=True)
    r_good = compare({"images": {"logits": ref}}, {"images": {"logits": good}}, untrained_gate)
    r_broken = compare({"images": {"logits": ref}}, {"images": {"logits": broken}}, untrained_gate)
    assert r_good.worst("top1_agreement") < 0.98  # the trained gate would fail it on agreement...
    assert not compare({"images": {"logits": ref}}, {"images": {"logits": good}}, trained_gate).passed
    assert r_good.passed, [c.describe() for c in r_good.failures()]  # ...the untrained one does not
    assert r_broken.worst("cosine_mean") > 0.99  # raw cosine is fooled by the common offset
    assert not r_broken.passed and {c.metric for c in r_broken.failures()} >= {"sqnr_db"}
    assert untrained_gate.top1_agreement is None and untrained_gate.max_accuracy_drop is None
    assert trained_gate.top1_agreement is not None  # a trained model keeps the full gate


def test_sqnr_is_of_the_centred_logits():
    ref = _flat_logits()
    shifted = ref + 5.0  # a common offset per sample changes no class score
    r = compare({"s": {"logits": ref}}, {"s": {"logits": shifted}}, tolerance_for("int8", untrained=True))
    assert r.worst("sqnr_db") > 80 and r.worst("err_spread") < 1e-3 and r.passed  # float32 rounding only


@pytest.mark.slow
def test_untrained_int8_calibrates_on_synthetic_by_default_and_says_why(tmp_path):
    from vitedge.cli.main import main

    out = tmp_path / "b"
    code = main(["export", *INTERLEAVED, "vit-tiny", "--random-init", "--num-classes", "7", "--target", "ort-int8",
                 "--out", str(out), "--eval-n", "32"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["calibration"]["source"] == "synthetic"
    assert UNTRAINED_NOTE in report["notes"]
    assert "top1_agreement" not in {c["metric"] for c in report["parity"]["checks"]}


@pytest.mark.slow
@pytest.mark.parametrize("name, size", SAMPLE, ids=[s[0] for s in SAMPLE])
def test_family_sample_exports_and_matches_pytorch(tmp_path, name, size):
    pytest.importorskip("timm")
    from vitedge.calib.source import load_calibration
    from vitedge.models.resolve import load_model
    from vitedge.pipeline import SharedWork, export_target
    from vitedge.request import BenchConfig, ExportRequest

    loaded = load_model(f"timm:{name}", random_init=True, overrides={"img_size": size, "num_classes": 10})
    calib = load_calibration("synthetic", loaded.card.preprocess, 32)
    shared = SharedWork(tmp_path / "shared")
    for target in ("onnx-fp32", "ort-int8"):
        report = export_target(loaded, ExportRequest(
            target=target, out=tmp_path / target, calibration=calib, eval_n=32,
            bench=BenchConfig(**FAST_BENCH)), shared)
        d = report.to_dict()
        assert report.passed, (target, [c.describe() for c in report.parity.failures()])
        assert UNTRAINED_NOTE in d["notes"]
        gated = {c["metric"] for c in d["parity"]["checks"]}
        assert "sqnr_db" in gated and "top1_agreement" not in gated
        assert (tmp_path / target / "manifest.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "levit_128s"])
def test_trt_fp16_graph_of_cnn_and_levit_loads_and_matches(tmp_path, name):
    """Found by the zoo: the FP16 conversion re-typed kept-fp32 ops from stale value_info, and
    ONNX Runtime refused the graph (ResNet's global-pool ReduceMean; LeViT's output casts)."""
    pytest.importorskip("timm")
    from vitedge.models.resolve import load_model
    from vitedge.pipeline import export_target
    from vitedge.request import BenchConfig, ExportRequest

    loaded = load_model(f"timm:{name}", random_init=True, overrides={"img_size": 64, "num_classes": 10})
    report = export_target(loaded, ExportRequest(target="trt-fp16", out=tmp_path / "b", eval_n=16,
                                                 bench=BenchConfig(**FAST_BENCH)))
    assert report.passed, [c.describe() for c in report.parity.failures()]
    assert report.to_dict()["parity"]["sqnr_db"] > 40
