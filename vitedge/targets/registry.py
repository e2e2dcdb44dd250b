"""The target registry: every `--target` value, what it builds and how it is run and judged.

A target is one file, `vitedge/targets/<backend>.py`, that declares next to its build function:
its name(s), the runtime that runs the artifact, the precision whose tolerances judge it, the
pip extra it needs, a frozen options dataclass (`vitedge.options`), which graph it starts from
(the fp32 ONNX export or the nn.Module), which option the accuracy-aware fallback extends with
layers kept in higher precision, which `auto-*` device classes consider it, and its functions in
`Hooks` (the build; how `vitedge diagnose` reads its layers; --embed-preprocessing; preflight and
host checks; auto's variants). It registers itself with `register_target(Target(..., hooks=Hooks(...)))`
and is listed by module in `catalog.py` (one line); out-of-tree targets are modules named in the
`VITEDGE_PLUGINS` environment variable (comma-separated). Nothing else in vitedge names a target.

Target modules import their heavy libraries inside the build function, so listing targets is
cheap and never imports a runtime.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

from vitedge.errors import MissingDependencyError, UsageError
from vitedge.options import NoOptions, build_options, option_infos
from vitedge.runtimes.registry import plugin_modules

SOURCES = ("onnx", "module")


@dataclass
class Artifact:
    """What a target's build step produced, inside the bundle directory."""

    main_file: str  # the file (or directory) the runner opens, relative to the bundle
    files: list[str]  # every artifact file (relative; a directory artifact lists its files), for checksums and size
    runtime: str  # a registered runtime (vitedge.runtimes.registry)
    runner_options: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)  # target-specific facts for the report
    notes: list[str] = field(default_factory=list)
    # Parity measured on a stand-in (e.g. a TensorRT-ready ONNX under ONNX Runtime on CPU).
    predicted_by: str | None = None


@dataclass(frozen=True)
class Hooks:
    """What a target does, as functions; everything else on `Target` is declaration."""

    build: Callable[[Any], Artifact]  # (BuildContext) -> Artifact; ctx.options is an `options` instance
    diagnose: Callable[..., Any] | None = None  # (reference, artifact_file, x, work) -> Diagnosis; reference: fp32 ONNX path, or the module for source='module'
    # --embed-preprocessing: (BuildContext, Artifact) -> the artifact rewritten to take uint8 NHWC
    # RGB pixels and preprocess inside (vitedge.export.pixels); its details["input"] says what
    # an app feeds. None: the target cannot (README: which and why).
    embed: Callable[[Any, Artifact], Artifact] | None = None
    preflight: Callable[[Any, Any], None] | None = None  # (options, budget): checks before any work
    # () -> why this machine cannot run its artifact (a CPU feature it needs), or None if it can.
    host_check: Callable[[], str | None] | None = None
    # (model card) -> option sets (field -> value) that auto-* also builds and times as extra
    # candidates: settings that are often faster where only the parity gate can say whether the
    # result is good enough. Empty when the defaults already are that setting for this model.
    auto_variants: Callable[[Any], tuple[dict[str, Any], ...]] | None = None


HOOK_NAMES = tuple(f.name for f in fields(Hooks))


