"""The model registry and the architectures: the seed ViT's shapes and sizes, ConvNeXt forward."""

from __future__ import annotations

import pytest
import torch

from vitedge.errors import UsageError
from vitedge.models.inspect import summarize
from vitedge.models.registry import build_model, get_entry, list_models


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_registry_lists_every_family_and_the_builtins():
    names = list_models()
    for expected in ("vit-tiny", "vit-s16", "vit-b16", "deit-tiny", "deit-small",
                     "convnext-atto", "convnext-tiny", "convnextv2-atto", "convnext-zepto"):
        assert expected in names
    assert set(list_models(builtin_only=True)) == {"vit-tiny", "convnext-zepto"}
    assert all(get_entry(n).family == "vit" for n in list_models("vit"))


def test_unknown_model_suggests_the_closest_name():
    with pytest.raises(UsageError, match="Did you mean vit-tiny"):
        get_entry("vit-tinny")


def test_seed_vit_tiny_has_2_8M_parameters_and_lesson_shapes():
    m = build_model("vit-tiny")
    assert n_params(m) == 2_822_602  # the lesson's "about 2.8M"
    s = summarize(m, (2, 3, 64, 64))
    rows = {r.name: r for r in s.layers}
    assert rows["patch_embed"].output_shape == (2, 16, 192)  # patches
    assert rows["blocks"].input_shape == (2, 17, 192)  # with CLS
    assert rows["norm"].output_shape == (2, 192)  # CLS output
    assert rows["head"].output_shape == (2, 10)
    assert s.output_shape == (2, 10)
    assert isinstance(m.blocks[0].attn, torch.nn.MultiheadAttention) and m.blocks[0].attn.batch_first
    assert s.flops > 0


def test_vit_b16_has_86M_parameters():
    with torch.device("meta"):  # no memory for 86M floats
        m = build_model("vit-b16")
    assert 86_000_000 < n_params(m) < 87_000_000


@pytest.mark.parametrize("name, lo, hi", [("vit-s16", 21.5e6, 22.5e6), ("deit-tiny", 5.5e6, 5.9e6),
                                          ("deit-small", 21.5e6, 22.5e6)])
def test_other_vit_configs_have_their_published_sizes(name, lo, hi):
    with torch.device("meta"):
        assert lo < n_params(build_model(name)) < hi


def test_image_size_not_divisible_by_patch_is_a_usage_error():
    with pytest.raises(UsageError, match="not divisible by patch size 16"):
        build_model("vit-tiny", img_size=70)


@pytest.mark.parametrize("name", [n for n in list_models("convnext")])
def test_convnext_forward(name):
    entry = get_entry(name)
    size = 64
    stem = entry.config["stem_patch"]
    size = max(size, stem * 8)
    m = build_model(name, img_size=size, num_classes=7).eval()
    with torch.no_grad():
        y = m(torch.randn(2, 3, size, size))
    assert y.shape == (2, 7) and torch.isfinite(y).all()
    has_grn = any(type(mod).__name__ == "GRN" for mod in m.modules())
    assert has_grn == name.startswith("convnextv2")


def test_convnext_atto_size_matches_published():
    with torch.device("meta"):
        assert 3.6e6 < n_params(build_model("convnext-atto")) < 3.8e6  # timm: 3.7M


def test_unknown_option_is_a_usage_error():
    with pytest.raises(UsageError, match="no option"):
        build_model("vit-tiny", dim=3)
