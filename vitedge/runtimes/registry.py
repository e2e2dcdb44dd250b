"""The runtime registry: which runner opens which files, and what a device needs for it.

A runtime is one file, `vitedge/runtimes/<name>_runner.py`, holding its Runner subclass and a
module-level `RUNTIME = RuntimeSpec(...)` that declares the files it opens (suffixes such as
".onnx", or a directory suffix such as ".mlpackage"), whether one activated runner may be
called from many threads at once, whether it needs torch on the device, the distributions whose
versions a bundle records for the device, and its install hint. `vitedge bench FILE`,
`vitedge.load()`, `vitedge verify` and the matrix find runners only through this registry.

Declarations import nothing heavy: a device with only onnxruntime never imports OpenVINO.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitedge.errors import MissingDependencyError, UsageError

# In-tree runtime modules, one line each; out-of-tree ones come from VITEDGE_PLUGINS.
RUNTIME_MODULES = (
    "vitedge.runtimes.ort_runner",
    "vitedge.runtimes.openvino_runner",
    "vitedge.runtimes.tensorrt_runner",
    "vitedge.runtimes.torch_runner",
    "vitedge.runtimes.torchao_runner",
    "vitedge.runtimes.aoti_runner",
    "vitedge.runtimes.executorch_runner",
    "vitedge.runtimes.litert_runner",
)


@dataclass(frozen=True)
class RuntimeSpec:
    name: str  # written in bundle manifests
    runner: str  # "module:Class", imported when a runner is opened
    module: str  # the runtime's import name (availability check)
    packages: tuple[str, ...] = ()  # distributions whose versions the device needs (recorded per bundle)
    opens: tuple[str, ...] = ()  # file suffixes it opens (".onnx"); a directory artifact ends in its suffix
    thread_safe: bool = True  # one activated runner may serve concurrent infer() calls
    needs_torch: bool = False  # the device-side runtime itself needs torch
    install: str = ""  # how to install it on a device
    label: str = ""  # how messages name it ("ONNX Runtime"); default: name
    # (language, code) for the bundle README: how an app in that language runs the artifact.
    # Placeholders: {file} {h} {w} {c} (classes) {input_name} {fill} (what goes in the input
    # buffer, from the manifest). Not compiled here unless the README says so.
    snippets: tuple[tuple[str, str], ...] = ()
    # Its own way to run parallel streams for throughput (vitedge.bench.throughput):
    # (streams, cores) -> (runners to open, threads each, runner options). None: one runner per
    # stream with cores // streams threads each.
    parallel: Any = None

    def parallel_plan(self, streams: int, cores: int) -> tuple[int, int, dict[str, Any]]:
        if self.parallel is not None:
            plan: tuple[int, int, dict[str, Any]] = self.parallel(streams, cores)
            return plan
        return streams, max(1, cores // streams), {}

    def available(self) -> bool:
        try:
            return importlib.util.find_spec(self.module) is not None
        except (ImportError, ValueError):
            return False

    def runner_class(self) -> Any:
        module, cls = self.runner.split(":")
        return getattr(importlib.import_module(module), cls)

    def missing_error(self) -> MissingDependencyError:
        return MissingDependencyError(f"this bundle runs on {self.label or self.name}, which is not installed; "
                                      f"{self.install}")


def plugin_modules() -> list[str]:
    """VITEDGE_PLUGINS: modules that register targets and/or runtimes (read by both registries)."""
    return [m.strip() for m in os.environ.get("VITEDGE_PLUGINS", "").split(",") if m.strip()]


_RUNTIMES: dict[str, RuntimeSpec] = {}
_loaded = False


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in RUNTIME_MODULES:
        _register(importlib.import_module(module))
    for module in plugin_modules():
        try:
            mod = importlib.import_module(module)
        except ImportError as e:
            raise UsageError(f"VITEDGE_PLUGINS: cannot import {module!r} ({e})") from None
        if hasattr(mod, "RUNTIME"):
            _register(mod)


def _register(mod: Any) -> None:
    spec = getattr(mod, "RUNTIME", None)
    if not isinstance(spec, RuntimeSpec):
        raise ValueError(f"{mod.__name__} declares no RUNTIME = RuntimeSpec(...)")
    if spec.name in _RUNTIMES and _RUNTIMES[spec.name] != spec:
        raise ValueError(f"runtime {spec.name!r} registered twice")
    _RUNTIMES[spec.name] = spec


def get_runtime(name: str) -> RuntimeSpec:
    _ensure_loaded()
    if name not in _RUNTIMES:
        raise UsageError(f"unknown runtime {name!r}; known: {', '.join(_RUNTIMES)}")
    return _RUNTIMES[name]


def all_runtimes() -> list[RuntimeSpec]:
    _ensure_loaded()
    return list(_RUNTIMES.values())


def runtime_for_file(path: Path) -> RuntimeSpec:
    """The runtime that opens `path`, by its suffix (longest declared suffix wins)."""
    _ensure_loaded()
    name = path.name.lower()
    matches = [(len(s), spec) for spec in _RUNTIMES.values() for s in spec.opens if name.endswith(s.lower())]
    if not matches:
        kinds = sorted({s for spec in _RUNTIMES.values() for s in spec.opens})
        raise UsageError(f"{path}: no runtime opens this kind of file; give a bundle directory or one of "
                         f"{', '.join(kinds)}")
    return max(matches, key=lambda m: m[0])[1]

