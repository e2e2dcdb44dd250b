"""Parity tolerances per precision, in one table (defaults; every one can be overridden).

`max_abs` is on logits, `cosine_min` is the worst per-sample cosine similarity of the logit
vectors and `cosine_mean` their mean, `top1_agreement` the share of samples whose arg-max
matches the reference, and `max_accuracy_drop` the allowed fall in top-1 accuracy (percentage
points) on labelled data. None means "reported, not gated".

INT8 is judged by what users feel (accuracy, agreement, mean cosine) with a loose floor on the
single worst sample: over 2,000 images the worst-case cosine of a good INT8 model sits around
0.98 (measured on the built-ins, whose mean cosine is >= 0.9991), so a 0.99 floor would reject
models that change no prediction.
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


TOLERANCES: dict[str, Tolerance] = {
    # fp32: same maths, different kernels/summation order. 1e-4 on logits is the project goal.
    "fp32": Tolerance(max_abs=1e-4, cosine_min=0.99999, cosine_mean=0.99999, top1_agreement=1.0,
                      max_accuracy_drop=0.0),
    # fp16: ~3 decimal digits per op; logits move by ~1e-3 relative.
    "fp16": Tolerance(max_abs=None, cosine_min=0.9999, cosine_mean=0.9999, top1_agreement=0.999,
                      max_accuracy_drop=0.1),
    # int8: the accuracy budget is what matters; agreement catches silent class swaps.
    "int8": Tolerance(max_abs=None, cosine_min=0.95, cosine_mean=0.998, top1_agreement=0.98,
                      max_accuracy_drop=0.5),
}


def tolerance_for(precision: str, **overrides: float | None) -> Tolerance:
    if precision not in TOLERANCES:
        raise UsageError(f"no tolerance table for precision {precision!r}; known: {sorted(TOLERANCES)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(given) - set(Tolerance.__dataclass_fields__)
    if unknown:
        raise UsageError(f"unknown tolerance(s) {sorted(unknown)}")
    return replace(TOLERANCES[precision], **given)
