"""Image folders: `ROOT/<class>/<image>` (labelled) or `ROOT/<image>` (unlabelled, calibration).

Only files with an image suffix are considered (others, like README.txt or .DS_Store, are
skipped and counted); a file with an image suffix that cannot be decoded is an error naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vitedge.calib.images import IMAGE_SUFFIXES, load_image
from vitedge.calib.preprocess import PreprocessSpec, preprocess_image
from vitedge.errors import InputError


@dataclass(frozen=True)
class ImageFolder:
    root: Path
    paths: tuple[Path, ...]
    labels: tuple[int, ...] | None  # None for an unlabelled folder
    classes: tuple[str, ...]
    skipped: tuple[Path, ...]  # files without an image suffix

    def __len__(self) -> int:
        return len(self.paths)


def _images_in(d: Path) -> tuple[list[Path], list[Path]]:
    try:
        entries = sorted(p for p in d.iterdir() if not p.name.startswith("."))
    except PermissionError:
        raise InputError(f"{d}: permission denied; make the folder readable") from None
    images = [p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    others = [p for p in entries if p.is_file() and p.suffix.lower() not in IMAGE_SUFFIXES]
    return images, others


def scan_folder(root: str | Path, *, labelled: bool | None = None) -> ImageFolder:
    """Index `root`. labelled=None: class subfolders if there are any, else a flat folder."""
    root = Path(root)
    if not root.exists():
        raise InputError(f"{root}: no such folder")
    if not root.is_dir():
        raise InputError(f"{root}: not a folder (expected ROOT/<class>/<image> or ROOT/<image>)")
    try:
        subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except PermissionError:
        raise InputError(f"{root}: permission denied; make the folder readable") from None
    if labelled is None:
        labelled = bool(subdirs)
    if labelled:
        if not subdirs:
            raise InputError(f"{root}: no class subfolders; expected ROOT/<class>/<image>")
        paths: list[Path] = []
        labels: list[int] = []
        skipped: list[Path] = []
        for idx, d in enumerate(subdirs):
            imgs, others = _images_in(d)
            paths += imgs
            labels += [idx] * len(imgs)
            skipped += others
        folder = ImageFolder(
            root, tuple(paths), tuple(labels), tuple(d.name for d in subdirs), tuple(skipped)
        )
    else:
        imgs, others = _images_in(root)
        folder = ImageFolder(root, tuple(imgs), None, (), tuple(others))
    if not folder.paths:
        raise InputError(
            f"{root}: no images found (looked for {', '.join(IMAGE_SUFFIXES)}"
            f"{' in class subfolders' if labelled else ''})"
        )
    return folder


def load_images(
    paths: list[Path] | tuple[Path, ...], spec: PreprocessSpec, progress: str | None = None
) -> np.ndarray:
    """Decode + preprocess `paths` -> (N, 3, H, W) float32. The first bad file raises."""
    from vitedge.progress import track

    out = np.empty((len(paths), 3, *spec.input_size), np.float32)
    for i, p in enumerate(track(paths, description=progress) if progress else paths):
        out[i] = preprocess_image(load_image(p), spec)
    return out
