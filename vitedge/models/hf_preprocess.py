"""A Hugging Face folder's preprocessing, read from its image processor and proven against it.

`preprocessor_config.json` (or, without one, the model type's default processor) gives mean,
std, size, crop, resample, rescale and channel order; vitedge turns it into a PreprocessSpec and
does not trust its own reading: the spec is run beside the real processor (its PIL backend) on
synthetic images of awkward sizes, and a folder whose preprocessing vitedge cannot reproduce
is refused with the difference (a wrong mean/std costs points of top-1 silently).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vitedge.calib.preprocess import PreprocessSpec, preprocess_image
from vitedge.errors import InputError, UsageError
from vitedge.models.hf_folder import _transformers

PROCESSOR = "preprocessor_config.json"
# PIL resample codes (what preprocessor_config.json stores) -> vitedge's interpolation names
PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}
# A processor reproduced by vitedge differs from transformers' own only by float rounding.
MAX_PIXEL_DIFF = 1e-4


def image_processor(folder: Path, model_type: str) -> tuple[Any, str]:
    """transformers' image processor for the folder (PIL backend: vitedge resizes with Pillow
    too) and where it came from."""
    transformers = _transformers()
    if (folder / PROCESSOR).is_file():
        try:
            proc = transformers.AutoImageProcessor.from_pretrained(str(folder), local_files_only=True,
                                                                   trust_remote_code=False, backend="pil")
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"{folder / PROCESSOR}: transformers cannot read it ({str(e)[:200]})") from None
        return proc, PROCESSOR
    from transformers.models.auto import image_processing_auto as ipa

    names = ipa.IMAGE_PROCESSOR_MAPPING_NAMES.get(model_type) or {}
    name = names.get("pil") if isinstance(names, dict) else None
    cls = ipa.get_image_processor_class_from_name(name) if name else None
    if cls is None:
        raise InputError(f"{folder}: no {PROCESSOR} and transformers has no default image processor for "
                         f"{model_type!r}; save the processor beside the model (processor.save_pretrained(DIR))")
    return cls(), f"{cls.__name__.removesuffix('Pil')} defaults (the folder has no {PROCESSOR})"


def _size(d: Any) -> dict[str, int]:
    if d is None:
        return {}
    d = d if isinstance(d, dict) else {k: getattr(d, k, None) for k in ("height", "width", "shortest_edge", "longest_edge")}
    return {k: int(v) for k, v in d.items() if v is not None}


def spec_from_processor(proc: Any, origin: str) -> tuple[PreprocessSpec, dict[str, str]]:
    """vitedge's PreprocessSpec for a transformers image processor, and where each value came from."""
    name = type(proc).__name__.removesuffix("Pil")
    where: dict[str, str] = {}

    def src(field: str, attr: str) -> None:
        where[field] = f"{origin}: {attr}" if origin == PROCESSOR else f"{origin}: {attr}"

    size = _size(getattr(proc, "size", None))
    crop = _size(getattr(proc, "crop_size", None)) if getattr(proc, "do_center_crop", False) else {}
    if not getattr(proc, "do_resize", True):
        raise UsageError(f"{name} does not resize (do_resize=false): the model needs images of one fixed size; "
                         "vitedge needs a fixed input size")
    if size.get("longest_edge") or set(size) - {"height", "width", "shortest_edge"}:
        raise UsageError(f"{name} resizes with {sorted(size)}: vitedge reproduces shortest_edge or height/width")
    resize_to: tuple[int, ...]
    if name.startswith("ConvNext") and "shortest_edge" in size:
        edge = size["shortest_edge"]
        crop_pct = float(getattr(proc, "crop_pct", 224 / 256) or 224 / 256)
        if edge < 384:  # ConvNextImageProcessor: resize to edge / crop_pct, centre crop to edge
            resize_to, out = (int(edge / crop_pct),), (edge, edge)
            where["resize_to"] = f"{origin}: size.shortest_edge / crop_pct ({edge} / {crop_pct:g})"
        else:
            resize_to, out = (edge, edge), (edge, edge)
            where["resize_to"] = f"{origin}: size.shortest_edge (>= 384: no crop)"
        if crop and (crop["height"], crop["width"]) != out:
            raise UsageError(f"{name} crops twice ({out} then {crop}); vitedge reproduces one centre crop")
    elif name.startswith("Levit") and "shortest_edge" in size:
        resize_to = (int((256 / 224) * size["shortest_edge"]),)  # LevitImageProcessor's own rule
        where["resize_to"] = f"{origin}: size.shortest_edge * 256/224 (LeViT's rule)"
        out = (crop["height"], crop["width"]) if crop else (0, 0)
    elif "shortest_edge" in size:
        resize_to = (size["shortest_edge"],)
        where["resize_to"] = f"{origin}: size.shortest_edge"
        out = (crop["height"], crop["width"]) if crop else (0, 0)
    else:
        resize_to = (size["height"], size["width"])
        where["resize_to"] = f"{origin}: size (height, width; aspect not kept)"
        out = (crop["height"], crop["width"]) if crop else resize_to  # type: ignore[assignment]
    if out == (0, 0):
        raise UsageError(f"{name} resizes the shorter side without a crop: the input size varies with the "
                         "image; vitedge needs a fixed input size (set do_center_crop and crop_size)")
    where["input_size"] = f"{origin}: crop_size" if crop else where["resize_to"]
    resample = getattr(proc, "resample", 2)
    resample = int(getattr(resample, "value", resample))
    if resample not in PIL_RESAMPLE:
        raise UsageError(f"{name} resamples with PIL code {resample}; vitedge reproduces nearest, bilinear, "
                         "bicubic and lanczos")
    src("interpolation", f"resample ({resample} = {PIL_RESAMPLE[resample]})")
    rescale = float(proc.rescale_factor) if getattr(proc, "do_rescale", True) else 1.0
    src("rescale", "rescale_factor" if getattr(proc, "do_rescale", True) else "do_rescale=false")
    if getattr(proc, "do_normalize", False):
        mean = tuple(float(v) for v in _three(proc.image_mean))
        std = tuple(float(v) for v in _three(proc.image_std))
        src("mean", "image_mean")
        src("std", "image_std")
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        src("mean", "do_normalize off (mean 0)")
        src("std", "do_normalize off (std 1)")
    flip = bool(getattr(proc, "do_flip_channel_order", False))
    src("channel_order", "do_flip_channel_order" if flip else "RGB (no channel flip)")
    spec = PreprocessSpec(
        input_size=(int(out[0]), int(out[1])), mean=mean, std=std,  # type: ignore[arg-type]
        interpolation=PIL_RESAMPLE[resample], resize_to=resize_to, crop_rounding="floor", rescale=rescale,
        channel_order="BGR" if flip else "RGB",
    )
    where["processor"] = f"{name} ({origin})"
    return spec, where


