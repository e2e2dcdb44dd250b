"""timm models by name ("timm:vit_small_patch16_224", "timm:eva02_tiny_patch14_224.mim_in22k", ...).

Any timm model that classifies images is accepted (no allowlist); a model is refused only when it
cannot produce (N, num_classes) logits from an RGB image (a headless backbone asked for
num_classes=0, weights without a classifier, another input type), with the reason.

Weights always come from a local file (no hub is reachable, and none is contacted: models are
created with `pretrained=False` and weights are loaded by vitedge's safe loader). Preprocessing
is timm's own: `timm.data.resolve_data_config` on the built model (its pretrained cfg, or the
cfg of the tag in the name), mapped onto vitedge's PreprocessSpec, so a timm checkpoint is
preprocessed exactly as timm's eval transform would. A different input size (`img_size`) is
passed to timm for models whose size is fixed by their weights (ViT-style position tables), and
their checkpoints are adapted by the model module's own `checkpoint_filter_fn` (position
embedding resampling); for convolutional models it only changes the preprocessing.

What vitedge learned about the model (family from a probe forward pass, native and weights
input size, which checkpoint entry was loaded) is kept in the card under `config["_vitedge"]`
(META_KEY), which `build_timm` strips before calling timm.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import sys
from collections.abc import Iterator
from typing import Any

import torch

from vitedge.calib.preprocess import PreprocessSpec
from vitedge.errors import InputError, MissingDependencyError, UsageError

PREFIX = "timm:"
META_KEY = "_vitedge"  # card.config entry that is vitedge's, not a timm builder argument
CROP_MODES = ("center",)  # timm crop modes vitedge's preprocessing reproduces exactly
DEFAULT_NUM_CLASSES = 1000  # timm's own default head, used when the pretrained cfg is headless


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
    if not timm.is_model(name):
        base = name.split(".")[0]
        close = difflib.get_close_matches(base, timm.list_models(), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UsageError(f"timm has no model {name!r}.{hint}")


def pretrained_cfg(name: str) -> dict[str, Any]:
    """timm's pretrained cfg for `name` (the tag in the name, or the default tag), as a dict."""
    check_name(name)
    cfg = _timm().models.get_pretrained_cfg(name)
    return cfg.to_dict() if cfg is not None else {}


def takes_img_size(name: str) -> bool:
    """True when the model's input size is fixed at construction (timm's `fixed_input_size`:
    position tables, attention windows), so `img_size` must go to timm; convolutional models
    run at any size and `img_size` only changes the preprocessing."""
    return bool(pretrained_cfg(name).get("fixed_input_size", False))


