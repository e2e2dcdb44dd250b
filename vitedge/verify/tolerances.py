"""Parity tolerances per precision, in one table (defaults; every one can be overridden).

`max_abs` is on logits, `cosine_min` is the worst per-sample cosine similarity of the logit
vectors and `cosine_mean` their mean, `top1_agreement` the share of samples whose arg-max
matches the reference, and `max_accuracy_drop` the allowed fall in top-1 accuracy (percentage
points) on labelled data. None means "reported, not gated".

INT8 is judged by what users feel (accuracy, agreement, mean cosine) with a loose floor on the
single worst sample: over 2,000 images the worst-case cosine of a good INT8 model sits around
0.98 (measured on the built-ins, whose mean cosine is >= 0.9991), so a 0.99 floor would reject
models that change no prediction.

Untrained (random-init) models get their own table. Their logits are nearly flat, so the top-1
class flips on errors far below anything a trained model would notice (measured: a correct
deit_tiny_distilled ort-int8 at 0.875 agreement) and accuracy on labels means nothing. They are
judged on what stays meaningful: cosine, SQNR of the centred logits and the worst error as a
share of the logit spread. Agreement and accuracy are still reported, not gated.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from vitedge.errors import UsageError


@dataclass(frozen=True)
class Tolerance:
    max_abs: float | None = None
    cosine_min: float | None = None
    cosine_mean: float | None = None
    top1_agreement: float | None = None
    max_accuracy_drop: float | None = None  # percentage points
    sqnr_db: float | None = None  # min SQNR of the centred logits (dB)
    max_err_spread: float | None = None  # max |error| / mean logit range
    # Whether the seeded noise inputs are held to the cosine / SQNR / spread floors too. Not for
    # calibrated INT8: its scales are fitted to images, noise is out of distribution by design
    # (measured: timm vit_small untrained, NNCF default model type, 22 dB on images, 12 dB on
    # noise); noise still gates max_abs and finiteness, and every set's numbers are reported.
    noise_gated: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


TOLERANCES: dict[str, Tolerance] = {
    # fp32: same maths, different kernels/summation order. 1e-4 on logits is the project goal.
    "fp32": Tolerance(max_abs=1e-4, cosine_min=0.99999, cosine_mean=0.99999, top1_agreement=1.0,
                      max_accuracy_drop=0.0),
    # fp16: ~3 decimal digits per op; logits move by ~1e-3 relative.
    "fp16": Tolerance(max_abs=None, cosine_min=0.9999, cosine_mean=0.9999, top1_agreement=0.999,
                      max_accuracy_drop=0.1),
    # bf16: fp32's exponent with an 8-bit mantissa (~2-3 digits). Measured with OpenVINO's bf16
    # CPU kernels: the built-ins (10 classes) worst cosine 0.99953, mean 0.999996; a real ImageNet
    # EfficientNet-Lite0 on real photos (1000 classes: the same rounding spread over 100x more
    # logits) worst 0.9982, mean 0.9994, 24/24 top-1 agreement (benchmarks/pretrained.py).
    # Like INT8, its error depends on the inputs: the seeded noise inputs gate finiteness only
    # (that model's noise: cosine mean 0.9974, its photos 0.9994).
    "bf16": Tolerance(max_abs=None, cosine_min=0.995, cosine_mean=0.998, top1_agreement=0.995,
                      max_accuracy_drop=0.2, noise_gated=False),
    # int8: the accuracy budget is what matters; agreement catches silent class swaps. The mean
    # cosine floor is 0.99: a sound recipe on a real ImageNet model measures 0.994-0.995 on real
    # photos with 23-24/24 agreement (EfficientNet-Lite0, SQNR ~19 dB: 1000 logits carry more
    # noise power than 10), a broken one 0.84-0.97 (benchmarks/pretrained.py); the built-ins
    # measure >= 0.9991.
    "int8": Tolerance(max_abs=None, cosine_min=0.95, cosine_mean=0.99, top1_agreement=0.98,
                      max_accuracy_drop=0.5, noise_gated=False),
}


UNTRAINED: dict[str, Tolerance] = {
    # Same maths as fp32 above: 1e-4 absolute still holds; only the arg-max gate goes.
    "fp32": Tolerance(max_abs=1e-4, cosine_min=0.99999, cosine_mean=0.99999, sqnr_db=50.0),
    # The SQNR of the centred logits is the gate; the cosine floors are what that SQNR implies
    # (1 - cos ~ 1 / (2 SNR): 30 dB <-> 0.9995, 15 dB <-> 0.984), not stricter, because raw
    # cosine also counts the common offset of flat logits.
    "fp16": Tolerance(cosine_min=0.998, cosine_mean=0.999, sqnr_db=30.0, max_err_spread=0.05),
    # bf16 has 3 mantissa bits fewer than fp16 (~18 dB less headroom): 20 dB and what it implies.
    "bf16": Tolerance(cosine_min=0.99, cosine_mean=0.995, sqnr_db=20.0, max_err_spread=0.15),
    # A sound INT8 recipe keeps the class-score noise >= 15 dB under the signal (3% of its power)
    # and no error above a third of the logit range; a broken one (wrong scales, an outlier
    # layer quantised per tensor) lands near 0-8 dB (measured: swin_tiny ov-int8 with its
    # classifier head quantised, 6.7 dB).
    "int8": Tolerance(cosine_min=0.9, cosine_mean=0.98, sqnr_db=15.0, max_err_spread=0.33, noise_gated=False),
}
UNTRAINED_NOTE = ("untrained weights (random init): judged on cosine, SQNR of the centred logits and "
                  "max error / logit spread; top-1 agreement and accuracy are reported, not gated "
                  "(nearly flat logits flip their arg-max on tiny errors)")


# With fewer judging images than this, one image moves top-1 agreement and accuracy by more than
# their gates allow (1 of 20 is 5 points against a 0.5-point accuracy budget), so on small sets
# those two are reported with their n and not gated; the per-image cosine floors (and max_abs,
# SQNR where set) are the gate. An explicit --tol-top1-agreement / --tol-accuracy-drop still gates.
SMALL_SET = 200
DISCRETE_GATES = ("top1_agreement", "max_accuracy_drop")


def small_set_note(n: int) -> str:
    return (f"{n} judging images: one image is {100 / n:.1f} pts of top-1 agreement/accuracy, so those are "
            "reported with their n, not gated; the gate is the per-image cosine (and max error)")


def for_small_set(tol: Tolerance, n: int, overridden: set[str]) -> Tolerance:
    """`tol` with the discrete gates off when `n` < SMALL_SET (unless the user set them)."""
    if n >= SMALL_SET:
        return tol
    off: dict[str, Any] = {k: None for k in DISCRETE_GATES if k not in overridden}
    return replace(tol, **off)


def not_judged() -> Tolerance:
    """Nothing gated but finiteness: an artifact with no images of its model's distribution."""
    return Tolerance(noise_gated=False)


