"""Metadata that travels inside the ONNX file (`metadata_props`), read back without torch.

Keys: `vitedge.card` (the model card JSON: architecture, preprocessing, classes, metrics),
`vitedge.version`, and per-stage records such as `vitedge.export` and `vitedge.target`.
An app holding only the .onnx file can rebuild the preprocessing from it.
"""

from __future__ import annotations

import json
from typing import Any

from vitedge import __version__
from vitedge.card import ModelCard

CARD_KEY = "vitedge.card"


def set_metadata(model: Any, card: ModelCard, extra: dict[str, str] | None = None) -> None:
    """Write the card and `extra` into an onnx.ModelProto's metadata_props (replacing ours)."""
    props = {CARD_KEY: card.to_json(), "vitedge.version": __version__, **(extra or {})}
    keep = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    for p in keep:
        model.metadata_props.add(key=p.key, value=p.value)
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)
    model.producer_name = "vitedge"
    model.producer_version = __version__


def read_metadata(model: Any) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def card_from_metadata(props: dict[str, str]) -> ModelCard | None:
    if CARD_KEY not in props:
        return None
    return ModelCard.from_dict(json.loads(props[CARD_KEY]))


def update_onnx_metadata(path: Any, props: dict[str, str]) -> None:
    """Add/replace metadata_props of an ONNX file in place (external weights stay untouched)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    existing = {p.key: p for p in model.metadata_props}
    for k, v in props.items():
        if k in existing:
            existing[k].value = v
        else:
            model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
