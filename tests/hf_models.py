"""Small transformers image classifiers, one per family, saved as a user's folder would be.

`save_folder(family, dst)` builds the family's config with `from_config` (random weights,
seeded), saves it with `save_pretrained` beside the image processor the hub uses for that family
(scaled to the small input size), the way a Trainer run or a hub snapshot leaves it. Used by the
tests and by `benchmarks/hf_zoo.py` (docs/zoo.md's transformers section). The configs keep each
family's structure (its attention, relative position bias, windows, distillation head, stem)
at a size that exports in seconds; nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# family -> (config class, config kwargs, model class, processor class, processor kwargs, px)
LABELS = 10


def _vit_like(px: int, patch: int = 8) -> dict[str, Any]:
    return {"image_size": px, "patch_size": patch, "hidden_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "intermediate_size": 128}


def _square(px: int) -> dict[str, Any]:
    return {"size": {"height": px, "width": px}}


def _shortest_crop(px: int, resize: int) -> dict[str, Any]:
    return {"size": {"shortest_edge": resize}, "do_center_crop": True, "crop_size": {"height": px, "width": px}}


FAMILIES: dict[str, tuple[str, dict[str, Any], str, str, dict[str, Any], int]] = {
    "vit": ("ViTConfig", _vit_like(32), "ViTForImageClassification", "ViTImageProcessor", _square(32), 32),
    "deit": ("DeiTConfig", _vit_like(32), "DeiTForImageClassification", "DeiTImageProcessor",
             {"size": {"height": 36, "width": 36}, "crop_size": {"height": 32, "width": 32}}, 32),
    "deit-distilled": ("DeiTConfig", _vit_like(32), "DeiTForImageClassificationWithTeacher", "DeiTImageProcessor",
                       {"size": {"height": 36, "width": 36}, "crop_size": {"height": 32, "width": 32}}, 32),
    "beit": ("BeitConfig", {**_vit_like(32), "use_relative_position_bias": True, "use_mean_pooling": True},
             "BeitForImageClassification", "BeitImageProcessor",
             {"size": {"height": 32, "width": 32}, "do_center_crop": False}, 32),
    "dinov2": ("Dinov2Config", {"image_size": 28, "patch_size": 7, "hidden_size": 64, "num_hidden_layers": 2,
                                "num_attention_heads": 2, "mlp_ratio": 2},
               "Dinov2ForImageClassification", "BitImageProcessor", _shortest_crop(28, 32), 28),
    "swin": ("SwinConfig", {"image_size": 32, "patch_size": 2, "embed_dim": 16, "depths": [1, 1],
                            "num_heads": [1, 2], "window_size": 4},
             "SwinForImageClassification", "ViTImageProcessor", _square(32), 32),
    "swinv2": ("Swinv2Config", {"image_size": 32, "patch_size": 2, "embed_dim": 16, "depths": [1, 1],
                                "num_heads": [1, 2], "window_size": 4},
               "Swinv2ForImageClassification", "ViTImageProcessor", _square(32), 32),
    "convnext": ("ConvNextConfig", {"num_stages": 2, "hidden_sizes": [16, 32], "depths": [1, 1]},
                 "ConvNextForImageClassification", "ConvNextImageProcessor", {"size": {"shortest_edge": 32}}, 32),
    "convnextv2": ("ConvNextV2Config", {"num_stages": 2, "hidden_sizes": [16, 32], "depths": [1, 1]},
                   "ConvNextV2ForImageClassification", "ConvNextImageProcessor", {"size": {"shortest_edge": 32}}, 32),
    "mobilevit": ("MobileViTConfig", {"image_size": 64, "hidden_sizes": [32, 40, 48],
                                      "neck_hidden_sizes": [8, 8, 16, 16, 24, 32, 64]},
                  "MobileViTForImageClassification", "MobileViTImageProcessor", _shortest_crop(64, 72), 64),
    "mobilevitv2": ("MobileViTV2Config", {"image_size": 64, "width_multiplier": 0.5},
                    "MobileViTV2ForImageClassification", "MobileViTImageProcessor", _shortest_crop(64, 72), 64),
    "levit": ("LevitConfig", {"image_size": 64, "hidden_sizes": [32, 48, 64], "num_attention_heads": [1, 2, 2],
                              "depths": [1, 1, 1], "key_dim": [8, 8, 8]},
              "LevitForImageClassification", "LevitImageProcessor",
              {"size": {"shortest_edge": 64}, "crop_size": {"height": 64, "width": 64}}, 64),
    "pvt_v2": ("PvtV2Config", {"image_size": 64, "hidden_sizes": [16, 24, 32, 48], "depths": [1, 1, 1, 1],
                               "num_attention_heads": [1, 1, 2, 2]},
               "PvtV2ForImageClassification", "ViTImageProcessor", _square(64), 64),
    "resnet": ("ResNetConfig", {"embedding_size": 16, "hidden_sizes": [16, 24, 32, 48], "depths": [1, 1, 1, 1],
                                "layer_type": "basic"},
               "ResNetForImageClassification", "ConvNextImageProcessor", {"size": {"shortest_edge": 32}}, 32),
}


# Deployment-sized configs for benchmarks (benchmarks/peers.py against Optimum), not for tests.
BENCH: dict[str, tuple[str, dict[str, Any], str, str, dict[str, Any], int]] = {
    "vit-small-224": ("ViTConfig", {"image_size": 224, "patch_size": 16, "hidden_size": 384, "num_hidden_layers": 12,
                                    "num_attention_heads": 6, "intermediate_size": 1536},
                      "ViTForImageClassification", "ViTImageProcessor", _square(224), 224),
    "convnext-tiny-224": ("ConvNextConfig", {"hidden_sizes": [96, 192, 384, 768], "depths": [3, 3, 9, 3]},
                          "ConvNextForImageClassification", "ConvNextImageProcessor",
                          {"size": {"shortest_edge": 224}}, 224),
}


def save_folder(family: str, dst: str | Path, *, seed: int = 0, with_processor: bool = True) -> Path:
    """`family`'s classifier (random weights) saved to `dst` with save_pretrained."""
    import torch
    import transformers

    cfg_cls, cfg_kw, model_cls, proc_cls, proc_kw, _ = FAMILIES[family] if family in FAMILIES else BENCH[family]
    labels = {i: f"label_{i}" for i in range(LABELS)}
    config = getattr(transformers, cfg_cls)(**cfg_kw, num_labels=LABELS, id2label=labels,
                                             label2id={v: k for k, v in labels.items()})
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(config).eval()
    dst = Path(dst)
    model.save_pretrained(dst)
    if with_processor:
        getattr(transformers, proc_cls)(**proc_kw).save_pretrained(dst)
    return dst
