"""One preprocessing spec, owned by the checkpoint and used everywhere.

After timm's `PretrainedCfg` (input size, mean, std, interpolation, crop): the spec travels
inside every checkpoint, ONNX file and bundle manifest, and this module is the *only* code that
turns an image into a model input. Training (eval transform), evaluation, calibration, parity
and `vitedge.load().predict` all call `preprocess_image` / `normalize`, so the tensors match
bit for bit. Device side: numpy + Pillow only, no torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos")


@dataclass(frozen=True)
class PreprocessSpec:
    input_size: tuple[int, int] = (224, 224)  # (H, W) of the model input
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bicubic"
    crop_pct: float = 1.0  # resize shorter side to size / crop_pct, then centre-crop to size
    layout: str = "NCHW"
    channel_order: str = "RGB"  # "BGR": channels flipped after normalising (transformers' MobileViT)
    # How the image is resized before the centre crop to input_size. None: timm's eval transform
    # (shorter side to floor(size / crop_pct), aspect kept); (S,): shorter side to S, aspect kept;
    # (H, W): exactly H x W, aspect not kept (transformers' ViT/DeiT/BEiT image processors).
    resize_to: tuple[int, ...] | None = None
    # Centre-crop offset: "round" = torchvision's int(round((h - th) / 2)) (timm), "floor" =
    # (h - th) // 2 (transformers). They differ by one pixel when the margin is odd.
    crop_rounding: str = "round"
    rescale: float = 1.0 / 255.0  # pixel scale before mean/std (transformers' rescale_factor)

    def __post_init__(self) -> None:
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {_INTERPOLATIONS}")
        if not 0.0 < self.crop_pct <= 1.0:
            raise ValueError("crop_pct must be in (0, 1]")
        if self.layout != "NCHW" or self.channel_order not in ("RGB", "BGR"):
            raise ValueError("only NCHW inputs in RGB or BGR order are supported")
        if self.resize_to is not None and len(self.resize_to) not in (1, 2):
            raise ValueError("resize_to is (shorter side,) or (height, width)")
        if self.crop_rounding not in ("round", "floor"):
            raise ValueError("crop_rounding must be 'round' or 'floor'")
        if not self.rescale > 0:
            raise ValueError("rescale must be positive")

    @property
    def height(self) -> int:
        return self.input_size[0]

    @property
    def width(self) -> int:
        return self.input_size[1]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        if self.resize_to is None:  # fields at their timm defaults stay out: older readers match
            del d["resize_to"]
        else:
            d["resize_to"] = list(self.resize_to)
        for key, default in (("crop_rounding", "round"), ("rescale", 1.0 / 255.0)):
            if d[key] == default:
                del d[key]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessSpec:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        for key in ("input_size", "mean", "std", "resize_to"):
            if known.get(key) is not None:
                known[key] = tuple(known[key])
        return cls(**known)

    def describe(self) -> str:
        """One line an app developer can implement from (also in the Core ML kit's metadata)."""
        h, w = self.input_size
        if self.resize_to is None:
            resize = f"shorter side to floor({h} / crop_pct {self.crop_pct:g})"
        elif len(self.resize_to) == 1:
            resize = f"shorter side to {self.resize_to[0]}"
        else:
            resize = f"to exactly {self.resize_to[0]}x{self.resize_to[1]} (HxW)"
        scale = "x/255" if self.rescale == 1.0 / 255.0 else f"x*{self.rescale:g}"
        return (f"resize ({self.interpolation}) {resize}, centre-crop {h}x{w} ({self.crop_rounding} offset), "
                f"{scale}, subtract mean {list(self.mean)}, divide by std {list(self.std)}, "
                f"{self.channel_order} channels, {self.layout}")

    def input_range(self) -> tuple[float, float]:
        """The min/max value a normalised pixel can take (for seeded random parity inputs)."""
        top = 255.0 * self.rescale
        lo = min((0.0 - m) / s for m, s in zip(self.mean, self.std, strict=True))
        hi = max((top - m) / s for m, s in zip(self.mean, self.std, strict=True))
        return lo, hi


def normalize(images_hwc_uint8: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """(N, H, W, 3) or (H, W, 3) uint8 at the model's input size -> float32 NCHW / CHW."""
    if images_hwc_uint8.dtype != np.uint8:
        raise TypeError(f"expected uint8 pixels, got {images_hwc_uint8.dtype}")
    # a division by 255 (not a multiplication by 1/255) keeps the default bit-identical to before
    x = images_hwc_uint8.astype(np.float32) / np.float32(1.0 / spec.rescale)
    x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    if spec.channel_order == "BGR":
        x = np.flip(x, -1)
    axes = (0, 3, 1, 2) if x.ndim == 4 else (2, 0, 1)
    return np.ascontiguousarray(x.transpose(axes))


def resize_rule(spec: PreprocessSpec) -> tuple[str, tuple[int, ...]]:
    """How an image is resized before the centre crop: ("shorter", (S,)) keeps the aspect and
    brings the shorter side to S; ("exact", (H, W)) resizes to exactly H x W. Written once: the
    Python preprocessing and the graphs --embed-preprocessing puts in artifacts read it."""
    h, w = spec.input_size
    if spec.resize_to is None:  # timm's eval transform: Resize(floor(size / crop_pct))
        scale_h, scale_w = math.floor(h / spec.crop_pct), math.floor(w / spec.crop_pct)
    elif len(spec.resize_to) == 1:
        scale_h = scale_w = int(spec.resize_to[0])
    else:
        scale_h, scale_w = (int(v) for v in spec.resize_to)
    if scale_h == scale_w and (spec.resize_to is None or len(spec.resize_to) == 1):
        return "shorter", (scale_h,)
    return "exact", (scale_h, scale_w)


def resized_size(h: int, w: int, spec: PreprocessSpec) -> tuple[int, int]:
    """(height, width) an h x w image is resized to before the crop, with torchvision's integer
    arithmetic (the longer side is int(S * long / short)) so pixels match timm's exactly."""
    kind, size = resize_rule(spec)
    if kind == "exact":
        return size[0], size[1]
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size[0], int(size[0] * long / short)
    return (new_long, new_short) if w <= h else (new_short, new_long)


def crop_start(resized: int, crop: int, rounding: str) -> int:
    """Offset of a centred crop: "round" = torchvision's int(round(margin / 2)) (half to even),
    "floor" = margin // 2 (transformers)."""
    return (resized - crop) // 2 if rounding == "floor" else int(round((resized - crop) / 2.0))


def resize_and_crop(image: Any, spec: PreprocessSpec) -> np.ndarray:
    """A PIL RGB image -> (H, W, 3) uint8 at the model input size (resize shorter side, crop)."""
    from PIL import Image

    target_h, target_w = spec.input_size
    w, h = image.size
    new_h, new_w = resized_size(h, w, spec)
    if (new_w, new_h) != (w, h):
        resample = {
            "nearest": Image.Resampling.NEAREST,
            "bilinear": Image.Resampling.BILINEAR,
            "bicubic": Image.Resampling.BICUBIC,
            "lanczos": Image.Resampling.LANCZOS,
        }[spec.interpolation]
        image = image.resize((new_w, new_h), resample=resample)
    if (new_w, new_h) != (target_w, target_h):
        if new_w < target_w or new_h < target_h:
            raise ValueError(f"resized image {new_w}x{new_h} is smaller than the crop {target_w}x{target_h}")
        top = crop_start(new_h, target_h, spec.crop_rounding)
        left = crop_start(new_w, target_w, spec.crop_rounding)
        image = image.crop((left, top, left + target_w, top + target_h))
    return np.asarray(image, dtype=np.uint8)


def preprocess_image(image: Any, spec: PreprocessSpec) -> np.ndarray:
    """A PIL RGB image -> (3, H, W) float32 model input."""
    return normalize(resize_and_crop(image, spec), spec)
