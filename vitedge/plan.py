"""One export resolved once, before any model is loaded: `plan_export(...) -> ExportPlan`.

From CLI flags or API arguments: the target (or auto's candidates), its options as the target's
own frozen dataclass (validated here, errors naming the flag), the accuracy budget and the
parity gate it implies, and the export config. The build receives the typed options exactly as
planned (`BuildContext.options`); nothing downstream parses option strings again. A matrix is a
list of plans, one per cell; `auto-*` is one plan whose candidates each take their own options
from the same values.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitedge.errors import UsageError
from vitedge.export.config import ExportConfig
from vitedge.fallback import Budget, fallback_targets
from vitedge.request import ExportRequest
from vitedge.targets.registry import AUTO_DEVICES, Target, auto_candidates, get_target


@dataclass(frozen=True)
class ExportPlan:
    target: str  # a target name, or auto-<device>
    candidates: tuple[Target, ...]  # (the target,) or auto's candidates
    # The target's options instance; for auto, the given values (each candidate takes its own).
    options: Any
    budget: Any = None  # vitedge.fallback.Budget
    tolerance: dict[str, float | None] = field(default_factory=dict)
    export: ExportConfig = ExportConfig()
    embed_preprocessing: bool = False  # the artifact takes pixels (Target.embed)
    max_memory_mb: float | None = None  # auto-*'s device budgets (ExportRequest)
    max_load_ms: float | None = None

    @property
    def is_auto(self) -> bool:
        return self.target in AUTO_DEVICES

    @property
    def needs_calibration(self) -> bool:
        return any(t.needs_calibration for t in self.candidates)

    def request(self, out: Path, **fields: Any) -> ExportRequest:
        """The request the pipeline runs (eval data, timing, calibration, ... in `fields`)."""
        return ExportRequest(target=self.target, out=out, export=self.export, options=self.options,
                             budget=self.budget, tolerance=self.tolerance,
                             embed_preprocessing=self.embed_preprocessing, max_memory_mb=self.max_memory_mb,
                             max_load_ms=self.max_load_ms, **fields)


def plan_export(target: str, values: dict[str, Any] | None = None, *, ignore: tuple[str, ...] | list[str] = (),
                max_drop: float | None = None, min_cosine: float | None = None,
                tolerance: dict[str, float | None] | None = None, export: ExportConfig | None = None,
                embed_preprocessing: bool = False, max_memory_mb: float | None = None,
                max_load_ms: float | None = None) -> ExportPlan:
    """Check everything about `vitedge export` that needs no model, and resolve it."""
    export = export or ExportConfig()
    candidates = tuple(auto_candidates(target)) if target in AUTO_DEVICES else (get_target(target),)
    values = by_key(values or {}, candidates)
    single = None if target in AUTO_DEVICES else candidates[0]
    for flag, value in (("--max-memory-mb", max_memory_mb), ("--max-load-ms", max_load_ms)):
        if value is not None and (single is not None or value <= 0):
            raise UsageError(f"{flag} is a budget auto-* chooses within (a positive number); for one target, "
                             "`vitedge bench BUNDLE` measures memory and load")
    if embed_preprocessing:
        if single is None:
            raise UsageError(f"--embed-preprocessing: pick one target ({target} compares artifacts on the model's "
                             "own input)")
        problem = single.embed_problem(export.opset)
        if problem:
            raise UsageError(problem)
    if ignore:
        if single is None or not single.fallback_option:
            raise UsageError(f"--ignore applies to {', '.join(fallback_targets())}; {target} has no "
                             "reduced-precision layers to keep")
        values[single.option_key(single.fallback_option)] = list(ignore)
    check_applicable(values, list(candidates))
    budget = None
    if max_drop is not None or min_cosine is not None:
        budget = Budget(max_drop=max_drop, min_cosine=min_cosine)
        if single is not None and target not in fallback_targets():
            raise UsageError(f"--max-drop/--min-cosine apply to {', '.join(fallback_targets())}; {target} has no "
                             "reduced-precision layers to move back")
    options: Any = values
    if single is not None:
        options = single.options_from(values)
        if single.preflight is not None:
            single.preflight(options, budget)
    return ExportPlan(target, candidates, options, budget, budget_gate(budget, dict(tolerance or {})), export,
                      embed_preprocessing, max_memory_mb, max_load_ms)


def plan_cells(targets: list[str], values: dict[str, Any] | None = None, *, max_drop: float | None = None,
               min_cosine: float | None = None, export: ExportConfig | None = None) -> list[ExportPlan]:
    """A matrix: one plan per target; the budget applies to the targets that can keep layers in
    higher precision, the others run as usual. Every option must belong to some selected target."""
    values = by_key(values or {}, [get_target(t) for t in targets])
    check_applicable(values, [get_target(t) for t in targets])  # unknown names fail before any work
    able = set(fallback_targets())
    plans = []
    for t in targets:
        target = get_target(t)
        mine = {k: v for k, v in values.items() if target.takes(k)}
        budgeted = t in able and (max_drop is not None or min_cosine is not None)
        plans.append(plan_export(t, mine, max_drop=max_drop if budgeted else None,
                                 min_cosine=min_cosine if budgeted else None, export=export))
    return plans


def budget_gate(budget: Any, tolerance: dict[str, float | None]) -> dict[str, float | None]:
    """The accuracy budget is also the parity gate, so the report and the search agree; a
    tolerance the user set explicitly wins."""
    if budget is None:
        return tolerance
    out = dict(tolerance)
    if out.get("max_accuracy_drop") is None:
        out["max_accuracy_drop"] = budget.max_drop
    if out.get("cosine_mean") is None:
        out["cosine_mean"] = budget.min_cosine
    return out


def option_table() -> dict[str, tuple[str, Any]]:
    """flag key ("ort-calib-method") -> (field type name, OptionInfo), over every registered target."""
    from vitedge.options import option_infos
    from vitedge.targets.registry import all_targets

    table: dict[str, tuple[str, Any]] = {}
    for target in all_targets():
        for info in option_infos(target.options):
            if not info.hidden:
                table.setdefault(info.key, (info.type, info))
    return table


def by_key(values: dict[str, Any], targets: Any) -> dict[str, Any]:
    """Options keyed the one way the code knows them, by key ("ort-calib-method"). A field name
    ("calib_method") is the old spelling the CLI's deprecated --calib-method/--calib-percentile
    hand over (cli.flags.DEPRECATED prints their deprecation line): it means that field in each
    selected target that declares it. This is the only place that spelling is read."""
    from vitedge.options import option_infos

    out: dict[str, Any] = {}
    for key, value in values.items():
        owners = [i.key for t in targets for i in option_infos(t.options) if i.field == key and i.key != key]
        for k in owners or [key]:
            out[k] = value
    return out


def check_applicable(values: dict[str, Any], targets: list[Any]) -> None:
    """Every given option must belong to at least one of the selected targets."""
    for key in values:
        if any(t.takes(key) for t in targets):
            continue
        table = option_table()
        owners = sorted({k for k, (_, info) in table.items() if k == key or info.field == key.replace("-", "_")})
        where = ", ".join(t.name for t in targets)
        if owners:
            raise UsageError(f"--{owners[0]} does not apply to {where}; `vitedge targets --options TARGET` "
                             "lists each target's options")
        close = difflib.get_close_matches(key, list(table), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UsageError(f"--option {key}: no target has this option.{hint}")