# --embed-preprocessing: the artifact resizes in float and rounds once; Pillow, which the
# reference's Python preprocessing uses, rounds to uint8 after each of its two passes, and ONNX
# Runtime's antialiased filter is not quite Pillow's. Measured on scikit-image's photos: mean
# 0.1-0.2 of 255 levels, at most 5 (OpenVINO) or 13 on ~1% of the pixels (ONNX Runtime). That moves
# logits far past fp32's 1e-4, about as much as fp16 arithmetic: vit-tiny onnx-fp32 on shapes10
# (10 classes) worst cosine 0.99994, 2000/2000 top-1; a real ImageNet EfficientNet-Lite0
# onnx-fp32 on 21 real photos (1000 logits carry more of it) worst 0.99960, mean 0.99984, SQNR
# 34.7 dB, 21/21 top-1 (benchmarks/embedded.py). So a pixel artifact's gate is the looser of its
# precision's row and this one, limit by limit, with ~3x margin on those numbers.
PIXELS = Tolerance(max_abs=None, cosine_min=0.998, cosine_mean=0.9995, top1_agreement=0.99,
                   max_accuracy_drop=0.5, sqnr_db=30.0, max_err_spread=0.05)
_UPPER = ("max_abs", "max_accuracy_drop", "max_err_spread")  # limits a larger value loosens


def for_pixels(tol: Tolerance) -> Tolerance:
    """The gate of an artifact that preprocesses inside: each limit the looser of `tol` and PIXELS."""
    out = {}
    for name in Tolerance.__dataclass_fields__:
        a, b = getattr(tol, name), getattr(PIXELS, name)
        if name == "noise_gated":
            out[name] = a and b
        elif a is None or b is None:  # not gated on either side: not gated
            out[name] = None
        else:
            out[name] = max(a, b) if name in _UPPER else min(a, b)
    return Tolerance(**out)


def tolerance_for(precision: str, untrained: bool = False, pixels: bool = False,
                  **overrides: float | None) -> Tolerance:
    """The default gate for `precision` (the untrained table for random-init weights; loosened by
    PIXELS for an artifact that preprocesses inside), with `overrides` (e.g.
    --tol-top1-agreement) applied on top."""
    table = UNTRAINED if untrained else TOLERANCES
    if precision not in table:
        raise UsageError(f"no tolerance table for precision {precision!r}; known: {sorted(TOLERANCES)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(given) - set(Tolerance.__dataclass_fields__)
    if unknown:
        raise UsageError(f"unknown tolerance(s) {sorted(unknown)}")
    base = for_pixels(table[precision]) if pixels else table[precision]
    return replace(base, **given)
