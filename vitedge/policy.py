"""Calibration policy that `export`, `matrix` and `auto` (and the API) share: which images a
target calibrates on when --calib is not given, and when there is no honest default. One
module, so the commands only parse and print (the budget-as-gate rule is in vitedge.plan)."""

from __future__ import annotations

from typing import Any

from vitedge.progress import stderr_console


def default_calibration(card) -> str | None:  # type: ignore[no-untyped-def]
    """The calibration source when --calib is not given: synthetic images for models trained on
    them, and for untrained (random-init) weights, which no data set represents better; for any
    other model there is no honest default."""
    from vitedge.calib import synthetic

    if card.classes == synthetic.CLASSES:
        return "synthetic"
    if card.untrained:
        stderr_console.print("calibration: untrained weights, calibrating on synthetic images (--calib to change)")
        return "synthetic"
    return None


def calibration_for(target, card, calib: str | None, num_calib: int, seed: int,  # type: ignore[no-untyped-def]
                    judges_too: bool = False):
    """Load the calibration set a target needs, before any export work starts. `judges_too`: no
    --eval, so the images calibration leaves judge the artifact (vitedge.inputs)."""
    from vitedge.calib.source import load_calibration
    from vitedge.errors import UsageError

    if not target.needs_calibration:
        return None
    calib = calib or default_calibration(card)
    if calib is None:
        raise UsageError(f"target {target.name} needs calibration data: pass --calib DIR or "
                         "--calib FILE.npy with images like the ones the model will see")
    return load_calibration(calib, card.preprocess, num_calib, seed, judges_too)


def auto_calibration(card, calib: str | None, num_calib: int, seed: int,  # type: ignore[no-untyped-def]
                     judges_too: bool = False):
    """auto-cpu: calibrate INT8 candidates when data is given or there is an honest default."""
    from vitedge.calib.source import load_calibration

    calib = calib or default_calibration(card)
    if calib is None:
        return None  # INT8 candidates are skipped (and say why)
    return load_calibration(calib, card.preprocess, num_calib, seed, judges_too)


def plan_calibration(plan: Any, card: Any, calib: str | None, num_calib: int, seed: int,
                     judges_too: bool = False) -> Any:
    """The calibration set an ExportPlan's target needs (auto: for its INT8 candidates, when
    there is data or an honest default; without, they are skipped and say why)."""
    if plan.is_auto:
        return auto_calibration(card, calib, num_calib, seed, judges_too)
    return calibration_for(plan.candidates[0], card, calib, num_calib, seed, judges_too)


def matrix_calibration(targets: list[Any], card: Any, calib: str | None, num_calib: int, seed: int,
                       judges_too: bool = False) -> Any:
    """One calibration set for every matrix cell that needs one; None when none does or there
    is no honest default (those cells then say what to pass)."""
    needing = [t for t in targets if t.needs_calibration]
    if not needing:
        return None
    calib = calib or default_calibration(card)
    if calib is None:
        return None
    return calibration_for(needing[0], card, calib, num_calib, seed, judges_too)
