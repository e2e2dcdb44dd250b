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

from vitedge.bundle.manifest import REFERENCE, read_manifest
from vitedge.errors import InputError
from vitedge.runtimes import runner_class
from vitedge.verify.parity import output_stats
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
    tol = Tolerance(**{k: tol_data.get(k) for k in Tolerance.__dataclass_fields__})
    runner = runner_class(manifest.runtime)(manifest.main_file, threads=threads, **manifest.runner_options)
    with runner:
        result.runner = runner.info()
        in_name = runner.inputs()[0].name
        for set_name in sorted({k.split("/")[0] for k in ref.files}):
            x = ref[f"{set_name}/input"]
            outputs = runner.infer({in_name: x})
            for out_name, got in outputs.items():
                key = f"{set_name}/{out_name}"
                if key not in ref.files:
                    continue
                stats = output_stats(ref[key], got)
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
