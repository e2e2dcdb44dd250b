"""One calibration source, thin adapters for each quantiser.

`--calib` takes any image source (vitedge.calib.imagesource): 'synthetic' (shapes10's *train*
split, never the test split accuracy is measured on), an IDX data set (its train part), an image
folder (class subfolders or flat), or a .npy/.npz of preprocessed tensors or raw pixels. A seeded
subset of `num` samples is taken, with a progress bar. Empty, unreadable or wrongly shaped
sources fail here, before any export work starts.

When the same images must also judge the artifact (no --eval: parity runs on what calibration
left of a folder or array), calibration takes at most half of them, so the check is never made
on the images the quantiser's scales were fitted to.

Adapters (after NNCF's `nncf.Dataset(source, transform_fn)` and ONNX Runtime's
`CalibrationDataReader.get_next()`) live at module level so they can be tested on their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vitedge.calib.imagesource import open_source
from vitedge.calib.preprocess import PreprocessSpec
from vitedge.errors import UsageError

DEFAULT_NUM_CALIB = 300


@dataclass(frozen=True)
class CalibrationSet:
    inputs: np.ndarray  # (N, 3, H, W) float32, preprocessed like the deployed model's inputs
    source: str  # "synthetic", a folder or a file
    description: str  # for reports: what was sampled and why it is disjoint from the eval data
    excluded_from_eval: tuple[str, ...] = field(default_factory=tuple)  # keys of the images used (never judged on)
    real: bool = False  # the user's own images (anything but the built-in synthetic set)

    def __len__(self) -> int:
        return len(self.inputs)

    def batches(self, batch_size: int = 1) -> Iterator[np.ndarray]:
        for i in range(0, len(self.inputs), batch_size):
            yield self.inputs[i : i + batch_size]

    def provenance(self) -> dict[str, Any]:
        return {"source": self.source, "samples": len(self), "description": self.description,
                "shape": list(self.inputs.shape[1:])}


def load_calibration(
    source: str, spec: PreprocessSpec, num: int = DEFAULT_NUM_CALIB, seed: int = 0, judges_too: bool = False,
) -> CalibrationSet:
    """`judges_too`: the same source will also judge the artifact (no --eval), so a one-pool
    source (folder, array) gives calibration at most half its images."""
    if num < 1:
        raise UsageError(f"--num-calib {num} must be >= 1")
    src = open_source(source, "--calib")
    take = num
    note = ""
    if src.one_pool and judges_too:
        total = src.pool_size("calib")
        take = min(num, max(1, total - total // 2))  # one image: nothing left to judge on (said then)
        note = f"; the other {total - take} are held out to judge the artifact (no --eval)"
    idx = src.sample("calib", take, seed)
    images = src.read("calib", idx, spec, strict_labels=False)
    if src.kind == "synthetic":
        desc = (f"shapes10/train: {len(idx)} images sampled with seed {seed} "
                "(accuracy uses the disjoint test split)")
    elif src.kind == "idx":
        desc = f"{images.description}, sampled with seed {seed} (accuracy uses the disjoint test split)"
    else:
        desc = (f"{source}: {len(idx)} of {src.pool_size('calib')} images sampled with seed {seed}{note or ' (held out of the parity check when the same source judges it)'}")
    return CalibrationSet(images.x, source, desc, images.keys if src.one_pool else (), src.real)


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
