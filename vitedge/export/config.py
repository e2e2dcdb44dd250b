"""How the fp32 ONNX graph is exported (no torch here: the CLI reads its defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitedge.errors import UsageError

# One place for the graph's I/O names: every runner and the manifest read them back from the
# model itself, these are only what the exporter writes.
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
MIN_OPSET, MAX_OPSET = 17, 23  # 17: LayerNormalization; 20: Gelu; 23: newest the exporter emits
DEFAULT_OPSET = 20
TWO_GB = 2**31


@dataclass(frozen=True)
class ExportConfig:
    opset: int = DEFAULT_OPSET
    static_batch: int | None = None  # None: dynamic batch axis
    dynamic_size: bool = False  # dynamic height/width axes too (models without fixed-size tables)
    max_batch: int = 1024  # upper bound recorded for the dynamic axis
    exporter: str = "auto"  # auto | dynamo | torchscript
    slim: bool = True
    # onnxslim fusion patterns not applied (a target's `onnx_slim_skip`: see vitedge.targets.registry)
    slim_skip: tuple[str, ...] = ()
    # module rewrites applied before the export (a target's `export_rewrites`: vitedge.export.rewrites)
    rewrites: tuple[str, ...] = ()
    external_data_threshold: int = TWO_GB  # weights above this go to a side file

    def __post_init__(self) -> None:
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise UsageError(f"--opset {self.opset} is out of range; use {MIN_OPSET}..{MAX_OPSET} "
                             "(17+ for LayerNormalization, 20+ for Gelu)")
        if self.static_batch is not None and self.static_batch < 1:
            raise UsageError(f"--static-batch {self.static_batch} must be >= 1")
        if self.exporter not in ("auto", "dynamo", "torchscript"):
            raise UsageError("--exporter must be auto, dynamo or torchscript")


@dataclass
class ExportInfo:
    path: Path
    exporter: str  # which exporter produced the graph
    opset: int
    dynamic_batch: bool
    external_data: bool
    fallback_reason: str | None = None
    slim: dict[str, Any] = field(default_factory=dict)
    dynamic_size: bool = False
    rewrites: dict[str, int] = field(default_factory=dict)  # module rewrite -> layers it swapped

    def to_dict(self) -> dict[str, Any]:
        out = {"exporter": self.exporter, "opset": self.opset, "dynamic_batch": self.dynamic_batch,
               "external_data": self.external_data, "fallback_reason": self.fallback_reason,
               "slim": self.slim, "file": self.path.name, "dynamic_size": self.dynamic_size}
        if self.rewrites:
            out["rewrites"] = self.rewrites
        return out

    @classmethod
    def from_dict(cls, path: Path, d: dict[str, Any]) -> ExportInfo:
        """The inverse of `to_dict` for a graph at `path` (vitedge.export.cache)."""
        return cls(path, d["exporter"], d["opset"], d["dynamic_batch"], d["external_data"], d.get("fallback_reason"),
                   dict(d.get("slim") or {}), d.get("dynamic_size", False), dict(d.get("rewrites") or {}))
