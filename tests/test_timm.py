"""timm models by name: local weights only, timm's own preprocessing, identical outputs."""

from __future__ import annotations

import pytest
import torch

from vitedge.errors import UsageError
from vitedge.models.resolve import load_model

timm = pytest.importorskip("timm")


@pytest.mark.parametrize("name, kwargs", [("vit_tiny_patch16_224", {"img_size": 32}),
                                          ("convnextv2_atto", {})])
def test_timm_model_from_a_local_state_dict(tmp_path, name, kwargs):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    src = timm.create_model(name, pretrained=False, num_classes=5, **kwargs).eval()
    path = tmp_path / f"{name}.safetensors"
    save_file(src.state_dict(), str(path))
    loaded = load_model(f"timm:{name}", weights=path, overrides=dict(kwargs))
    assert loaded.card.num_classes == 5  # inferred from the classifier weights
    size = kwargs.get("img_size", 224)
    if "img_size" in kwargs:
        assert loaded.card.preprocess.input_size == (size, size)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert torch.equal(src(x), loaded.module(x))


def test_timm_preprocessing_comes_from_its_pretrained_cfg(tmp_path):
    loaded = load_model("timm:convnext_atto", random_init=True, overrides={"num_classes": 3})
    p = loaded.card.preprocess
    assert p.mean == (0.485, 0.456, 0.406) and p.interpolation == "bicubic"
    assert p.crop_pct == pytest.approx(0.875) and p.input_size == (224, 224)


def test_timm_never_downloads(tmp_path):
    with pytest.raises(UsageError, match="never downloaded"):
        load_model("timm:vit_small_patch16_224")
    # no allowlist: any timm classifier loads; a model without a classifier head is refused
    assert load_model("timm:resnet18", random_init=True, overrides={"img_size": 32}).card.family == "cnn"
    with pytest.raises(UsageError, match="without a classifier head"):
        load_model("timm:resnet18", random_init=True, overrides={"num_classes": 0})
    with pytest.raises(UsageError, match="Did you mean"):
        load_model("timm:vit_tiny_patch16_225", random_init=True)