@dataclass(frozen=True, init=False)
class Target:
    """A target's declaration: what it is, what it needs, how it is judged, and its `Hooks`."""

    name: str
    runtime: str  # runtime of the artifact it writes (a kit: the runtime of its CPU stand-in)
    precision: str  # key into vitedge.verify.tolerances.TOLERANCES
    description: str
    hooks: Hooks
    options: type = NoOptions  # frozen dataclass of its settings (vitedge.options)
    extra: str = ""  # pip extra that installs what the build needs: pip install 'vitedge[EXTRA]'
    requires: tuple[str, ...] = ()  # importable modules the build needs
    source: str = "onnx"  # what it starts from: the fp32 ONNX export, or the nn.Module
    needs_calibration: bool = False
    kit: bool = False  # the real runtime cannot run here: parity is predicted by a CPU stand-in
    fallback_option: str | None = None  # options field (node names) the accuracy-aware fallback extends
    auto: tuple[str, ...] = ()  # device classes whose auto-* target considers it ("x86", ...)
    in_matrix: bool = True  # part of `vitedge matrix`'s default list when it can run here
    dynamic_size: bool = False  # its artifact keeps the ONNX export's dynamic height/width (--dynamic-size)
    # onnxslim fusion patterns its runtime does better without (the ONNX export it starts from
    # skips them; `vitedge matrix` then exports once per distinct setting).
    onnx_slim_skip: tuple[str, ...] = ()
    # module rewrites (vitedge.export.rewrites) its ONNX export applies: same maths, a form its
    # runtime runs faster
    export_rewrites: tuple[str, ...] = ()

    def __init__(self, name: str, runtime: str, precision: str, description: str, hooks: Hooks | None = None,
                 **declared: Any) -> None:
        # The hooks used to be fields of their own (Target(build=..., diagnose=...)): still taken,
        # with one deprecation line, so out-of-tree plugins keep working.
        legacy = {k: declared.pop(k) for k in HOOK_NAMES if k in declared}
        if legacy:
            if hooks is not None:
                raise TypeError(f"target {name}: give its hooks in hooks=Hooks(...) only")
            import warnings

            warnings.warn(f"target {name}: Target({', '.join(f'{k}=' for k in legacy)}...) is deprecated; pass "
                          "hooks=Hooks(build=..., ...)", DeprecationWarning, stacklevel=2)
            hooks = Hooks(**legacy)
        if hooks is None:
            raise TypeError(f"target {name}: needs hooks=Hooks(build=...)")
        values: dict[str, Any] = {"name": name, "runtime": runtime, "precision": precision,
                                  "description": description, "hooks": hooks}
        for f in fields(self):
            if f.name not in values:
                values[f.name] = declared.pop(f.name) if f.name in declared else f.default
        if declared:
            raise TypeError(f"target {name}: unknown field(s) {sorted(declared)}")
        for k, v in values.items():
            object.__setattr__(self, k, v)
        self.__post_init__()

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"target {self.name}: source must be one of {SOURCES}")
        if self.fallback_option is not None and self.fallback_option not in {
                i.field for i in option_infos(self.options)}:
            raise ValueError(f"target {self.name}: fallback_option {self.fallback_option!r} is not an option")

    # Read access under the old names (plugins and scripts that read target.build etc.).
    @property
    def build(self) -> Callable[[Any], Artifact]:
        return self.hooks.build

    @property
    def diagnose(self) -> Callable[..., Any] | None:
        return self.hooks.diagnose

    @property
    def embed(self) -> Callable[[Any, Artifact], Artifact] | None:
        return self.hooks.embed

    @property
    def preflight(self) -> Callable[[Any, Any], None] | None:
        return self.hooks.preflight

    @property
    def host_check(self) -> Callable[[], str | None] | None:
        return self.hooks.host_check

    @property
    def auto_variants(self) -> Callable[[Any], tuple[dict[str, Any], ...]] | None:
        return self.hooks.auto_variants

    @property
    def needs_onnx(self) -> bool:
        return self.source == "onnx"

    def export_config(self, cfg: Any) -> Any:
        """The ONNX export settings (an ExportConfig) this target starts from: `cfg` minus the
        onnxslim fusions its runtime does better without, plus the module rewrites it asks for."""
        if not (self.onnx_slim_skip or self.export_rewrites):
            return cfg
        return replace(cfg, slim_skip=tuple(sorted({*cfg.slim_skip, *self.onnx_slim_skip})),
                       rewrites=tuple(sorted({*cfg.rewrites, *self.export_rewrites})))

    def missing(self) -> list[str]:
        """Modules this target needs that are not installed here. Found, not imported: importing
        converters just to list targets is slow and noisy (absl/oneDNN banners, CUDA-kernel load
        failures); a broken install surfaces at build time, caught by the build stage."""
        import importlib.util

        out = []
        for mod in self.requires:
            try:
                found = importlib.util.find_spec(mod) is not None
            except (ImportError, ValueError):  # a parent package missing, or sys.modules[mod] = None
                found = False
            if not found:
                out.append(mod)
        return out

    @property
    def pixel_size(self) -> str:
        """What its pixel artifact takes: "any" size (a graph rewritten after the build), or
        "fixed" at the model's size (a module-based build wraps the network: vitedge.export.pixels)."""
        return "fixed" if self.source == "module" else "any"

    def embed_problem(self, opset: int) -> str | None:
        """Why --embed-preprocessing cannot apply to this target at this ONNX opset, or None."""
        from vitedge.export.pixels import MIN_OPSET

        if self.embed is None:
            able = ", ".join(t.name for t in all_targets() if t.embed)
            return (f"--embed-preprocessing: {self.name} cannot carry the preprocessing (README, 'Preprocessing "
                    f"inside the artifact', says why); targets that can: {able}")
        if self.needs_onnx and opset < MIN_OPSET:
            return (f"--embed-preprocessing needs --opset {MIN_OPSET} or newer (Resize with antialias, Pillow's "
                    f"filter); got --opset {opset}")
        return None

    def unsupported(self) -> str | None:
        return self.host_check() if self.host_check else None

    def check_installed(self) -> None:
        missing = self.missing()
        if missing:
            extra = f"pip install 'vitedge[{self.extra}]'" if self.extra else "see README"
            raise MissingDependencyError(f"target {self.name} needs {', '.join(missing)}; {extra}")
        reason = self.unsupported()
        if reason:
            raise MissingDependencyError(f"target {self.name} cannot run on this machine: {reason}")

    def make_options(self, values: dict[str, Any] | None = None) -> Any:
        return build_options(self.options, dict(values or {}), where=f"target {self.name}")

    def takes(self, key: str) -> bool:
        """Whether `key` (a flag key like "ort-calib-method") is one of its options."""
        return any(key == i.key for i in option_infos(self.options))

    def option_key(self, field_name: str) -> str:
        """The key of one of its options' fields (e.g. its `fallback_option`)."""
        return next(i.key for i in option_infos(self.options) if i.field == field_name)

    def options_from(self, values: dict[str, Any]) -> Any:
        """Its options instance from the values it declares (others belong to other targets)."""
        return self.make_options({k: v for k, v in values.items() if self.takes(k)})


