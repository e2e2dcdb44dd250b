"""Which input set the top-1 agreement gate reads: the real images, not the 16 noise tensors."""

from __future__ import annotations

import numpy as np
import pytest
from cores import THREADS

from vitedge.verify.parity import RANDOM_SET, compare
from vitedge.verify.tolerances import tolerance_for


def _logits(n: int, flips: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference logits with a clear winner, and a copy whose first `flips` rows had a near-tie
    for the top (as noise inputs do) that quantisation noise tipped the other way."""
    rng = np.random.default_rng(seed)
    ref = rng.standard_normal((n, 10)).astype(np.float32)
    ref[np.arange(n), rng.integers(0, 10, n)] += 4.0
    for i in range(flips):
        order = np.argsort(ref[i])
        ref[i, order[-2]] = ref[i, order[-1]] - 0.01
    art = ref.copy()
    for i in range(flips):
        order = np.argsort(ref[i])
        art[i, order[-1]], art[i, order[-2]] = ref[i, order[-2]], ref[i, order[-1]]
    return ref, art


def test_one_flip_among_16_noise_inputs_does_not_fail_a_model_that_agrees_on_real_images():
    # Measured case: convnext-zepto on Fashion-MNIST, ort-int8 99.47% agreement on 10,000 test
    # images but 15/16 on noise (one flip = 6.25 points).
    ref_img, art_img = _logits(1000, 5, 0)  # 99.5% agreement on real images
    ref_rnd, art_rnd = _logits(16, 1, 1)  # 93.75% on noise
    r = compare({RANDOM_SET: {"logits": ref_rnd}, "images": {"logits": ref_img}},
                {RANDOM_SET: {"logits": art_rnd}, "images": {"logits": art_img}}, tolerance_for("int8"))
    assert r.worst("top1_agreement") == 0.9375 and r.agreement() == 0.995
    assert r.passed and r.to_dict()["top1_agreement"] == 0.995


def test_agreement_still_fails_on_real_images_and_on_noise_when_it_is_all_there_is():
    ref_img, art_img = _logits(1000, 30, 0)  # 97% < 98%
    ref_rnd, art_rnd = _logits(16, 0, 1)
    r = compare({RANDOM_SET: {"logits": ref_rnd}, "images": {"logits": ref_img}},
                {RANDOM_SET: {"logits": art_rnd}, "images": {"logits": art_img}}, tolerance_for("int8"))
    assert not r.passed and [c.metric for c in r.failures()] == ["top1_agreement"]
    ref_rnd, art_rnd = _logits(16, 1, 1)
    only_noise = compare({RANDOM_SET: {"logits": ref_rnd}}, {RANDOM_SET: {"logits": art_rnd}}, tolerance_for("int8"))
    assert not only_noise.passed and only_noise.agreement() == 0.9375


def test_int8_is_judged_on_images_and_float_precisions_on_noise_too():
    # Calibrated INT8 meets out-of-distribution noise with scales fitted to images: its cosine
    # floors read the images; fp16/bf16 have no calibration, so noise inputs gate them as well.
    rng = np.random.default_rng(0)
    ref_img = rng.standard_normal((500, 10)).astype(np.float32)
    ref_rnd = rng.standard_normal((16, 10)).astype(np.float32)
    art_img = ref_img + 0.01 * rng.standard_normal(ref_img.shape).astype(np.float32)
    art_rnd = ref_rnd.copy()
    art_rnd[0] = -ref_rnd[0]  # one noise input badly off: cosine -1
    ref = {RANDOM_SET: {"logits": ref_rnd}, "images": {"logits": ref_img}}
    art = {RANDOM_SET: {"logits": art_rnd}, "images": {"logits": art_img}}
    int8 = compare(ref, art, tolerance_for("int8"))
    assert int8.worst("cosine_min") < 0 < 0.95 < int8.gated("cosine_min")
    assert int8.passed and int8.to_dict()["cosine_min"] == int8.gated("cosine_min")
    fp16 = compare(ref, art, tolerance_for("fp16"))
    assert not fp16.passed and "cosine_min" in {c.metric for c in fp16.failures()}
    untrained = compare(ref, art, tolerance_for("int8", untrained=True))
    assert untrained.passed  # the untrained INT8 gate reads the images as well



def test_a_gate_on_outputs_that_ignore_the_input_says_it_proves_little():
    from vitedge.verify.parity import MIN_INPUT_DEPENDENCE, input_dependence, proves_little_note

    rng = np.random.default_rng(0)
    varied = rng.standard_normal((8, 10))
    constant = np.tile(rng.standard_normal(10), (8, 1))  # e.g. an untrained Hiera: same logits for every image
    assert input_dependence(varied) > 0.5
    assert input_dependence(constant) < MIN_INPUT_DEPENDENCE
    assert input_dependence(constant + 1e-6 * varied) < MIN_INPUT_DEPENDENCE
    assert "proves little" in proves_little_note(input_dependence(constant), 8)


@pytest.mark.slow
def test_export_of_a_model_that_ignores_its_input_is_flagged(tmp_path):
    import torch

    from vitedge.models.resolve import load_model
    from vitedge.pipeline import export_target
    from vitedge.request import BenchConfig, ExportRequest

    loaded = load_model("vit-tiny")
    with torch.no_grad():
        loaded.module.head.weight.zero_()  # logits = the bias, whatever the image
    report = export_target(loaded, ExportRequest(target="onnx-fp32", out=tmp_path / "b", eval_n=16, threads=THREADS,
                                                 bench=BenchConfig(warmup=1, min_runs=2, budget_s=0.1)))
    d = report.to_dict()
    assert report.passed and d["parity"]["input_dependence"] < 1e-3
    assert any("proves little" in n for n in d["notes"])
