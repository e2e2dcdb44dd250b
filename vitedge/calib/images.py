"""Reading one image file of any mode into an RGB PIL image, or a clear error naming the file.

Modes handled: 1, L, LA, P (with or without transparency), RGB, RGBA, CMYK, YCbCr, I;16* (16-bit
PNG/TIFF), I (32-bit int), F (float). Alpha is dropped (as timm/torchvision's `convert("RGB")`
does), 16/32-bit and float images are scaled to 8 bits by their full range, EXIF orientation is
applied. Device side: Pillow + numpy only.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from vitedge.errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")

# Refuse images whose decoded size could exhaust memory: Pillow's decompression-bomb threshold
# (89,478,485 pixels, ~256 MB RGB), enforced as an error rather than Pillow's warning.
MAX_PIXELS = 89_478_485


def to_rgb(image: Any) -> Any:
    """A PIL image of any mode -> mode RGB."""
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(image)
        if mode == "F":
            arr = np.nan_to_num(arr.astype(np.float64))
            lo, hi = float(arr.min()), float(arr.max())
            arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        else:
            # 16-bit data scaled by the full 16-bit range, not clipped at 255 as
            # `convert("RGB")` would do (which turns most 16-bit images white).
            full = 65535.0 if mode.startswith("I;16") or arr.max() <= 65535 else float(arr.max())
            arr = arr.astype(np.float64) * (255.0 / full)
        gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return Image.fromarray(np.repeat(gray[..., None], 3, axis=2), mode="RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


def load_image(path: str | os.PathLike[str]) -> Any:
    """Open `path` as an RGB PIL image (fully decoded), or raise InputError naming the file."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise _too_large(p, im.width * im.height)
                im.load()
                return to_rgb(im)
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{p}: is a directory, expected an image file") from None
    except PermissionError:
        raise InputError(f"{p}: permission denied; make the file readable") from None
    except UnidentifiedImageError:
        raise InputError(f"{p}: not an image Pillow can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        import re

        n = re.search(r"\((\d+) pixels\)", str(e))
        raise _too_large(p, int(n.group(1)) if n else None) from None
    except (OSError, SyntaxError, ValueError) as e:
        # Truncated / corrupt files surface as OSError ("image file is truncated") or
        # SyntaxError (broken PNG chunks) from Pillow's decoders.
        raise InputError(f"{p}: corrupt or truncated image ({e})") from None


def _too_large(p: Path, pixels: int | None) -> InputError:
    size = f"{pixels:,} pixels" if pixels else "too many pixels"
    return InputError(f"{p}: image has {size}, over the {MAX_PIXELS:,}-pixel safety limit; downscale it first")
