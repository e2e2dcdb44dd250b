"""Which images judge an export, end to end: the user's held-out calibration images, an unlabelled
--eval, and "not judged" when no image of the model's own distribution was given.

The "pretrained" model here is the built-in vit-tiny given other class names: trained weights
that shapes10 no longer stands for (as for a real ImageNet model), and shapes10 images written as
PNG files stand for the user's own photos. Real runtimes, real files; nothing is mocked."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cores import INTERLEAVED, THREADS
from PIL import Image

from vitedge.cli.main import main
from vitedge.models.checkpoint import save_checkpoint
from vitedge.models.resolve import LoadedModel, load_model
from vitedge.pipeline import export_target
from vitedge.request import ExportRequest

pytestmark = pytest.mark.slow
OTHER_CLASSES = tuple(f"class{i}" for i in range(10))


@pytest.fixture(scope="module")
def pretrained():
    base = load_model("vit-tiny")
    return LoadedModel(base.module, base.card.with_(classes=OTHER_CLASSES, source="user.safetensors"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    from vitedge.calib import synthetic

    d = tmp_path_factory.mktemp("photos")
    data = synthetic.render_indices("val", np.arange(40), 64, seed=5)
    for i, img in enumerate(data.images):
        Image.fromarray(np.asarray(img)).save(d / f"photo{i:02d}.png")
    return d


def test_calibration_images_left_over_judge_the_artifact(pretrained, photos, tmp_path, torch_threads):
    from vitedge.calib.source import load_calibration

    calib = load_calibration(str(photos), pretrained.card.preprocess, 300, 0, judges_too=True)
    report = export_target(pretrained, ExportRequest(target="ort-int8", out=tmp_path / "b", calibration=calib,
                                                     threads=THREADS))
    d = report.to_dict()
    assert d["verdict"] == "passed" and report.passed
    assert d["calibration"]["samples"] == 20
    assert "20 of 40 unlabelled images" in d["judged_on"] and "held out of --calib" in d["judged_on"]
    assert d["parity"]["images_n"] == 20 and d["accuracy"]["n"] is None
    # 20 images: agreement is reported, not gated; the per-image cosine is the gate
    gated = {c["metric"] for c in d["parity"]["checks"]}
    assert "top1_agreement" not in gated and "cosine_min" in gated
    assert any("20 judging images" in n for n in d["notes"])
    # the device replays the user's images, not shapes10
    ref = np.load(tmp_path / "b" / "reference.npz")
    assert ref["images/input"].shape == (4, 3, 64, 64)
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["parity"]["verdict"] == "passed" and "held out of --calib" in manifest["parity"]["judged_on"]


def test_int8_without_the_models_own_images_is_not_judged(pretrained, tmp_path, capsys, torch_threads):
    ckpt = save_checkpoint(tmp_path / "user.safetensors", pretrained.module, pretrained.card)
    out = tmp_path / "int8"
    code = main(["export", *INTERLEAVED, str(ckpt), "--target", "ort-int8", "--calib", "synthetic", "--num-calib", "32",
                 "--out", str(out), "--threads", str(THREADS), "--bench-budget", "0.3"])
    printed = capsys.readouterr()
    assert code == 0, printed.err  # not a failure: nothing was judged
    assert "NOT JUDGED" in printed.out
    report = json.loads((out / "report.json").read_text())
    assert report["verdict"] == "not judged" and report["passed"] is False
    assert [c["metric"] for c in report["parity"]["checks"]] == []  # nothing gated; numbers still reported
    assert report["parity"]["cosine_mean"] > 0
    # a float target on the same model is judged as before (the same maths on any input)
    code = main(["export", *INTERLEAVED, str(ckpt), "--target", "onnx-fp32", "--out", str(tmp_path / "fp32"), "--threads", str(THREADS),
                 "--bench-budget", "0.3"])
    assert code == 0
    fp32 = json.loads((tmp_path / "fp32" / "report.json").read_text())
    assert fp32["verdict"] == "passed" and "max_abs" in {c["metric"] for c in fp32["parity"]["checks"]}


def test_unlabelled_eval_folder_and_min_cosine_fallback(pretrained, photos, tmp_path, torch_threads):
    """--eval FLAT_DIR is parity only; --min-cosine searches on unlabelled images."""
    from vitedge.calib.source import load_calibration
    from vitedge.fallback import Budget

    calib = load_calibration("synthetic", pretrained.card.preprocess, 64, 0)
    report = export_target(pretrained, ExportRequest(
        target="ort-int8", out=tmp_path / "b", calibration=calib, eval_data=str(photos), threads=THREADS,
        budget=Budget(min_cosine=0.99999), tolerance={"cosine_mean": 0.99999}, fallback_n=16))
    d = report.to_dict()
    assert d["accuracy"]["n"] is None and d["parity"]["images_n"] == 24  # 40 minus the 16 searched on
    fb = d["fallback"]
    assert fb and "16 of 40 unlabelled images" in fb["search_data"] and fb["before"]["cosine_mean"] < 0.99999
    assert fb["kept_count"] > 0 and fb["after"]["cosine_mean"] > fb["before"]["cosine_mean"]
