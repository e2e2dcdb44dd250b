"""One protocol for every runtime (after Polygraphy's `backend/base/runner.py`).

A Runner is activated (as a context manager or with `activate()`), describes its inputs and
outputs as `TensorSpec`s read from the loaded model, and maps a feed `{name: ndarray}` to
`{name: ndarray}`. `infer` validates the feed against the declared inputs (names, dtype, rank,
fixed dimensions) before the runtime sees it, so a wrong feed is one clear error, not a
runtime-specific stack trace. Subclasses (one file per runtime) implement the underscored hooks.
No torch here: the device side imports this.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from vitedge.errors import InputError
from vitedge.runtimes.op_profile import PROFILED_RUNS

# The input of an artifact that preprocesses inside (--embed-preprocessing): uint8 NHWC RGB.
PIXELS_NAME = "pixels"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name, e.g. "float32"
    shape: tuple[int | str | None, ...]  # ints are fixed; str/None are dynamic

    def describe(self) -> str:
        dims = ", ".join("?" if not isinstance(d, int) else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype}[{dims}]"


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class Runner(ABC):
    runtime: ClassVar[str] = "?"

    def __init__(self, name: str | None = None):
        self.name = name or self.runtime
        self.is_active = False

    # -- activation --------------------------------------------------------------------------
    def activate(self) -> Runner:
        if not self.is_active:
            self._activate()
            self.is_active = True
            self._input_specs = {s.name: s for s in self.inputs()}  # validate() runs per call
        return self

    def deactivate(self) -> None:
        if self.is_active:
            self._deactivate()
            self.is_active = False

    def __enter__(self) -> Runner:
        return self.activate()

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    # -- model description -------------------------------------------------------------------
    @abstractmethod
    def inputs(self) -> list[TensorSpec]: ...

    @abstractmethod
    def outputs(self) -> list[TensorSpec]: ...

    def info(self) -> dict[str, Any]:
        """Runtime, version, device, threads and every option that affects numerics or speed."""
        return {"runtime": self.runtime}

    def placement(self) -> dict[str, Any] | None:
        """Where the artifact's ops run, from the runtime's own tools: see `placement_report`.
        None where the runtime has no such tool (or it is not wired yet)."""
        return None

    def op_profile(self, runs: int = PROFILED_RUNS) -> dict[str, Any] | None:
        """Where the time goes, per kernel kind, from the runtime's own profiler, measured on a
        second, profiling instance with this one's settings: `vitedge.runtimes.op_profile`.
        None where the runtime has no profiler here."""
        return None

    def max_batch(self) -> int | None:
        """Largest batch one call accepts (None: no limit beyond memory)."""
        first = self.inputs()[0].shape[0]
        return first if isinstance(first, int) else None

    # -- inference ---------------------------------------------------------------------------
    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.is_active:
            raise RuntimeError(f"{self.name}: activate the runner first (use it in a `with` block)")
        self.validate(feed)
        return self._infer(feed)

    def validate(self, feed: dict[str, np.ndarray]) -> None:
        specs = getattr(self, "_input_specs", None) or {s.name: s for s in self.inputs()}
        missing = [n for n in specs if n not in feed]
        extra = [n for n in feed if n not in specs]
        if missing or extra:
            raise InputError(
                f"{self.name}: feed has inputs {sorted(feed)} but the model takes "
                f"{[s.describe() for s in specs.values()]}"
            )
        for name, arr in feed.items():
            spec = specs[name]
            if not isinstance(arr, np.ndarray):
                raise InputError(f"{self.name}: input {name!r} must be a numpy array, got {type(arr).__name__}")
            if arr.dtype != np.dtype(spec.dtype):
                raise InputError(
                    f"{self.name}: input {name!r} has dtype {arr.dtype}, expected {spec.dtype} "
                    f"({spec.describe()}); convert with .astype(np.{spec.dtype})"
                )
            if arr.ndim != len(spec.shape):
                raise InputError(
                    f"{self.name}: input {name!r} has shape {arr.shape} (rank {arr.ndim}), "
                    f"expected rank {len(spec.shape)} ({spec.describe()})"
                )
            for axis, (got, want) in enumerate(zip(arr.shape, spec.shape, strict=True)):
                if isinstance(want, int) and got != want:
                    raise InputError(
                        f"{self.name}: input {name!r} has shape {arr.shape}; dimension {axis} must be "
                        f"{want} ({spec.describe()})"
                    )
            if arr.size == 0:
                raise InputError(f"{self.name}: input {name!r} is empty (shape {arr.shape})")

    @abstractmethod
    def _activate(self) -> None: ...

    def _deactivate(self) -> None:  # noqa: B027 - optional hook, most runtimes free on GC
        return None

    @abstractmethod
    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def placement_report(fast_path: str, on: dict[str, int], off: dict[str, int], **extra: Any) -> dict[str, Any]:
    """What `Runner.placement` returns: how many of the artifact's ops (compute ops, for int8
    kernels; every op, for a delegate) run on `fast_path` and which do not, by op type."""
    n_on, n_off = sum(on.values()), sum(off.values())
    return {"fast_path": fast_path, "ops": n_on + n_off, "on_fast_path": n_on, "off_fast_path": n_off,
            "on": dict(sorted(on.items())), "off": dict(sorted(off.items(), key=lambda kv: -kv[1])), **extra}


def placement_line(p: dict[str, Any]) -> str:
    """One line for reports and `vitedge bench`: the count, and every op type off the fast path."""
    head = f"{p['on_fast_path']} of {p['ops']} ops on {p['fast_path']}"
    if not p["off_fast_path"]:
        return head
    return head + "; off it: " + ", ".join(f"{k} x{v}" for k, v in p["off"].items())
