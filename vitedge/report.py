"""The result of one export: what was built, how it compares with PyTorch, how fast it runs.

`ExportReport.to_dict()` is the report.json schema (and the source of report.md, the manifest's
parity summary and matrix cells); its fields are what users and scripts rely on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitedge.bench.latency import LatencyStats
from vitedge.card import ModelCard
from vitedge.targets.registry import Artifact
from vitedge.verify.parity import ParityResult


@dataclass
class ExportReport:
    target: str
    precision: str
    out: Path
    artifact: Artifact
    parity: ParityResult
    latency: dict[str, LatencyStats]  # "artifact", "reference"
    runner_info: dict[str, Any]
    reference_info: dict[str, Any]
    export_info: dict[str, Any] | None
    artifact_bytes: int
    seconds: float
    card: ModelCard
    system: dict[str, Any]
    notes: list[str]
    calibration: dict[str, Any] | None = None
    fallback: dict[str, Any] | None = None
    options: dict[str, Any] | None = None  # the target's options as used
    batch_dim: int | None = None  # the artifact's fixed batch size, None if dynamic
    latency_measured: str = "interleaved in one process"  # or in own processes (BenchConfig.isolated)
    judged_on: str = ""  # which images judged it (ParityInputs.description)
    # memory, load and first inference of the artifact in its own process (vitedge.bench.profile;
    # measured with the isolated timing, None without it)
    device_profile: dict[str, Any] | None = None
    # where the artifact's ops run, from its runtime's own tools (Runner.placement); None: no tool
    placement: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        """Judged and within every gate. An artifact that was not judged has not passed (nor failed)."""
        return self.parity.passed and self.parity.judged

    @property
    def verdict(self) -> str:
        return self.parity.verdict  # "passed" | "failed" | "not judged"

    @property
    def device_profile_note(self) -> str | None:
        """For a kit (its runtime cannot run here, a stand-in predicted its parity): that the device
        profile was not measured, and the kit command that measures it on the device."""
        if self.device_profile is not None or not self.artifact.predicted_by:
            return None
        command = (self.artifact.details or {}).get("device_profile_command")
        where = (f"; on the device, `{command}` in the bundle measures them (`device_profile` and "
                 "`throughput` in its JSON)" if command else "")
        return (f"NOT measured here (the target runtime cannot run on this machine; {self.artifact.predicted_by} "
                f"only stood in for its parity and latency){where}")

    @property
    def speedup(self) -> float:
        return self.latency["reference"].p50 / self.latency["artifact"].p50

    def to_dict(self) -> dict[str, Any]:
        p = self.parity.to_dict()
        acc = self.parity.accuracy or {}
        return {
            "target": self.target,
            "precision": self.precision,
            "passed": self.passed,
            "verdict": self.verdict,
            "judged_on": self.judged_on,
            "artifact": self.artifact.main_file,
            "artifact_files": self.artifact.files,
            "artifact_bytes": self.artifact_bytes,
            "runtime": self.artifact.runtime,
            "predicted_by": self.artifact.predicted_by,
            "parity": p,
            "accuracy": {"reference": acc.get("reference"), "artifact": acc.get("artifact"),
                         "delta_pts": acc.get("delta_pts"), "n": acc.get("n"), "data": acc.get("data")},
            "latency_ms": {k: v.to_dict() for k, v in self.latency.items()},
            "speedup_vs_reference": self.speedup,
            "latency_measured": self.latency_measured,
            "device_profile": self.device_profile,
            "device_profile_note": self.device_profile_note,  # why it is null for a kit, and where to measure it
            "placement": self.placement,
            "runner": self.runner_info,
            "reference_runner": self.reference_info,
            "export": self.export_info,
            "details": self.artifact.details,
            "options": self.options,
            "calibration": self.calibration,
            "fallback": self.fallback,
            "model": {"arch": self.card.arch, "source": self.card.source,
                      "input_size": list(self.card.preprocess.input_size),
                      "classes": len(self.card.classes),
                      "preprocess": self.card.preprocess.to_dict(),
                      # a Hugging Face folder: which class/attention, where each preprocessing value came from
                      **({"hf": self.card.config["_vitedge"]["hf"]}
                         if isinstance(self.card.config.get("_vitedge"), dict) and "hf" in self.card.config["_vitedge"]
                         else {})},
            "system": self.system,
            "seconds": round(self.seconds, 1),
            "notes": self.notes + self.artifact.notes + self.parity.notes,
        }
