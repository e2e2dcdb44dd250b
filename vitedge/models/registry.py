"""The model registry: every architecture vitedge can build, by name.

After timm's `_registry.py`: a family module decorates one builder per configuration with
`@register_model(...)`; the CLI's choices (`vitedge models`) and the test matrix are read from
here, so adding an architecture is adding one decorated function.

Names are `family-size` ("vit-tiny", "convnext-atto"); timm models are reached as "timm:NAME"
(see `vitedge.models.timm_models`). Weights are not part of a registry entry except for the
built-in models, whose trained checkpoints ship inside the package (`builtin_weights`).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vitedge.calib.preprocess import PreprocessSpec
from vitedge.errors import UsageError


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str  # "vit" | "convnext"
    builder: Callable[..., Any]  # (**config) -> nn.Module
    config: dict[str, Any]  # the full default configuration passed to `builder`
    preprocess: PreprocessSpec
    description: str = ""
    builtin_weights: str | None = None  # file name under vitedge/weights/ for built-in models


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    *,
    family: str,
    preprocess: PreprocessSpec,
    description: str = "",
    builtin_weights: str | None = None,
    **config: Any,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register `builder(**config)` under `name` (decorator)."""

    def wrap(builder: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelEntry(
            name, family, builder, dict(config), preprocess, description, builtin_weights
        )
        return builder

    return wrap


def _ensure_loaded() -> None:
    # Family modules register themselves on import; importing them here keeps
    # `list_models()` complete whichever module the caller imported first.
    from vitedge.models import convnext, vit  # noqa: F401


def list_models(family: str | None = None, builtin_only: bool = False) -> list[str]:
    _ensure_loaded()
    return [
        n
        for n, e in _REGISTRY.items()
        if (family is None or e.family == family) and (not builtin_only or e.builtin_weights)
    ]


def get_entry(name: str) -> ModelEntry:
    _ensure_loaded()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UsageError(
            f"unknown model {name!r}.{hint} `vitedge models` lists them; timm models are 'timm:NAME'."
        )
    return _REGISTRY[name]


def build_model(name: str, **overrides: Any) -> Any:
    """A freshly initialised nn.Module for registry `name` with config `overrides`."""
    entry = get_entry(name)
    unknown = set(overrides) - set(entry.config)
    if unknown:
        raise UsageError(
            f"model {name!r} has no option(s) {sorted(unknown)}; it takes {sorted(entry.config)}"
        )
    return entry.builder(**{**entry.config, **overrides})