def split_config(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(timm builder kwargs, vitedge's own metadata) of a card config."""
    kwargs = {k: v for k, v in config.items() if k != META_KEY}
    return kwargs, dict(config.get(META_KEY) or {})


def build_timm(name: str, **config: Any) -> torch.nn.Module:
    """A randomly initialised timm model (pretrained=False: nothing is downloaded)."""
    check_name(name)
    kwargs, _ = split_config(config)
    if "in_chans" in kwargs and int(kwargs["in_chans"]) != 3:
        raise UsageError(f"timm model {name!r} with in_chans={kwargs['in_chans']}: vitedge exports RGB image "
                         "classifiers (3 input channels)")
    if kwargs.get("num_classes", None) == 0:
        raise UsageError(f"timm model {name!r} with num_classes=0 is a feature extractor without a classifier "
                         "head; vitedge exports image classifiers (give --num-classes N)")
    if isinstance(kwargs.get("img_size"), list):
        kwargs["img_size"] = tuple(kwargs["img_size"])
    try:
        return _timm().create_model(name, pretrained=False, **kwargs)
    except TypeError as e:
        raise UsageError(f"timm model {name!r} does not accept {sorted(kwargs)}: {e}") from None


def model_config(name: str, overrides: dict[str, Any], classes: tuple[str, ...] | None) -> tuple[dict, list[str]]:
    """The timm builder kwargs for `name` with the user's overrides, and notes about choices made."""
    config = dict(overrides)
    notes: list[str] = []
    cfg = pretrained_cfg(name)
    # refuse an eval transform vitedge cannot reproduce before building a possibly large model
    resolved = _timm().data.resolve_data_config(_size_args(overrides.get("img_size")), pretrained_cfg=cfg)
    to_preprocess(resolved, name)
    if not cfg.get("fixed_input_size", False):
        config.pop("img_size", None)  # runs at any size: the size is a preprocessing matter only
    if "num_classes" not in config:
        if classes:
            config["num_classes"] = len(classes)
        elif cfg.get("num_classes", DEFAULT_NUM_CLASSES) == 0:
            # eva02_*, *_dinov2, CLIP/SigLIP towers: the default tag is a headless backbone.
            config["num_classes"] = DEFAULT_NUM_CLASSES
            notes.append(f"timm's pretrained cfg of {name} has no classifier (num_classes=0); built with "
                         f"timm's default {DEFAULT_NUM_CLASSES}-class head")
    return config, notes


def _size(v: Any) -> tuple[int, int]:
    if isinstance(v, (int, float)):
        return int(v), int(v)
    v = tuple(int(s) for s in v)
    return (v[-2], v[-1]) if len(v) >= 2 else (v[0], v[0])


def to_preprocess(data_config: dict[str, Any], name: str) -> PreprocessSpec:
    """A timm data config (from `resolve_data_config`) as vitedge's PreprocessSpec."""
    crop_mode = data_config.get("crop_mode", "center")
    if crop_mode not in CROP_MODES:
        raise UsageError(
            f"timm model {name!r} is evaluated with crop_mode={crop_mode!r} (timm's eval transform "
            f"{'resizes without keeping the aspect ratio' if crop_mode == 'squash' else 'pads to a square'}); "
            "vitedge reproduces only 'center' (resize the shorter side, centre crop) - choose a tag of the "
            "model whose cfg uses 'center'"
        )
    interpolation = data_config.get("interpolation", "bicubic")
    if interpolation not in ("nearest", "bilinear", "bicubic", "lanczos"):
        raise UsageError(f"timm model {name!r} uses interpolation {interpolation!r}; vitedge supports "
                         "nearest, bilinear, bicubic and lanczos")
    return PreprocessSpec(
        input_size=_size(data_config["input_size"]),
        mean=tuple(float(m) for m in data_config["mean"]),  # type: ignore[arg-type]
        std=tuple(float(s) for s in data_config["std"]),  # type: ignore[arg-type]
        interpolation=interpolation,
        crop_pct=float(data_config.get("crop_pct") or 1.0),
    )


def _size_args(img_size: Any) -> dict[str, Any]:
    if img_size is None:
        return {}
    h, w = _size(img_size)
    return {"input_size": (3, h, w)}


def pretrained_preprocess(name: str, img_size: Any = None) -> PreprocessSpec:
    """Preprocessing from timm's pretrained cfg for `name` without building the model
    (timm's `resolve_data_config` on the cfg)."""
    data = _timm().data.resolve_data_config(_size_args(img_size), pretrained_cfg=pretrained_cfg(name))
    return to_preprocess(data, name)


def model_preprocess(model: torch.nn.Module, name: str, img_size: Any = None) -> PreprocessSpec:
    """Preprocessing of a built timm model: `timm.data.resolve_data_config({}, model=model)`,
    with the input size the model was built for."""
    data = _timm().data.resolve_data_config(_size_args(img_size), model=model)
    return to_preprocess(data, name)


def spatial_size_support(model: torch.nn.Module, name: str) -> str:
    """How the input size can vary after export: "any" (convolutional, no fixed-size tables),
    "dynamic_img_size" (timm can build it with dynamic_img_size=True: position embeddings
    resampled in the graph), or "fixed"."""
    if not pretrained_cfg(name).get("fixed_input_size", False):
        return "any"
    if getattr(model, "dynamic_img_size", False):
        return "dynamic_img_size"
    params = inspect.signature(type(model).__init__).parameters
    return "dynamic_img_size" if "dynamic_img_size" in params else "fixed"


def describe(model: torch.nn.Module, name: str, preprocess: PreprocessSpec, notes: list[str]) -> dict[str, Any]:
    """Family probe + classifier check + size facts: the card's META_KEY entry.

    Raises UsageError when the model is not an image classifier at this input size."""
    from vitedge.models.family import probe, recipe_for

    report = probe(model, preprocess.input_size)
    h, w = preprocess.input_size
    if report.error is not None:
        native = _size(pretrained_cfg(name).get("input_size", (3, 224, 224)))
        raise UsageError(f"timm model {name!r} does not run on a {h}x{w} RGB image ({report.error}); "
                         f"its native input size is {native[0]}x{native[1]}")
    n = int(getattr(model, "num_classes", 0) or 0)
    if report.output_shape is None or len(report.output_shape) != 2 or n <= 0 or report.output_shape[1] != n:
        raise UsageError(f"timm model {name!r} is not an image classifier: its forward returns "
                         f"{report.output_shape or 'no single tensor'}, not (N, num_classes) logits")
    cfg = pretrained_cfg(name)
    meta: dict[str, Any] = {
        "family": report.family,
        "family_reason": report.reason,
        "family_evidence": report.evidence,
        "input_size": [h, w],
        "native_input_size": list(_size(cfg.get("input_size", (3, 224, 224)))),
        "spatial_size": spatial_size_support(model, name),
        "pretrained_tag": cfg.get("tag"),
    }
    notes = [*notes, *(recipe_for("unknown").notes if report.family == "unknown" else ())]
    if notes:
        meta["notes"] = notes
    return meta


def classifier_names(name: str) -> list[str]:
    head = pretrained_cfg(name).get("classifier") or "head"
    return list(head) if isinstance(head, (list, tuple)) else [head]


def adapt_state_dict(
    state: dict[str, torch.Tensor], model: torch.nn.Module, drop_head: bool
) -> dict[str, torch.Tensor]:
    """Apply the model module's own `checkpoint_filter_fn` (position-embedding resampling,
    original-format key conversion), then optionally drop a classifier of the wrong size."""
    module = sys.modules[type(model).__module__]
    filter_fn = getattr(module, "checkpoint_filter_fn", None)
    if filter_fn is not None:
        try:
            state = filter_fn(state, model)
        except Exception as e:  # timm's filters assume their own checkpoints; say which file failed where
            from vitedge import interrupts

            interrupts.check()
            raise InputError(f"timm's checkpoint_filter_fn for {type(model).__name__} could not adapt these "
                             f"weights ({type(e).__name__}: {str(e).strip()[:160]})") from None
    if drop_head:
        own = model.state_dict()
        cfg: dict[str, Any] = dict(getattr(model, "pretrained_cfg", None) or {})
        head = cfg.get("classifier") or "head"
        heads = list(head) if isinstance(head, (list, tuple)) else [head]
        for h in heads:
            for suffix in (".weight", ".bias"):
                k = h + suffix
                if k in state and k in own and state[k].shape != own[k].shape:
                    state = {key: v for key, v in state.items() if key != k}
                    state[k] = own[k]  # keep the fresh initialisation
    return state


def resampled(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> dict[str, list[list[int]]]:
    """Tensors whose shape the filter changed (e.g. pos_embed resampled to a new grid)."""
    return {k: [list(v.shape), list(after[k].shape)] for k, v in before.items()
            if k in after and tuple(v.shape) != tuple(after[k].shape)}


def weights_input_size(state: dict[str, torch.Tensor], model: torch.nn.Module) -> list[int] | None:
    """The input size a ViT-style checkpoint was trained at, read from its position embedding."""
    pos = state.get("pos_embed")
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    if not isinstance(pos, torch.Tensor) or patch is None:
        return None
    if pos.ndim == 4:  # (1, H, W, C) tables (e.g. some NaFlex / hiera variants)
        return [int(pos.shape[1]) * int(_size(patch)[0]), int(pos.shape[2]) * int(_size(patch)[1])]
    prefix = 0 if getattr(model, "no_embed_class", False) else int(getattr(model, "num_prefix_tokens", 0))
    n = int(pos.shape[1]) - prefix
    side = int(round(n ** 0.5))
    if side * side != n:
        return None
    ph, pw = _size(patch)
    return [side * ph, side * pw]


def infer_num_classes(state: dict[str, torch.Tensor], name: str | None = None) -> int | None:
    """The class count of the classifier in a state dict (None: no classifier found)."""
    keys = [f"{c}.weight" for c in classifier_names(name)] if name else []
    for key in (*keys, "head.weight", "head.fc.weight", "fc.weight", "classifier.weight"):
        if key in state and state[key].ndim == 2:
            return int(state[key].shape[0])
    return None


@contextlib.contextmanager
def unfused_attention(model: torch.nn.Module) -> Iterator[int]:
    """timm attention modules with `fused_attn` switched off (explicit Q.K^T, softmax, attn.V)
    for the duration; yields how many were switched.

    Why: with a fused `scaled_dot_product_attention` that takes an additive mask (BEiT's relative
    position bias, MaxViT's rel-pos MLP) torch 2.14's dynamo ONNX export fails with "Cannot
    view a tensor with shape ... and strides ..." (pytorch/pytorch#141107); the unfused path
    exports and matches PyTorch (BEiT-B 7e-10, MaxViT-nano 4e-7 max abs on ORT). The ONNX graph
    is the same MatMul/Softmax/MatMul either way, which is what the INT8 recipes look for."""
    switched = [m for m in model.modules() if getattr(m, "fused_attn", False) is True]
    for m in switched:
        setattr(m, "fused_attn", False)  # noqa: B010 (a plain attribute on timm's modules)
    try:
        yield len(switched)
    finally:
        for m in switched:
            setattr(m, "fused_attn", True)  # noqa: B010
