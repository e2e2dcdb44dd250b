"""One image source for everything that reads images for an export: calibration, parity, the
accuracy-aware fallback's search set and accuracy.

`--calib` and `--eval` take the same things:
- `synthetic`: shapes10, the built-in data set (labelled with its ten classes);
- an IDX data-set directory (the MNIST family's files, labelled);
- an image folder: `ROOT/<class>/<image>` (labelled) or `ROOT/<image>` (unlabelled, flat);
- a `.npy` / `.npz`: raw pixels (N, H, W, 3) uint8 or preprocessed tensors (N, 3, H, W) float32;
  an `.npz` may carry int labels in an array named `labels` (its images: `images`, else the first).

A source is split once, by its own structure, into parts that never share an image:

    part     shapes10     IDX data set                       folder / array (one pool)
    calib    train        train split without its val part    a seeded sample
    search   val          val part (10% of train, seeded)    a seeded half of what calib left
    eval     test         test split                         what calib and search left

Every image has a key (its path, FILE#i, or split#i); a part of a one-pool source excludes the
keys the other parts took, which is how calibration images never judge the artifact they shaped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vitedge.calib import idx as idx_format
from vitedge.calib import synthetic
from vitedge.calib.preprocess import PreprocessSpec, normalize
from vitedge.errors import InputError, UsageError

SYNTHETIC = "synthetic"
PARTS = ("calib", "search", "eval")
ARRAY_SUFFIXES = (".npy", ".npz")
IDX_VAL_SHARE = 10  # an IDX training split's val part: 1 in 10 images (seeded), as `train` holds out


@dataclass(frozen=True)
class Images:
    """Images of one part, preprocessed exactly as the deployed predictor does."""

    x: np.ndarray  # (N, 3, H, W) float32
    labels: np.ndarray | None  # (N,) int64 indices into the model's classes; None: unlabelled
    keys: tuple[str, ...]  # one per image (see the module docstring)
    description: str  # for reports: which images, how many, from where

    def __len__(self) -> int:
        return len(self.x)


@dataclass(frozen=True)
class ImageSource:
    location: str  # "synthetic", a folder, an IDX directory or a .npy/.npz file
    kind: str  # "synthetic" | "idx" | "folder" | "array"
    labelled: bool
    flag: str = "--eval"  # the flag that named it, for error messages
    # A folder's index (vitedge.calib.folder.ImageFolder), scanned once when it is opened: every
    # part, key and read of this source sees the same listing.
    folder: Any = field(default=None, compare=False, repr=False)

    @property
    def real(self) -> bool:
        """Images from the user's side (anything but the built-in synthetic set)."""
        return self.kind != "synthetic"

    @property
    def one_pool(self) -> bool:
        """Whether all parts draw from one pool (so they must exclude each other's keys)."""
        return self.kind in ("folder", "array")

    # -- sizes and sampling --------------------------------------------------------------------

    def pool_size(self, part: str) -> int:
        if self.kind == "synthetic":
            return synthetic.DEFAULT_SIZES[_SYNTHETIC_SPLIT[part]]
        if self.kind == "idx":
            n = len(idx_format.load_split(self.location, _IDX_SPLIT[part]))
            return n if part == "eval" else (n // IDX_VAL_SHARE if part == "search" else n - n // IDX_VAL_SHARE)
        return len(self._keys())

    def sample(self, part: str, n: int | None, seed: int = 0, exclude: frozenset[str] = frozenset()) -> np.ndarray:
        """Seeded, sorted indices of up to `n` images of `part` (all when n is None), none of
        whose keys is in `exclude`."""
        if part not in PARTS:
            raise ValueError(f"part {part!r} is not one of {PARTS}")
        rng = np.random.default_rng(seed)
        if self.kind == "synthetic":
            total = synthetic.DEFAULT_SIZES[_SYNTHETIC_SPLIT[part]]
            if part == "calib":
                return np.sort(rng.choice(total, min(n or total, total), replace=False))
            return np.arange(min(n or total, total))  # val/test: the first n, as the splits are published
        if self.kind == "idx":
            return self._idx_sample(part, n, seed)
        keys = self._keys()
        pool = np.array([i for i, k in enumerate(keys) if k not in exclude], np.int64)
        if part == "search":  # half of what is left: the other half stays for the report
            take = max(1, min(n or len(pool), len(pool) // 2)) if len(pool) else 0
            return np.sort(np.random.default_rng(seed + 1).permutation(pool)[:take])
        if n is None or n >= len(pool):
            return pool
        return np.sort(rng.choice(pool, n, replace=False))

    def _idx_sample(self, part: str, n: int | None, seed: int) -> np.ndarray:
        if part == "eval":
            n_test = len(idx_format.load_split(self.location, "test"))
            if n is None or n >= n_test:
                return np.arange(n_test)
            return np.sort(np.random.default_rng(seed).choice(n_test, n, replace=False))
        n_all = len(idx_format.load_split(self.location, "train"))
        perm = np.random.default_rng(seed).permutation(n_all)
        val = perm[: n_all // IDX_VAL_SHARE]
        if part == "search":
            return np.sort(val[:n] if n is not None else val)
        rest = np.setdiff1d(np.arange(n_all), val)
        take = min(n or len(rest), len(rest))
        return np.sort(np.random.default_rng(seed + 2).choice(rest, take, replace=False))

    def keys_of(self, part: str, indices: np.ndarray) -> tuple[str, ...]:
        if self.one_pool:
            keys = self._keys()
            return tuple(keys[i] for i in indices)
        split = (_SYNTHETIC_SPLIT if self.kind == "synthetic" else _IDX_SPLIT)[part]
        return tuple(f"{split}#{i}" for i in indices)

    # -- reading -------------------------------------------------------------------------------

    def read(self, part: str, indices: np.ndarray, spec: PreprocessSpec, classes: tuple[str, ...] | None = None,
             strict_labels: bool = True, seed: int = 0) -> Images:
        """The images at `indices` of `part`, preprocessed. Labels are mapped onto `classes`;
        labels that do not map are an error when `strict_labels`, else dropped (parity only).
        `seed`: shapes10's val/test images are rendered with it (its calibration images with 0)."""
        indices = np.asarray(indices, np.int64)
        keys = self.keys_of(part, indices)
        if self.kind == "synthetic":
            x, labels, raw_classes, desc = self._read_synthetic(part, indices, spec, 0 if part == "calib" else seed)
        elif self.kind == "idx":
            x, labels, raw_classes, desc = self._read_idx(part, indices, spec)
        elif self.kind == "folder":
            x, labels, raw_classes, desc = self._read_folder(part, indices, spec)
        else:
            x, labels, raw_classes, desc = self._read_array(indices, spec)
        if labels is not None and classes is not None and raw_classes is not None and tuple(raw_classes) != tuple(classes):
            unknown = [c for c in raw_classes if c not in classes]
            if unknown:
                if strict_labels:
                    raise InputError(
                        f"{self.flag} {self.location}: class(es) {unknown[:3]} are not among the model's classes "
                        f"({', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''})")
                labels, desc = None, desc + "; its class names are not the model's, so no accuracy"
            else:
                labels = np.array([classes.index(c) for c in raw_classes], np.int64)[labels]
        return Images(x, labels, keys, desc)

    def read_pixels(self, part: str, indices: np.ndarray, spec: PreprocessSpec, seed: int = 0,
                    max_short: int | None = None) -> list[np.ndarray]:
        """The images at `indices` of `part` as decoded uint8 RGB (H, W, 3), each at its own size:
        what a camera or decoder gives an artifact that preprocesses inside (--embed-preprocessing).
        `read` of the same indices is these through the Python preprocessing (same decoder).
        `max_short`: a photo whose shorter side is longer is first scaled down to it (Pillow,
        bilinear; what a camera's preview stream gives), so that a folder of large photos is not
        held in memory at full size (2,000 12-MP photos: 72 GB)."""
        indices = np.asarray(indices, np.int64)
        if self.kind == "folder":
            from PIL import Image

            from vitedge.calib.images import load_image

            out = []
            for i in indices:
                image = load_image(self.folder.paths[i])
                short = min(image.size)
                if max_short and short > max_short:
                    w, h = image.size
                    image = image.resize((round(w * max_short / short), round(h * max_short / short)),
                                         Image.Resampling.BILINEAR, reducing_gap=3.0)
                out.append(np.asarray(image, np.uint8))
            return out
        if self.kind == "idx":  # grayscale -> RGB, as the file loader converts mode L
            raw = idx_format.load_split(self.location, _IDX_SPLIT[part])
            return [np.repeat(raw.images[i][..., None], 3, axis=2) for i in indices]
        if self.kind == "synthetic":
            data = synthetic.render_indices(_SYNTHETIC_SPLIT[part], indices, spec.input_size[0],
                                            seed=0 if part == "calib" else seed)
            return list(np.asarray(data.images))
        arr, _ = _load_array(Path(self.location), self.flag)
        if arr.ndim == 4 and arr.shape[-1] == 3 and arr.dtype == np.uint8:
            return list(arr[indices])
        raise InputError(f"{self.flag} {self.location}: preprocessed arrays cannot judge an artifact that takes "
                         "pixels (--embed-preprocessing); pass a folder of images or (N, H, W, 3) uint8 pixels")

    def _read_synthetic(self, part: str, indices: np.ndarray, spec: PreprocessSpec, seed: int):  # type: ignore[no-untyped-def]
        h, w = spec.input_size
        if h != w:
            raise UsageError(f"the synthetic data set is square; the model expects {h}x{w} inputs")
        split = _SYNTHETIC_SPLIT[part]
        what = "rendering calibration images" if part == "calib" else f"rendering shapes10/{split} ({h}px)"
        data = synthetic.render_indices(split, indices, h, seed=seed, progress=what)
        desc = f"shapes10/{split} ({len(indices)} images, {h}px, seed {seed})"
        return normalize(np.asarray(data.images), spec), np.asarray(data.labels), synthetic.CLASSES, desc

    def _read_idx(self, part: str, indices: np.ndarray, spec: PreprocessSpec):  # type: ignore[no-untyped-def]
        split = _IDX_SPLIT[part]
        raw = idx_format.load_split(self.location, split)
        images = idx_format.to_model_size(raw.images[indices], spec, progress=f"reading {Path(self.location).name}/{split}")
        what = {"calib": "train part", "search": "val part", "eval": "test split"}[part]
        desc = f"{self.location} ({what}: {len(indices)} of {len(raw)} {split}-split images)"
        return normalize(images, spec), raw.labels[indices], raw.classes, desc

    def _read_folder(self, part: str, indices: np.ndarray, spec: PreprocessSpec):  # type: ignore[no-untyped-def]
        from vitedge.calib.folder import load_images

        folder = self.folder
        paths = [folder.paths[i] for i in indices]
        what = "reading calibration images" if part == "calib" else f"reading {folder.root.name}"
        x = load_images(paths, spec, progress=what if len(paths) >= 50 else None)
        labels = None if folder.labels is None else np.asarray(folder.labels, np.int64)[indices]
        kind = "labelled" if self.labelled else "unlabelled"
        return x, labels, folder.classes or None, f"{self.location} ({len(paths)} of {len(folder)} {kind} images)"

    def _read_array(self, indices: np.ndarray, spec: PreprocessSpec):  # type: ignore[no-untyped-def]
        arr, labels = _load_array(Path(self.location), self.flag)
        h, w = spec.input_size
        if arr.ndim == 4 and arr.shape[1:] == (3, h, w) and arr.dtype == np.float32:
            x = np.ascontiguousarray(arr[indices])
        elif arr.ndim == 4 and arr.shape[1:] == (h, w, 3) and arr.dtype == np.uint8:
            x = normalize(arr[indices], spec)
        else:
            raise InputError(
                f"{self.flag} {self.location}: array of shape {arr.shape} and dtype {arr.dtype}; expected "
                f"preprocessed (N, 3, {h}, {w}) float32 or raw pixels (N, {h}, {w}, 3) uint8")
        if not np.isfinite(x).all():
            raise InputError(f"{self.flag} {self.location}: contains NaN/Inf values")
        kind = "labelled" if labels is not None else "unlabelled"
        desc = f"{self.location} ({len(indices)} of {len(arr)} {kind} arrays)"
        return x, None if labels is None else labels[indices], None, desc

    def _keys(self) -> tuple[str, ...]:
        if self.kind == "folder":
            return tuple(str(p) for p in self.folder.paths)
        n = len(_load_array(Path(self.location), self.flag)[0])
        return tuple(f"{self.location}#{i}" for i in range(n))


_SYNTHETIC_SPLIT = {"calib": "train", "search": "val", "eval": "test"}
_IDX_SPLIT = {"calib": "train", "search": "train", "eval": "test"}


def open_source(text: str | Path, flag: str = "--eval") -> ImageSource:
    """Recognise what `text` names, or raise one line naming the flag and what to pass."""
    text = str(text)
    if text == SYNTHETIC:
        return ImageSource(SYNTHETIC, "synthetic", True, flag)
    path = Path(text)
    text = str(path)  # one spelling per file ("./x.npy" is "x.npy"), so keys of one image match
    what = "'synthetic', an image folder, an IDX data-set directory or a .npy/.npz"
    if path.suffix in ARRAY_SUFFIXES:
        if not path.is_file():
            raise InputError(f"{flag} {text}: no such file")
        _, labels = _load_array(path, flag)
        return ImageSource(text, "array", labels is not None, flag)
    if not path.exists():
        raise InputError(f"{flag} {text}: no such folder or file (use {what})")
    if not path.is_dir():
        raise InputError(f"{flag} {text}: not a folder, .npy or .npz (use {what})")
    if idx_format.is_idx_dir(path):
        return ImageSource(text, "idx", True, flag)
    from vitedge.calib.folder import scan_folder

    folder = scan_folder(path)  # raises on empty folders; class subfolders -> labelled
    return ImageSource(text, "folder", folder.labels is not None, flag, folder)


def _load_array(path: Path, flag: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(images, labels or None) from a .npy/.npz, never unpickling objects from a user file."""
    return _load_array_cached(str(path), flag, path.stat().st_mtime_ns)


_ARRAYS: dict[tuple[str, int], tuple[np.ndarray, np.ndarray | None]] = {}


def _load_array_cached(path: str, flag: str, mtime: int) -> tuple[np.ndarray, np.ndarray | None]:
    if (path, mtime) in _ARRAYS:
        return _ARRAYS[(path, mtime)]
    try:
        loaded = np.load(path, allow_pickle=False)
        labels = None
        if isinstance(loaded, np.lib.npyio.NpzFile):
            if not loaded.files:
                raise InputError(f"{flag} {path}: the .npz holds no arrays")
            name = "images" if "images" in loaded.files else next((f for f in loaded.files if f != "labels"), None)
            if name is None:
                raise InputError(f"{flag} {path}: the .npz holds only labels; add the images (array 'images')")
            arr = loaded[name]
            if "labels" in loaded.files:
                labels = np.asarray(loaded["labels"])
        else:
            arr = loaded
    except InputError:
        raise
    except (ValueError, OSError, EOFError) as e:
        raise InputError(f"{flag} {path}: not a readable numpy file ({str(e)[:120]})") from None
    if arr.ndim != 4 or len(arr) == 0:
        raise InputError(f"{flag} {path}: array of shape {arr.shape}; expected a non-empty batch of images "
                         "(N, H, W, 3) uint8 or (N, 3, H, W) float32")
    if labels is not None:
        if labels.shape != (len(arr),) or not np.issubdtype(labels.dtype, np.integer) or labels.min(initial=0) < 0:
            raise InputError(f"{flag} {path}: 'labels' must be {len(arr)} non-negative integers, one per image")
        labels = labels.astype(np.int64)
    _ARRAYS.clear()  # one array file at a time is what an export reads
    _ARRAYS[(path, mtime)] = (arr, labels)
    return arr, labels
