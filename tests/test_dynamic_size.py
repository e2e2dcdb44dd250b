"""--dynamic-size: the ONNX keeps a dynamic height/width where the model allows it, and the
artifact matches PyTorch at sizes other than the one it was exported at; models and targets
that cannot take it say so up front."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cores import INTERLEAVED

from vitedge.cli.main import main

pytestmark = pytest.mark.slow  # a few exports


def _ort(path, x):
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def _torch(bundle_card_source, x):
    from vitedge.models.resolve import load_model

    m = load_model(bundle_card_source).module.eval()
    with torch.no_grad():
        return m(torch.from_numpy(x)).numpy()


def test_convolutional_model_runs_at_other_sizes(tmp_path):
    out = tmp_path / "b"
    assert main(["export", *INTERLEAVED, "convnext-zepto", "-t", "onnx-fp32", "--dynamic-size", "--out", str(out),
                 "--eval-n", "50"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["input"]["shape"] == ["batch", 3, "height", "width"]
    assert json.loads((out / "report.json").read_text())["export"]["dynamic_size"] is True
    for size in (64, 96, 128):
        x = np.random.default_rng(size).standard_normal((2, 3, size, size)).astype(np.float32)
        got, ref = _ort(out / "model.onnx", x), _torch("convnext-zepto", x)
        assert np.abs(got - ref).max() < 1e-4, size
    assert main(["verify", str(out)]) == 0


def test_timm_vit_is_rebuilt_with_dynamic_img_size(tmp_path):
    pytest.importorskip("timm")
    from vitedge.models.resolve import load_model

    out = tmp_path / "b"
    assert main(["export", *INTERLEAVED, "timm:vit_tiny_patch16_224", "--random-init", "--img-size", "64", "-t", "onnx-fp32",
                 "--dynamic-size", "--out", str(out), "--eval-n", "16"]) == 0
    card = json.loads((out / "manifest.json").read_text())["card"]
    assert card["config"]["dynamic_img_size"] is True  # rebuilt so that timm resamples in the graph
    x = np.random.default_rng(0).standard_normal((1, 3, 96, 96)).astype(np.float32)
    got = _ort(out / "model.onnx", x)
    assert got.shape == (1, 1000) and np.isfinite(got).all()
    # Parity at other sizes against PyTorch (the CLI's random weights are not kept, so on a
    # module built the same way and exported here):
    from vitedge.export.config import ExportConfig
    from vitedge.export.onnx_export import export_onnx

    loaded = load_model("timm:vit_tiny_patch16_224", random_init=True,
                        overrides={"img_size": 64, "dynamic_img_size": True, "num_classes": 10})
    info = export_onnx(loaded.module, loaded.card, tmp_path / "m.onnx", ExportConfig(dynamic_size=True))
    with torch.no_grad():
        for size in (64, 96, 160):
            x = np.random.default_rng(size).standard_normal((1, 3, size, size)).astype(np.float32)
            ref = loaded.module(torch.from_numpy(x)).numpy()
            assert np.abs(_ort(info.path, x) - ref).max() < 1e-4, size


@pytest.mark.parametrize("args, needle", [
    (["vit-tiny", "-t", "onnx-fp32"], "fixed-size position tables"),
    (["convnext-zepto", "-t", "trt-fp16"], "trt-fp16 builds fixed-size artifacts"),
    (["convnext-zepto", "-t", "et-fp32"], "et-fp32 builds fixed-size artifacts"),
])
def test_models_and_targets_that_cannot_take_it_say_so(tmp_path, capsys, args, needle):
    code = main(["export", *args, "--dynamic-size", "--out", str(tmp_path / "b")])
    assert code == 2 and needle in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
