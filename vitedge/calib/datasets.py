"""Labelled image sets for the training side (train, `vitedge eval`, probe): shapes10, an image
folder, or a data set in its native format (the MNIST family's IDX files, see vitedge.calib.idx),
recognised by the files in the directory. What an export reads (calibration, parity, the
fallback's search set, accuracy) comes from vitedge.calib.imagesource instead.

All come out the same way: uint8 (N, H, W, 3) pixels already resized/cropped to the model's
input size by the checkpoint's preprocessing spec, plus labels and class names. `as_inputs`
normalises them with the same function the deployed predictor uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vitedge.calib import idx as idx_format
from vitedge.calib import synthetic
from vitedge.calib.folder import ImageFolder, scan_folder
from vitedge.calib.images import load_image
from vitedge.calib.imagesource import SYNTHETIC  # noqa: E402  (one spelling, one place)
from vitedge.calib.preprocess import PreprocessSpec, normalize, resize_and_crop
from vitedge.errors import InputError, UsageError


@dataclass(frozen=True)
class LabelledImages:
    images: np.ndarray  # (N, H, W, 3) uint8 at the model input size
    labels: np.ndarray  # (N,) int64, indices into `classes`
    classes: tuple[str, ...]
    description: str  # where the images came from, for reports

    def __len__(self) -> int:
        return len(self.labels)

    def as_inputs(self, spec: PreprocessSpec) -> np.ndarray:
        """(N, 3, H, W) float32, normalised exactly as the deployed predictor does."""
        return normalize(np.asarray(self.images), spec)

    def subset(self, idx: np.ndarray, note: str = "") -> LabelledImages:
        desc = f"{self.description}{note}"
        return LabelledImages(self.images[idx], self.labels[idx], self.classes, desc)


def synthetic_split(split: str, spec: PreprocessSpec, n: int | None = None, seed: int = 0) -> LabelledImages:
    h, w = spec.input_size
    if h != w:
        raise UsageError(f"the synthetic data set is square; the model expects {h}x{w} inputs")
    data = synthetic.load_split(split, h, n, seed)
    desc = f"shapes10/{split} ({len(data)} images, {h}px, seed {seed})"
    return LabelledImages(data.images, data.labels, data.classes, desc)


def folder_images(
    folder: ImageFolder, spec: PreprocessSpec, classes: tuple[str, ...] | None = None,
    indices: np.ndarray | None = None, progress: bool = True,
) -> LabelledImages:
    """Decode a labelled folder (or a subset of it). `classes`: map folder names onto these."""
    if folder.labels is None:
        raise InputError(f"{folder.root}: needs class subfolders (ROOT/<class>/<image>) for labels")
    if classes is not None:
        unknown = [c for c in folder.classes if c not in classes]
        if unknown:
            raise InputError(
                f"{folder.root}: class folder(s) {unknown[:3]} are not among the model's "
                f"classes ({', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''})"
            )
        remap = np.array([classes.index(c) for c in folder.classes], np.int64)
    else:
        classes = folder.classes
        remap = np.arange(len(classes))
    idx = np.arange(len(folder)) if indices is None else np.asarray(indices)
    images = np.empty((len(idx), *spec.input_size, 3), np.uint8)
    order = range(len(idx))
    if progress and len(idx) >= 200:
        from vitedge.progress import track

        order = track(order, description=f"reading {folder.root.name}")
    for i in order:
        images[i] = resize_and_crop(load_image(folder.paths[idx[i]]), spec)
    labels = remap[np.asarray(folder.labels)[idx]]
    return LabelledImages(images, labels, classes, f"{folder.root} ({len(idx)} images)")


def idx_images(
    root: str | Path, split: str, spec: PreprocessSpec, classes: tuple[str, ...] | None = None,
    indices: np.ndarray | None = None, note: str = "",
) -> LabelledImages:
    """A split of an IDX data set (or a subset of it). `classes`: map its names onto these."""
    raw = idx_format.load_split(root, split)
    remap = np.arange(len(raw.classes))
    if classes is not None and tuple(classes) != raw.classes:
        unknown = [c for c in raw.classes if c not in classes]
        if unknown:
            raise InputError(
                f"{root}: class(es) {unknown[:3]} of this data set are not among the model's "
                f"classes ({', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''})"
            )
        remap = np.array([classes.index(c) for c in raw.classes], np.int64)
    idx = np.arange(len(raw)) if indices is None else np.asarray(indices)
    images = idx_format.to_model_size(raw.images[idx], spec, progress=f"reading {Path(root).name}/{split}")
    desc = f"{root} ({split} split: {len(idx)} of {len(raw)} images{note})"
    return LabelledImages(images, remap[raw.labels[idx]], tuple(classes or raw.classes), desc)


def eval_data(
    data: str, spec: PreprocessSpec, classes: tuple[str, ...], n: int | None = None, seed: int = 0,
    exclude: frozenset[str] = frozenset(),
) -> LabelledImages:
    """The held-out labelled set: shapes10/test, an IDX data set's test split, or a labelled
    folder (optionally a seeded subset).

    `exclude`: image paths that must not be evaluated on (e.g. used for calibration).
    """
    if data == SYNTHETIC:
        if tuple(classes) != synthetic.CLASSES:
            raise UsageError(
                "the model was not trained on the synthetic shapes10 classes, so its accuracy "
                "cannot be measured on them; pass a labelled image folder (--data/--eval DIR)"
            )
        return synthetic_split("test", spec, n, seed)
    if idx_format.is_idx_dir(data):
        # The published test split; calibration/training never read it, so nothing to exclude.
        n_test = len(idx_format.load_split(data, "test"))
        keep = None if n is None or n >= n_test else np.sort(
            np.random.default_rng(seed).choice(n_test, n, replace=False))
        return idx_images(data, "test", spec, classes, keep, f", seed {seed}" if keep is not None else "")
    folder = scan_folder(data, labelled=True)
    keep = np.array([i for i, p in enumerate(folder.paths) if str(p) not in exclude], np.int64)
    if len(keep) == 0:
        raise InputError(f"{data}: every image was used for calibration; nothing is left to evaluate on")
    if n is not None and n < len(keep):
        keep = np.sort(np.random.default_rng(seed).choice(keep, n, replace=False))
    data_set = folder_images(folder, spec, classes, keep)
    if exclude and len(keep) < len(folder):
        note = f" [{len(folder) - len(keep)} calibration images held out]"
        return LabelledImages(data_set.images, data_set.labels, data_set.classes, data_set.description + note)
    return data_set


def train_val_data(data: str | Path, spec: PreprocessSpec, seed: int = 0,
                   n_train: int | None = None) -> tuple[LabelledImages, LabelledImages]:
    """Training and validation sets: shapes10 train/val, a 90/10 split of an IDX data set's
    training split (`n_train` caps its training part), DIR/train + DIR/val, or a 90/10 split."""
    if str(data) == SYNTHETIC:
        return synthetic_split("train", spec, n_train, seed), synthetic_split("val", spec, None, seed)
    root = Path(data)
    if idx_format.is_idx_dir(root):
        # A seeded 90/10 split of the published training split; its test split stays unseen.
        n_all = len(idx_format.load_split(root, "train"))
        perm = np.random.default_rng(seed).permutation(n_all)
        n_val = n_all // 10
        train_idx = np.sort(perm[n_val:] if n_train is None else perm[n_val:][:n_train])
        train = idx_images(root, "train", spec, None, train_idx, f", train part, seed {seed}")
        val = idx_images(root, "train", spec, None, np.sort(perm[:n_val]), f", val part, seed {seed}")
        return train, val
    if (root / "train").is_dir() and (root / "val").is_dir():
        train = folder_images(scan_folder(root / "train", labelled=True), spec)
        val = folder_images(scan_folder(root / "val", labelled=True), spec, train.classes)
        return train, val
    folder = scan_folder(root, labelled=True)
    if len(folder) < 10:
        raise InputError(f"{root}: {len(folder)} images is too few to train on (need >= 10)")
    perm = np.random.default_rng(seed).permutation(len(folder))
    n_val = max(1, len(folder) // 10)
    everything = folder_images(folder, spec)
    return (everything.subset(np.sort(perm[n_val:]), " [train 90%]"),
            everything.subset(np.sort(perm[:n_val]), " [val 10%]"))
