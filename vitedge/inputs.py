"""What an export is judged on: parity inputs (seeded random tensors + real preprocessed images)
and, for the accuracy-aware fallback, a held-out search set.

`EvalSpec` names everything the inputs depend on, so a cache keyed by it can never hand one
export another's data (a second `export_target` in one process with another `--eval-n`, seed or
`--eval` gets its own inputs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vitedge.calib import synthetic
from vitedge.calib.datasets import SYNTHETIC, eval_data, synthetic_split
from vitedge.card import ModelCard
from vitedge.errors import UsageError
from vitedge.verify.parity import RANDOM_SET


@dataclass(frozen=True)
class EvalSpec:
    data: str = SYNTHETIC  # "synthetic" or a labelled image folder
    n: int | None = None  # seeded subset of N images (default: the whole test split)
    seed: int = 0
    random_n: int = 16  # seeded random inputs in the model's value range
    held_out: frozenset[str] = frozenset()  # folder images never used here (calibration, search set)


@dataclass
class ParityInputs:
    sets: dict[str, np.ndarray]  # name -> (N, 3, H, W) float32
    labels: np.ndarray | None  # for the "images" set, when the classes match
    description: str
    notes: list[str]


@dataclass
class SearchSet:
    """Held-out labelled images the accuracy-aware fallback searches on (never the report's)."""

    x: np.ndarray
    labels: np.ndarray
    description: str
    paths: frozenset[str]  # folder images used here, excluded from the final accuracy check


def parity_inputs(card: ModelCard, spec: EvalSpec) -> ParityInputs:
    """Seeded random tensors in the model's value range, plus real preprocessed images."""
    pre = card.preprocess
    h, w = pre.input_size
    lo, hi = pre.input_range()
    rng = np.random.default_rng(spec.seed)
    sets = {RANDOM_SET: rng.uniform(lo, hi, size=(spec.random_n, 3, h, w)).astype(np.float32)}
    if spec.data == SYNTHETIC and card.classes != synthetic.CLASSES:
        # Real images still exercise realistic numerics, but their labels mean nothing here.
        note = "accuracy not measured: the model was not trained on shapes10; pass --eval DIR"
        if h != w:
            return ParityInputs(sets, None, "random inputs only", [note])
        data = synthetic_split("test", pre, spec.n or 200, spec.seed)
        sets["images"] = data.as_inputs(pre)
        return ParityInputs(sets, None, data.description, [note])
    data = eval_data(spec.data, pre, card.classes, spec.n, spec.seed, spec.held_out)
    sets["images"] = data.as_inputs(pre)
    return ParityInputs(sets, np.asarray(data.labels), data.description, [])


def search_set(card: ModelCard, data: str, n: int, seed: int, held_out: frozenset[str]) -> SearchSet:
    from vitedge.calib.datasets import folder_images
    from vitedge.calib.folder import scan_folder

    pre = card.preprocess
    if data == SYNTHETIC:
        if card.classes != synthetic.CLASSES:
            raise UsageError("--max-drop needs labelled images for this model: pass --eval DIR")
        split = synthetic_split("val", pre, n, seed)
        return SearchSet(split.as_inputs(pre), np.asarray(split.labels), split.description + " (search set)",
                         frozenset())
    from vitedge.calib import idx as idx_format

    if idx_format.is_idx_dir(data):  # the validation part of its train split; the report uses its test split
        from vitedge.calib.datasets import idx_search_split

        split = idx_search_split(data, pre, card.classes, n, seed)
        return SearchSet(split.as_inputs(pre), np.asarray(split.labels), split.description, frozenset())
    folder = scan_folder(data, labelled=True)
    pool = [i for i, p in enumerate(folder.paths) if str(p) not in held_out]
    rng = np.random.default_rng(seed + 1)
    half = sorted(rng.permutation(pool)[: max(1, min(n, len(pool) // 2))].tolist())
    images = folder_images(folder, pre, card.classes, np.asarray(half, np.int64))
    return SearchSet(images.as_inputs(pre), np.asarray(images.labels), images.description + " (search half)",
                     frozenset(str(folder.paths[i]) for i in half))


def calibration_held_out(calibration: Any) -> frozenset[str]:
    return frozenset(calibration.excluded_from_eval) if calibration is not None else frozenset()
