"""What an export is judged on: parity inputs (seeded random tensors + real preprocessed images)
and, for the accuracy-aware fallback, a held-out search set.

Which images judge an artifact (`judging_data`), in order:
1. `--eval` (labelled: accuracy too; unlabelled folder, .npy/.npz: parity only);
2. else the images of `--calib` that calibration did not use (a folder or array gives
   calibration at most half; an IDX set's test split; shapes10's test split);
3. else, for a model trained on shapes10 or with untrained weights, shapes10's test split;
4. else there are no images of the model's own distribution. FP32/FP16 targets are still judged
   (on noise and shapes10 images: the same maths must give the same numbers on any input), but
   a calibrated INT8 or a BF16 artifact is *not judged*: its error depends on the input
   distribution, and noise or shapes10 would pass or fail it for reasons that say nothing about
   the user's images (a real ImageNet model's ov-int8 measured cosine 0.87 on shapes10, 0.993 on
   real photos).
The search set of the fallback comes from the same source, disjoint from the report's images.

`EvalSpec` names everything the inputs depend on, so a cache keyed by it can never hand one
export another's data (a second `export_target` in one process with another `--eval-n`, seed or
`--eval` gets its own inputs).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from vitedge.calib import synthetic
from vitedge.calib.imagesource import SYNTHETIC, open_source
from vitedge.card import ModelCard
from vitedge.errors import UsageError
from vitedge.verify.parity import RANDOM_SET

# Where the judging images came from (EvalSpec.origin), as reports say it.
FROM_EVAL = "--eval"
FROM_CALIB = "held out of --calib"
FROM_DEFAULT = "the model's own data set (shapes10)"
NO_IMAGES = "no images of the model's own distribution"


@dataclass(frozen=True)
class EvalSpec:
    data: str | None = SYNTHETIC  # an image source (see vitedge.calib.imagesource), or None
    n: int | None = None  # seeded subset of N images (default: all of the part)
    seed: int = 0
    random_n: int = 16  # seeded random inputs in the model's value range
    held_out: frozenset[str] = frozenset()  # image keys never used here (calibration, search set)
    origin: str = FROM_EVAL  # how `data` was chosen (FROM_*), for the report
    # The artifact takes pixels (--embed-preprocessing): "any" size, or "fixed" at the model's
    # size (the app resized and cropped). None: it takes the preprocessed model input.
    pixels: str | None = None


@dataclass
class ParityInputs:
    sets: dict[str, np.ndarray]  # name -> (N, 3, H, W) float32: what the reference runs
    labels: np.ndarray | None  # for the "images" set, when the classes match
    description: str
    notes: list[str]
    representative: bool = True  # the images are of the model's own distribution (or it has none)
    # name -> uint8 (H, W, 3) images the artifact runs instead (EvalSpec.pixels); `sets` holds
    # them through the Python preprocessing
    pixels: dict[str, list[np.ndarray]] | None = None


@dataclass
class SearchSet:
    """Held-out images the accuracy-aware fallback searches on (never the report's)."""

    x: np.ndarray
    labels: np.ndarray | None  # None: unlabelled (a --min-cosine budget only)
    description: str
    paths: frozenset[str]  # keys of the images used here, excluded from the final check


def has_own_data(card: ModelCard) -> bool:
    """shapes10 stands for this model's data: it was trained on it, or it was never trained."""
    return card.classes == synthetic.CLASSES or card.untrained


def judging_data(card: ModelCard, eval_data: str | None, calibration: Any) -> tuple[str | None, str]:
    """(image source, origin) of the images that judge an artifact of `card` (module docstring)."""
    if eval_data is not None:
        return eval_data, FROM_EVAL
    if calibration is not None and calibration.real:
        return calibration.source, FROM_CALIB
    if has_own_data(card):
        return SYNTHETIC, FROM_DEFAULT
    return None, NO_IMAGES


def parity_inputs(card: ModelCard, spec: EvalSpec) -> ParityInputs:
    """Seeded random tensors in the model's value range, plus real preprocessed images; for an
    artifact that takes pixels, the same images as pixels (`pixel_inputs`)."""
    return pixel_inputs(card, spec) if spec.pixels else _model_inputs(card, spec)


PIXEL_NOISE_SIZES = ((1, 1), (3, 4), (4, 3))  # noise images' aspect (h:w) at 1.5x the model size


def pixel_inputs(card: ModelCard, spec: EvalSpec) -> ParityInputs:
    """The images of `_model_inputs` as decoded uint8 pixels (their own size, or resized and
    cropped by the Python preprocessing for a fixed-size artifact: the app's job there), plus
    seeded uint8 noise images of three shapes in place of the random tensors; the reference
    gets each through the Python preprocessing (vitedge.calib.preprocess), the only one there is."""
    from PIL import Image

    from vitedge.calib.preprocess import normalize, resize_and_crop

    base = _model_inputs(card, replace(spec, pixels=None), keep_pixels=True)
    pre = card.preprocess
    h, w = pre.input_size
    rng = np.random.default_rng(spec.seed)
    per = max(1, spec.random_n // len(PIXEL_NOISE_SIZES))
    noise = [rng.integers(0, 256, (int(1.5 * h * a / max(a, b)), int(1.5 * w * b / max(a, b)), 3), np.uint8)
             for a, b in PIXEL_NOISE_SIZES for _ in range(per)]
    pixels = {RANDOM_SET: noise, **(base.pixels or {})}
    if spec.pixels == "fixed":
        pixels = {k: [resize_and_crop(Image.fromarray(p), pre) for p in v] for k, v in pixels.items()}
        sets = {k: normalize(np.stack(v), pre) for k, v in pixels.items()}
    else:
        sets = {k: np.stack([normalize(resize_and_crop(Image.fromarray(p), pre), pre) for p in v])
                for k, v in pixels.items()}
    what = (f"decoded pixels at their own size (shorter side at most {pixel_cap(pre)}), resized inside the artifact"
            if spec.pixels == "any" else
            "pixels resized and cropped by the Python preprocessing (the app's job for this artifact)")
    return ParityInputs(sets, base.labels, f"{base.description}; {what}", base.notes, base.representative, pixels)


def _model_inputs(card: ModelCard, spec: EvalSpec, keep_pixels: bool = False) -> ParityInputs:
    pre = card.preprocess
    h, w = pre.input_size
    lo, hi = pre.input_range()
    rng = np.random.default_rng(spec.seed)
    sets = {RANDOM_SET: rng.uniform(lo, hi, size=(spec.random_n, 3, h, w)).astype(np.float32)}
    src = open_source(spec.data) if spec.data is not None else None
    if src is None or (src.kind == "synthetic" and not has_own_data(card)):
        # Images still exercise realistic numerics, but they are not the model's: no labels, and
        # nothing calibrated is judged on them (module docstring, rule 4).
        note = ("no images of the model's own distribution: float targets are judged on noise and shapes10 "
                "images; INT8/BF16 are not judged: pass --calib DIR (its held-out images judge) or --eval DIR")
        if h != w:
            return ParityInputs(sets, None, "random inputs only", [note], representative=False)
        shapes = open_source(SYNTHETIC)
        idx = shapes.sample("eval", spec.n or 200)
        images = shapes.read("eval", idx, pre, seed=spec.seed)
        sets["images"] = images.x
        pixels = {"images": shapes.read_pixels("eval", idx, pre, seed=spec.seed)} if keep_pixels else None
        return ParityInputs(sets, None, images.description, [note], representative=False, pixels=pixels)
    own_labels = _labels_are_the_models(src, card)
    idx = src.sample("eval", spec.n, spec.seed, spec.held_out)
    if len(idx) == 0:
        raise UsageError(f"{src.location}: every image was used for calibration or the fallback's search; "
                         "nothing is left to judge on: pass --eval with other images")
    images = src.read("eval", idx, pre, card.classes if own_labels else None,
                      strict_labels=spec.origin == FROM_EVAL, seed=spec.seed)
    labels = images.labels if own_labels else None
    sets["images"] = images.x
    held = len(spec.held_out) if src.one_pool else 0
    desc = images.description + (f" [{held} images held out: used to calibrate or search]" if held else "")
    notes = [] if labels is not None else ["accuracy not measured: the judging images are unlabelled (parity only)"]
    if spec.origin == FROM_CALIB:
        desc += f", {FROM_CALIB}"
    pixels = {"images": src.read_pixels("eval", idx, pre, seed=spec.seed, max_short=pixel_cap(pre))} \
        if keep_pixels else None
    return ParityInputs(sets, labels, desc, notes, pixels=pixels)


def pixel_cap(pre: Any) -> int:
    """The longest shorter side a judging photo is handed to a pixel artifact with: twice the
    model's resize, so the artifact still downscales every large photo itself (module docstring
    of vitedge.export.pixels) without holding a folder of full-size photos in memory."""
    from vitedge.calib.preprocess import resize_rule

    _, size = resize_rule(pre)
    return 2 * max(size)


def search_set(card: ModelCard, data: str | None, n: int, seed: int, held_out: frozenset[str],
               need_labels: bool) -> SearchSet:
    """Images for the fallback's search from the judging source, disjoint from the report's."""
    if data is None or (data == SYNTHETIC and not has_own_data(card)):
        raise UsageError("the accuracy-aware fallback searches on images like the model's: pass --calib DIR "
                         "(its held-out images) or --eval DIR")
    src = open_source(data)
    own_labels = _labels_are_the_models(src, card)
    if need_labels and not (src.labelled and own_labels):
        raise UsageError(f"--max-drop needs labelled images ({src.location} has no labels for this model's "
                         "classes): pass --eval DIR with class subfolders, or use --min-cosine, which needs none")
    idx = src.sample("search", n, seed, held_out)
    if len(idx) == 0:
        raise UsageError(f"{src.location}: no images are left for the fallback's search after calibration")
    images = src.read("search", idx, card.preprocess, card.classes if own_labels else None, seed=seed)
    return SearchSet(images.x, images.labels if own_labels else None, images.description + " (search set)",
                     frozenset(images.keys) if src.one_pool else frozenset())


def _labels_are_the_models(src: Any, card: ModelCard) -> bool:
    """Whether `src`'s labels can score this model: shapes10's only for a shapes10 model; a user
    source's are mapped onto the model's classes by name (vitedge.calib.imagesource)."""
    return src.kind != "synthetic" or card.classes == synthetic.CLASSES


def calibration_held_out(calibration: Any) -> frozenset[str]:
    return frozenset(calibration.excluded_from_eval) if calibration is not None else frozenset()
