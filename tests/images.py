"""Helpers that write real image files of every awkward kind (used by several test modules)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_awkward_images(d: Path) -> dict[str, Path]:
    """One file per mode/format the loader must handle; returns name -> path."""
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    files: dict[str, Path] = {}

    def save(name: str, img: Image.Image, **kw) -> None:
        files[name] = d / name
        img.save(files[name], **kw)

    save("rgb.png", Image.fromarray(rgb))
    save("gray.png", Image.fromarray(rgb[..., 0], mode="L"))
    save("rgba.png", Image.fromarray(np.dstack([rgb, rgb[..., :1]]), mode="RGBA"))
    pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.info["transparency"] = 0
    save("palette.png", pal, transparency=0)
    save("gray16.png", Image.fromarray(np.full((20, 30), 32768, np.uint16)))  # mode I;16
    save("cmyk.jpg", Image.fromarray(rgb).convert("CMYK"), quality=95)
    save("tiny.png", Image.fromarray(rgb[:1, :1]))
    save("photo.webp", Image.fromarray(rgb))
    save("photo.bmp", Image.fromarray(rgb))
    return files


def write_corrupt_jpeg(path: Path) -> Path:
    rgb = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])  # truncated mid-scan
    return path
