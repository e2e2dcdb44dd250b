"""One calibration source, thin adapters for each quantiser.

`--calib synthetic|DIR|FILE.npy`: the built-in shapes10 *train* split (never the test split that
accuracy is measured on), an image folder (class subfolders or flat), or a .npy/.npz of tensors
that are already preprocessed ((N, 3, H, W) float32) or raw pixels ((N, H, W, 3) uint8, which get
the checkpoint's normalisation). A seeded subset of `num` samples is taken, with a progress bar.
Empty, unreadable or wrongly shaped sources fail here, before any export work starts.

Adapters (after NNCF's `nncf.Dataset(source, transform_fn)` and ONNX Runtime's
`CalibrationDataReader.get_next()`) live at module level so they can be tested on their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vitedge.calib import synthetic
from vitedge.calib.datasets import SYNTHETIC
from vitedge.calib.folder import load_images, scan_folder
from vitedge.calib.preprocess import PreprocessSpec, normalize
from vitedge.errors import InputError, UsageError

DEFAULT_NUM_CALIB = 300


@dataclass(frozen=True)
class CalibrationSet:
    inputs: np.ndarray  # (N, 3, H, W) float32, preprocessed like the deployed model's inputs
    source: str  # "synthetic", a folder or a file
    description: str  # for reports: what was sampled and why it is disjoint from the eval data
    excluded_from_eval: tuple[str, ...] = field(default_factory=tuple)  # image paths to hold out

    def __len__(self) -> int:
        return len(self.inputs)

    def batches(self, batch_size: int = 1) -> Iterator[np.ndarray]:
        for i in range(0, len(self.inputs), batch_size):
            yield self.inputs[i : i + batch_size]

    def provenance(self) -> dict[str, Any]:
        return {"source": self.source, "samples": len(self), "description": self.description,
                "shape": list(self.inputs.shape[1:])}


def load_calibration(
    source: str, spec: PreprocessSpec, num: int = DEFAULT_NUM_CALIB, seed: int = 0,
) -> CalibrationSet:
    if num < 1:
        raise UsageError(f"--num-calib {num} must be >= 1")
    h, w = spec.input_size
    if source == SYNTHETIC:
        if h != w:
            raise UsageError(f"the synthetic data set is square; the model expects {h}x{w} inputs")
        n_train = synthetic.DEFAULT_SIZES["train"]
        idx = np.sort(np.random.default_rng(seed).choice(n_train, min(num, n_train), replace=False))
        data = synthetic.render_indices("train", idx, h, seed=0, progress="rendering calibration images")
        return CalibrationSet(
            normalize(np.asarray(data.images), spec), SYNTHETIC,
            f"shapes10/train: {len(idx)} images sampled with seed {seed} (accuracy uses the disjoint test split)",
        )
    path = Path(source)
    if path.suffix in (".npy", ".npz"):
        return _from_array_file(path, spec, num, seed)
    if not path.exists():
        raise InputError(f"--calib {source}: no such folder or file (use 'synthetic', a folder or a .npy/.npz)")
    if not path.is_dir():
        raise InputError(f"--calib {source}: not a folder, .npy or .npz")
    from vitedge.calib import idx as idx_format

    if idx_format.is_idx_dir(path):  # an IDX data set (MNIST format): a seeded sample of its train split
        x, desc = idx_format.calibration_inputs(path, spec, num, seed)
        return CalibrationSet(x, str(path), desc)
    folder = scan_folder(path)  # raises on empty folders
    paths = list(folder.paths)
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(paths), min(num, len(paths)), replace=False).tolist())
    picked = [paths[i] for i in chosen]
    x = load_images(picked, spec, progress="reading calibration images")
    return CalibrationSet(
        x, str(path),
        f"{path}: {len(picked)} of {len(paths)} images sampled with seed {seed} "
        "(held out of the accuracy check when the same folder is used for --eval)",
        tuple(str(p) for p in picked),
    )


def _from_array_file(path: Path, spec: PreprocessSpec, num: int, seed: int) -> CalibrationSet:
    if not path.is_file():
        raise InputError(f"--calib {path}: no such file")
    try:
        loaded = np.load(path, allow_pickle=False)  # never unpickle objects from a user file
        if isinstance(loaded, np.lib.npyio.NpzFile):
            if not loaded.files:
                raise InputError(f"--calib {path}: the .npz holds no arrays")
            arr = loaded[loaded.files[0]]
        else:
            arr = loaded
    except InputError:
        raise
    except (ValueError, OSError, EOFError) as e:
        raise InputError(f"--calib {path}: not a readable numpy file ({str(e)[:120]})") from None
    h, w = spec.input_size
    if arr.ndim == 4 and arr.shape[1:] == (3, h, w) and arr.dtype == np.float32:
        x = arr
    elif arr.ndim == 4 and arr.shape[1:] == (h, w, 3) and arr.dtype == np.uint8:
        x = normalize(arr, spec)
    else:
        raise InputError(
            f"--calib {path}: array of shape {arr.shape} and dtype {arr.dtype}; expected preprocessed "
            f"(N, 3, {h}, {w}) float32 or raw pixels (N, {h}, {w}, 3) uint8"
        )
    if len(x) == 0:
        raise InputError(f"--calib {path}: the array holds no samples")
    if not np.isfinite(x).all():
        raise InputError(f"--calib {path}: contains NaN/Inf values")
    idx = np.sort(np.random.default_rng(seed).choice(len(x), min(num, len(x)), replace=False))
    return CalibrationSet(np.ascontiguousarray(x[idx], np.float32), str(path),
                          f"{path}: {len(idx)} of {len(x)} tensors sampled with seed {seed}")


# -- adapters ------------------------------------------------------------------------------------


class OrtCalibrationReader:
    """ONNX Runtime's CalibrationDataReader protocol over a CalibrationSet."""

    def __init__(self, calib: CalibrationSet, input_name: str, batch_size: int = 1):
        self.calib = calib
        self.input_name = input_name
        self.batch_size = batch_size
        self._it: Iterator[np.ndarray] | None = None

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._it is None:
            self._it = self.calib.batches(self.batch_size)
        batch = next(self._it, None)
        return None if batch is None else {self.input_name: batch}

    def rewind(self) -> None:
        self._it = None

    def __len__(self) -> int:
        return -(-len(self.calib) // self.batch_size)


def ort_calibration_reader(calib: CalibrationSet, input_name: str, batch_size: int = 1) -> Any:
    """An object that *is* an onnxruntime.quantization.CalibrationDataReader."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(OrtCalibrationReader, CalibrationDataReader):
        pass

    return Reader(calib, input_name, batch_size)


def nncf_dataset(calib: CalibrationSet, input_name: str | None = None) -> Any:
    """An nncf.Dataset yielding one (1, 3, H, W) sample at a time (or {name: sample})."""
    import nncf

    def transform(x: np.ndarray) -> Any:
        return {input_name: x} if input_name else x

    return nncf.Dataset(list(calib.batches(1)), transform)
