"""timm models by name ("timm:vit_small_patch16_224", "timm:convnextv2_atto", ...).

Weights always come from a local file (no hub is reachable, and none is contacted: models are
created with `pretrained=False` and weights are loaded by vitedge's safe loader). Preprocessing
comes from timm's pretrained cfg via `resolve_data_config`, so a timm checkpoint is preprocessed
exactly as timm would.
"""

from __future__ import annotations

import difflib
import sys
from typing import Any

import torch

from vitedge.calib.preprocess import PreprocessSpec
from vitedge.errors import MissingDependencyError, UsageError

PREFIX = "timm:"
SUPPORTED = ("vit_", "deit_", "deit3_", "convnext_", "convnextv2_")


def _timm() -> Any:
    try:
        import timm
    except ImportError as e:
        raise MissingDependencyError(
            f"timm models need timm ({e}); install with: pip install torch==2.14.1 "
            "torchvision==0.29.1 'vitedge[timm]'"
        ) from None
    return timm


def check_name(name: str) -> None:
    timm = _timm()
    if not name.startswith(SUPPORTED):
        raise UsageError(
            f"timm model {name!r} is not a ViT/DeiT/ConvNeXt; vitedge supports "
            f"{', '.join(p + '*' for p in SUPPORTED)}"
        )
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UsageError(f"timm has no model {name!r}.{hint}")


def build_timm(name: str, **config: Any) -> torch.nn.Module:
    """A randomly initialised timm model (pretrained=False: nothing is downloaded)."""
    check_name(name)
    try:
        return _timm().create_model(name, pretrained=False, **config)
    except TypeError as e:
        raise UsageError(f"timm model {name!r} does not accept {sorted(config)}: {e}") from None


def takes_img_size(name: str) -> bool:
    return name.startswith(("vit_", "deit_", "deit3_"))


def pretrained_preprocess(name: str) -> PreprocessSpec:
    """Preprocessing from timm's pretrained cfg for `name` (no model is built)."""
    check_name(name)
    cfg = _timm().models.get_pretrained_cfg(name)
    cfg = cfg.to_dict() if cfg is not None else {}
    _, h, w = cfg.get("input_size", (3, 224, 224))
    interpolation = cfg.get("interpolation", "bicubic")
    if interpolation not in ("nearest", "bilinear", "bicubic", "lanczos"):
        interpolation = "bicubic"
    if cfg.get("crop_mode", "center") != "center":
        raise UsageError(f"timm model {name!r} uses crop mode {cfg['crop_mode']!r}; only 'center' is supported")
    return PreprocessSpec(
        input_size=(int(h), int(w)),
        mean=tuple(float(m) for m in cfg.get("mean", (0.485, 0.456, 0.406))),  # type: ignore[arg-type]
        std=tuple(float(s) for s in cfg.get("std", (0.229, 0.224, 0.225))),  # type: ignore[arg-type]
        interpolation=interpolation,
        crop_pct=float(cfg.get("crop_pct", 1.0)),
    )


def adapt_state_dict(
    state: dict[str, torch.Tensor], model: torch.nn.Module, drop_head: bool
) -> dict[str, torch.Tensor]:
    """Apply the model module's own `checkpoint_filter_fn` (position-embedding resampling,
    original-format key conversion), then optionally drop a classifier of the wrong size."""
    module = sys.modules[type(model).__module__]
    filter_fn = getattr(module, "checkpoint_filter_fn", None)
    if filter_fn is not None:
        state = filter_fn(state, model)
    if drop_head:
        own = model.state_dict()
        head = model.pretrained_cfg.get("classifier", "head") if hasattr(model, "pretrained_cfg") else "head"
        heads = head if isinstance(head, (list, tuple)) else [head]
        for h in heads:
            for suffix in (".weight", ".bias"):
                k = h + suffix
                if k in state and k in own and state[k].shape != own[k].shape:
                    state = {key: v for key, v in state.items() if key != k}
                    state[k] = own[k]  # keep the fresh initialisation
    return state


def infer_num_classes(state: dict[str, torch.Tensor]) -> int | None:
    for key in ("head.weight", "head.fc.weight"):
        if key in state and state[key].ndim == 2:
            return int(state[key].shape[0])
    return None
