"""The MNIST family's native IDX format (MNIST, Fashion-MNIST, KMNIST, EMNIST), read in place.

A data-set directory holds the four files as published (gzipped or not):

    train-images-idx3-ubyte[.gz]  train-labels-idx1-ubyte[.gz]   (the training split)
    t10k-images-idx3-ubyte[.gz]   t10k-labels-idx1-ubyte[.gz]    (the test split)

Debian's `dataset-fashion-mnist` package installs exactly this at /usr/share/datasets/fashion-mnist,
so `--data /usr/share/datasets/fashion-mnist` works with no conversion step. A directory is
recognised by these file names (`is_idx_dir`); nothing else in vitedge uses them.

IDX (LeCun et al.): two zero bytes, a type code, the number of dimensions, then one big-endian
uint32 per dimension and the row-major payload. The header is checked against the file length
before anything is allocated, so a corrupt or truncated file is an InputError naming it, never a
huge allocation or a silently short array.

Class names: a `classes.txt` (one name a line) beside the files wins; otherwise a directory whose
name contains "fashion" gets Fashion-MNIST's names, and anything else gets the label numbers
("0".."9" for MNIST digits).

Pixels: each grayscale image is turned into RGB and resized by `resize_and_crop`, the same
preprocessing a deployed predictor applies to a 28x28 PNG of it, so accuracy measured here is
the accuracy a user gets from image files.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from vitedge.calib.preprocess import PreprocessSpec, resize_and_crop
from vitedge.errors import InputError

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
# split -> (images stem, labels stem); "test" is the t10k pair as published.
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}


@dataclass(frozen=True)
class IdxSplit:
    images: np.ndarray  # (N, H, W) uint8, as stored
    labels: np.ndarray  # (N,) int64
    classes: tuple[str, ...]
    images_file: Path
    labels_file: Path

    def __len__(self) -> int:
        return len(self.labels)


def _find(root: Path, stem: str) -> Path | None:
    # The original MNIST mirrors also used "train-images.idx3-ubyte" (a dot, not a dash).
    alt = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", alt, alt + ".gz"):
        if (root / name).is_file():
            return root / name
    return None


def is_idx_dir(path: str | Path) -> bool:
    """True if `path` is a directory holding an IDX images file (train or t10k)."""
    p = Path(path)
    try:
        return p.is_dir() and any(_find(p, SPLIT_FILES[s][0]) for s in SPLIT_FILES)
    except OSError:  # e.g. an unreadable folder: not ours to judge; the folder loader names the problem
        return False


def read_idx(path: str | Path) -> np.ndarray:
    """One IDX file (optionally gzipped) -> numpy array of its declared type and shape."""
    p = Path(path)
    try:
        raw = p.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise InputError(f"{p}: no such file") from None
    except PermissionError:
        raise InputError(f"{p}: permission denied; make the file readable") from None
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise InputError(f"{p}: corrupt gzip stream ({e or type(e).__name__})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES or raw[3] == 0:
        raise InputError(f"{p}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise InputError(f"{p}: truncated IDX header ({len(raw)} bytes for {ndim} dimensions)")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    dtype = _DTYPES[raw[2]]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        # Checked before reshaping: a flipped header byte cannot make us allocate gigabytes.
        what = "truncated" if len(raw) < expected else "has trailing bytes"
        raise InputError(f"{p}: {what}: header says {shape} x {dtype.itemsize} bytes "
                         f"({expected} bytes with header), file has {len(raw)}")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape)


def class_names(root: Path, n_labels: int) -> tuple[str, ...]:
    names_file = root / "classes.txt"
    if names_file.is_file():
        names = tuple(s.strip() for s in names_file.read_text(encoding="utf-8").splitlines() if s.strip())
        if len(names) < n_labels:
            raise InputError(f"{names_file}: {len(names)} class names, but labels go up to {n_labels - 1}")
        return names
    if "fashion" in root.resolve().name.lower() and n_labels <= len(FASHION_MNIST_CLASSES):
        return FASHION_MNIST_CLASSES
    return tuple(str(i) for i in range(max(n_labels, 10)))


@lru_cache(maxsize=4)
def _load_cached(root: str, split: str, mtimes: tuple[float, ...]) -> IdxSplit:
    del mtimes  # part of the cache key only: a replaced file is read again
    r = Path(root)
    img_stem, lbl_stem = SPLIT_FILES[split]
    img_file, lbl_file = _find(r, img_stem), _find(r, lbl_stem)
    if img_file is None or lbl_file is None:
        missing = img_stem if img_file is None else lbl_stem
        raise InputError(f"{r}: no {missing}[.gz]; an IDX data set needs the {split} images and labels")
    images, labels = read_idx(img_file), read_idx(lbl_file)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise InputError(f"{img_file}: expected (N, H, W) uint8 images, found {images.shape} {images.dtype}")
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise InputError(f"{lbl_file}: expected (N,) integer labels, found {labels.shape} {labels.dtype}")
    if len(images) != len(labels):
        raise InputError(f"{lbl_file}: {len(labels)} labels for {len(images)} images in {img_file.name}")
    if len(labels) == 0:
        raise InputError(f"{img_file}: holds no images")
    labels = labels.astype(np.int64)
    if labels.min() < 0:
        raise InputError(f"{lbl_file}: negative label {int(labels.min())}")
    images.setflags(write=False)
    labels.setflags(write=False)
    classes = class_names(r, int(labels.max()) + 1)
    return IdxSplit(images, labels, classes, img_file, lbl_file)


def load_split(root: str | Path, split: str) -> IdxSplit:
    """The raw `split` ("train" or "test") of the IDX data set in `root` (cached per process)."""
    r = Path(root)
    if not r.is_dir():
        raise InputError(f"{r}: no such folder")
    stamps = tuple(p.stat().st_mtime for s in SPLIT_FILES[split] if (p := _find(r, s)))
    return _load_cached(str(r.resolve()), split, stamps)


def to_model_size(gray: np.ndarray, spec: PreprocessSpec, progress: str | None = None) -> np.ndarray:
    """(N, h, w) uint8 grayscale -> (N, H, W, 3) uint8 RGB at the model input size."""
    from PIL import Image

    h, w = spec.input_size
    out = np.empty((len(gray), h, w, 3), np.uint8)
    order: Iterable[int] = range(len(gray))
    if progress and len(gray) >= 2000:
        from vitedge.progress import track

        order = track(order, description=progress)
    for i in order:
        # Same path as a PNG through load_image (mode L -> RGB) + resize_and_crop: bit-identical.
        out[i] = resize_and_crop(Image.fromarray(np.ascontiguousarray(gray[i])).convert("RGB"), spec)
    return out