_TARGETS: dict[str, Target] = {}
_loaded = False


def register_target(target: Target) -> Target:
    if target.name in _TARGETS:
        raise ValueError(f"target {target.name!r} registered twice")
    _TARGETS[target.name] = target
    return target


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    from vitedge.targets.catalog import TARGET_MODULES

    for module in (*TARGET_MODULES, *plugin_modules()):
        try:
            importlib.import_module(module)
        except ImportError as e:
            if module in TARGET_MODULES:
                raise
            raise UsageError(f"VITEDGE_PLUGINS: cannot import {module!r} ({e})") from None


def list_targets() -> list[str]:
    _ensure_loaded()
    return list(_TARGETS)


def all_targets() -> list[Target]:
    _ensure_loaded()
    return list(_TARGETS.values())


def get_target(name: str) -> Target:
    _ensure_loaded()
    if name not in _TARGETS:
        known = [*_TARGETS, *AUTO_DEVICES]
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UsageError(f"unknown target {name!r}.{hint} `vitedge targets` lists them.")
    return _TARGETS[name]


# `--target auto-<device>` -> the device class whose candidates it measures (each target
# declares the classes it serves in `Target.auto`). Here, not in vitedge.auto: the registry and
# the CLI's flag table need the names without importing the build side (torch).
# auto-mobile measures on the machine it runs on: run it on the phone/board (or a like CPU).
AUTO_DEVICES: dict[str, str] = {"auto-cpu": "x86", "auto-mobile": "mobile"}


def auto_candidates(auto: str) -> list[Target]:
    device = AUTO_DEVICES[auto]
    # A kit's latency is its CPU stand-in's, which says nothing about the device: never a candidate.
    return [t for t in all_targets() if device in t.auto and not t.kit]
