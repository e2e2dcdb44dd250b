"""`vitedge verify BUNDLE`: re-verify an exported bundle on the device, without PyTorch.

1. Integrity: every file's size and sha256 against the manifest (a tampered .onnx/.bin, a
   swapped artifact or an edited file is caught before anything runs).
2. Numerics: the fixed inputs shipped in `reference.npz` are run through the bundle's runtime and
   compared with the PyTorch outputs recorded at export, with the bundle precision's tolerances
   (worst-sample cosine, max |error| for fp32), and with the artifact's own export-time top-1
   (a runtime or CPU that computes differently shows up here).
Exit 0 when both hold; 4 otherwise (the CLI maps the ParityError).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vitedge.bundle.manifest import PIXELS_SUFFIX, REFERENCE, read_manifest
from vitedge.errors import InputError
from vitedge.runtimes.open import open_runner, run_batched, run_pixels
from vitedge.verify.parity import compare
from vitedge.verify.tolerances import Tolerance


@dataclass
class VerifyResult:
    bundle: Path
    target: str
    runtime: str
    integrity: list[str]  # problems; empty when every checksum matches
    sets: dict[str, dict[str, float]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    runner: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.integrity and not self.failures


def _run_set(runner: Any, ref: Any, set_name: str) -> dict[str, np.ndarray]:
    """The set's inputs through the runner: one (N, ...) array, or pixel images of their own
    sizes (an artifact that preprocesses inside: "images/input#0", "#1", ...)."""
    if f"{set_name}/input" in ref.files:
        return run_batched(runner, ref[f"{set_name}/input"])
    prefix = f"{set_name}/input{PIXELS_SUFFIX}"
    keys = sorted((k for k in ref.files if k.startswith(prefix)), key=lambda k: int(k[len(prefix):]))
    return run_pixels(runner, [ref[k] for k in keys])


def verify_bundle(bundle: str | Path, threads: int | None = None) -> VerifyResult:
    manifest = read_manifest(bundle)
    result = VerifyResult(manifest.bundle, manifest.target, manifest.runtime, manifest.checksum_problems())
    if result.integrity:
        return result  # never run an artifact whose files do not match the manifest
    ref_path = manifest.bundle / manifest.data.get("reference", REFERENCE)
    try:
        ref = np.load(ref_path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(f"{ref_path}: unreadable reference outputs ({e})") from None
    tol_data = manifest.data.get("parity", {}).get("tolerance", {})
    # A handful of fixed inputs: per-sample limits only (an agreement rate or an accuracy over
    # four samples means nothing; the export-time top-1 check below covers class swaps).
    tol = Tolerance(max_abs=tol_data.get("max_abs"), cosine_min=tol_data.get("cosine_min"))
    runner = open_runner(manifest, threads)
    with runner:
        result.runner = runner.info()
        sets = sorted({k.split("/")[0] for k in ref.files})
        reference = {s: {k.split("/")[1]: ref[k] for k in ref.files
                         if k.startswith(s + "/") and not k.split("/")[1].startswith("input") and "@" not in k}
                     for s in sets}
        outputs = {s: _run_set(runner, ref, s) for s in sets}
    reference = {s: {o: y for o, y in outs.items() if o in outputs[s]} for s, outs in reference.items()}
    parity = compare(reference, outputs, tol)
    for out_name, by_set in parity.outputs.items():
        for set_name, stats in by_set.items():
            key = f"{set_name}/{out_name}"
            got = outputs[set_name][out_name]
            row = {"max_abs": stats.max_abs, "cosine_min": stats.cosine_min,
                   "top1_agreement": stats.top1_agreement, "nan": stats.nan, "inf": stats.inf}
            if f"{key}@artifact" in ref.files:
                row["same_top1_as_export"] = float((ref[f"{key}@artifact"].argmax(1) == got.argmax(1)).mean())
            result.sets[key] = row
            if stats.nan or stats.inf:
                result.failures.append(f"{key}: {stats.nan} NaN / {stats.inf} Inf values")
            if tol.max_abs is not None and stats.max_abs > tol.max_abs:
                result.failures.append(f"{key}: max_abs {stats.max_abs:.4g} > {tol.max_abs:g}")
            if tol.cosine_min is not None and stats.cosine_min < tol.cosine_min:
                result.failures.append(f"{key}: cosine_min {stats.cosine_min:.6f} < {tol.cosine_min:g}")
            if row.get("same_top1_as_export", 1.0) < 1.0:
                result.failures.append(f"{key}: top-1 differs from the artifact's top-1 at export on "
                                       f"{(1 - row['same_top1_as_export']) * len(got):.0f} of {len(got)} inputs")
    return result
