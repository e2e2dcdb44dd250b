"""The target registry: every `--target` value, what it builds and how it is run and judged.

A target is a recipe over the pipeline's stages: it starts from the exported fp32 ONNX (or the
module itself), writes its artifact files into the bundle directory, and names the runtime and
runner options that run them and the precision whose tolerances judge them. One file per
backend holds the build functions (`vitedge/targets/<backend>.py`); the CLI's `--target`
choices, `vitedge targets` and the test matrix are read from here.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vitedge.errors import UsageError


@dataclass
class Artifact:
    """What a target's build step produced, inside the bundle directory."""

    main_file: str  # the file the runner opens, relative to the bundle
    files: list[str]  # every artifact file (relative), for checksums and size
    runtime: str  # key into vitedge.runtimes.RUNNERS
    runner_options: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)  # target-specific facts for the report
    notes: list[str] = field(default_factory=list)
    # Parity measured on a stand-in (e.g. a TensorRT-ready ONNX under ONNX Runtime on CPU).
    predicted_by: str | None = None


@dataclass(frozen=True)
class Target:
    name: str
    runtime: str
    precision: str  # key into the tolerance table
    description: str
    builder: str  # "module:function" taking a BuildContext, returning an Artifact
    needs_onnx: bool = True
    needs_calibration: bool = False
    requires: tuple[str, ...] = ()  # importable modules the build needs

    def build(self, ctx: Any) -> Artifact:
        module, fn = self.builder.split(":")
        build_fn: Callable[[Any], Artifact] = getattr(importlib.import_module(module), fn)
        return build_fn(ctx)

    def missing(self) -> list[str]:
        """Modules this target needs that are not importable here."""
        out = []
        for mod in self.requires:
            try:
                importlib.import_module(mod)
            except ImportError:
                out.append(mod)
        return out


_TARGETS: dict[str, Target] = {}


def register_target(target: Target) -> Target:
    if target.name in _TARGETS:
        raise ValueError(f"target {target.name!r} registered twice")
    _TARGETS[target.name] = target
    return target


def _ensure_loaded() -> None:
    importlib.import_module("vitedge.targets.catalog")


def list_targets() -> list[str]:
    _ensure_loaded()
    return list(_TARGETS)


def get_target(name: str) -> Target:
    _ensure_loaded()
    if name not in _TARGETS:
        close = difflib.get_close_matches(name, list(_TARGETS), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UsageError(f"unknown target {name!r}.{hint} `vitedge targets` lists them.")
    return _TARGETS[name]