def _three(v: Any) -> tuple[float, ...]:
    v = [v] * 3 if isinstance(v, (int, float)) else list(v)
    if len(v) != 3:
        raise UsageError(f"image mean/std {v} is not one value per RGB channel")
    return tuple(v)


def check_images() -> list[Any]:
    """Synthetic images of awkward sizes (odd margins, portrait, landscape, smaller than the crop)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for w, h in ((333, 250), (250, 401), (640, 480), (199, 173)):
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) % 256], -1)
        noise = rng.integers(-40, 40, size=(h, w, 3))
        out.append(Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB"))
    return out


def processor_difference(proc: Any, spec: PreprocessSpec, images: list[Any]) -> float:
    """Max |vitedge - transformers| over `images`, in model-input units."""
    worst = 0.0
    for img in images:
        theirs = np.asarray(proc(images=img, return_tensors="np")["pixel_values"][0], np.float32)
        ours = preprocess_image(img, spec)
        if theirs.shape != ours.shape:
            return float("inf")
        worst = max(worst, float(np.abs(theirs - ours).max()))
    return worst


def hf_preprocess(folder: Path, model_type: str) -> tuple[PreprocessSpec, dict[str, Any]]:
    proc, origin = image_processor(folder, model_type)
    spec, where = spec_from_processor(proc, origin)
    diff = processor_difference(proc, spec, check_images())
    if not diff <= MAX_PIXEL_DIFF:
        raise UsageError(f"{folder}: vitedge cannot reproduce {where['processor']} (max difference {diff:.3g} on "
                         "test images); please report it with the folder's preprocessor_config.json")
    return spec, {"from": where, "checked_max_abs_diff": diff}
