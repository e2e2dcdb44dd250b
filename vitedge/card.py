"""The model card: metadata that travels with the weights into every checkpoint and artifact.

Architecture + config (enough to rebuild the module), preprocessing, class names, metrics and
provenance. Stored in the safetensors header of a checkpoint, in ONNX `metadata_props`, and in
every bundle's `manifest.json`. Pure Python (device side).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from vitedge import __version__
from vitedge.calib.preprocess import PreprocessSpec

CARD_FORMAT = "vitedge-model-card"
CARD_VERSION = 1


@dataclass(frozen=True)
class ModelCard:
    arch: str  # registry name ("vit-tiny") or "timm:<name>"
    config: dict[str, Any]  # builder keyword arguments (the full configuration)
    preprocess: PreprocessSpec
    classes: tuple[str, ...]
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # where the weights came from (file, "builtin", "random-init")
    vitedge_version: str = __version__

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def spatial_size(self) -> str:
        """How the input size may vary after export: "any" (convolutional), "dynamic_img_size"
        (a timm ViT that can resample its position table in the graph) or "fixed"."""
        meta = self.config.get("_vitedge")
        if isinstance(meta, dict) and isinstance(meta.get("spatial_size"), str):
            return meta["spatial_size"]
        return "any" if self.family in ("convnext", "cnn") else "fixed"

    @property
    def untrained(self) -> bool:
        """Random-init weights: parity is judged without the arg-max gates (verify.tolerances)."""
        return self.source == "random-init"

    @property
    def untrained_fix(self) -> str | None:
        """What was done to a signal-less random init (vitedge.models.untrained), if anything."""
        meta = self.config.get("_vitedge")
        fix = meta.get("random_init") if isinstance(meta, dict) else None
        return fix.get("what") if isinstance(fix, dict) else None

    @property
    def family(self) -> str:
        """"vit" | "convnext" | "cnn" | "hybrid" | "unknown" (see vitedge.models.family).

        timm cards carry the family observed when the model was loaded (config["_vitedge"],
        written by vitedge.models.timm_models). Built-in models and cards written before that
        existed can only be ViT/DeiT or ConvNeXt(-V2) (the old timm allowlist), so the name
        decides for them; any other name without a recorded family is "unknown"."""
        meta = self.config.get("_vitedge")
        if isinstance(meta, dict) and isinstance(meta.get("family"), str):
            return meta["family"]
        a = self.arch.removeprefix("timm:")
        if a.startswith("convnext"):
            return "convnext"
        if self.arch.startswith("timm:") and not a.startswith(("vit_", "deit_", "deit3_")):
            return "unknown"
        return "vit"

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": CARD_FORMAT,
            "format_version": CARD_VERSION,
            "arch": self.arch,
            "config": _jsonable(self.config),
            "preprocess": self.preprocess.to_dict(),
            "classes": list(self.classes),
            "metrics": self.metrics,
            "training": self.training,
            "source": self.source,
            "vitedge_version": self.vitedge_version,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelCard:
        if d.get("format") != CARD_FORMAT:
            raise ValueError(f"not a vitedge model card (format={d.get('format')!r})")
        if int(d.get("format_version", 0)) > CARD_VERSION:
            raise ValueError(
                f"model card format {d['format_version']} is newer than this vitedge "
                f"understands ({CARD_VERSION}); upgrade vitedge"
            )
        return cls(
            arch=str(d["arch"]),
            config=dict(d["config"]),
            preprocess=PreprocessSpec.from_dict(d["preprocess"]),
            classes=tuple(str(c) for c in d["classes"]),
            metrics=dict(d.get("metrics", {})),
            training=dict(d.get("training", {})),
            source=str(d.get("source", "")),
            vitedge_version=str(d.get("vitedge_version", "")),
        )

    def with_(self, **changes: Any) -> ModelCard:
        return replace(self, **changes)


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v
