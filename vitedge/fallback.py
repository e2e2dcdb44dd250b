"""Accuracy-aware mixed precision: move the most sensitive layers back to higher precision until
the artifact meets an accuracy budget (`--max-drop` pts on held-out labelled data, or
`--min-cosine` mean logit cosine), for every INT8 / FP16 target.

The search is rank-then-bisect, not one evaluation per layer:
1. build the target normally and measure it on the *search* set (shapes10 val, or a seeded half
   of an image folder; the final report uses the other, held-out data);
2. if it misses the budget, rank the reduced-precision layers by how much error each introduces
   *on its own* (`vitedge.diagnose`: the layer run in isolation on reference inputs for Q/DQ
   ONNX, bypassing its quantisers for OpenVINO, SQNR lost across it for FP16);
3. keep the top-k layers in high precision, with k = 1, 2, 4, ... until the budget holds, then
   bisect down to the smallest such k: O(log N) builds for N layers;
4. report the kept layers, the accuracy before/after and the latency cost (timed side by side).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from vitedge import interrupts
from vitedge.errors import UsageError
from vitedge.progress import stderr_console


@dataclass(frozen=True)
class Budget:
    max_drop: float | None = None  # accuracy points on the search set
    min_cosine: float | None = None  # mean cosine of logits vs the reference

    def __post_init__(self) -> None:
        if self.max_drop is None and self.min_cosine is None:
            raise UsageError("an accuracy budget needs --max-drop or --min-cosine")
        if self.max_drop is not None and self.max_drop < 0:
            raise UsageError("--max-drop must be >= 0 (accuracy points)")
        if self.min_cosine is not None and not 0 < self.min_cosine <= 1:
            raise UsageError("--min-cosine must be in (0, 1]")

    def met(self, m: dict[str, float]) -> bool:
        ok = True
        if self.max_drop is not None:
            ok &= m["drop_pts"] <= self.max_drop + 1e-9
        if self.min_cosine is not None:
            ok &= m["cosine_mean"] >= self.min_cosine
        return bool(ok)

    def describe(self) -> str:
        parts = []
        if self.max_drop is not None:
            parts.append(f"accuracy drop <= {self.max_drop:g} pts")
        if self.min_cosine is not None:
            parts.append(f"mean cosine >= {self.min_cosine:g}")
        return " and ".join(parts)


@dataclass
class Step:
    kept: int
    accuracy: float
    drop_pts: float
    cosine_mean: float
    met: bool
    seconds: float


@dataclass
class FallbackResult:
    budget: Budget
    search_data: str
    total_layers: int
    ranking: list[dict[str, Any]]  # the ranked candidates (label, node, sensitivity)
    steps: list[Step] = field(default_factory=list)
    kept: list[dict[str, Any]] = field(default_factory=list)
    met: bool = False
    latency_ms: dict[str, float] = field(default_factory=dict)  # "all reduced" vs "final" p50

    def to_dict(self) -> dict[str, Any]:
        first, last = (self.steps[0], self.steps[-1]) if self.steps else (None, None)
        chosen = next((s for s in self.steps if s.kept == len(self.kept) and s.met), last)
        return {
            "budget": asdict(self.budget), "budget_text": self.budget.describe(), "met": self.met,
            "search_data": self.search_data, "total_layers": self.total_layers,
            "kept_high_precision": self.kept, "kept_count": len(self.kept),
            "reduced_precision_count": self.total_layers - len(self.kept),
            "before": asdict(first) if first else None, "after": asdict(chosen) if chosen else None,
            "steps": [asdict(s) for s in self.steps], "latency_ms": self.latency_ms,
            "ranking": self.ranking[:20],
        }


def evaluate_logits(logits: np.ndarray, reference: np.ndarray, labels: np.ndarray | None) -> dict[str, float]:
    """Accuracy, its drop and the mean cosine vs the reference. Unlabelled images (a --min-cosine
    budget) count the reference's top-1 as the label: accuracy is then agreement with PyTorch."""
    if labels is None:
        labels = reference.argmax(1)
    acc = float((logits.argmax(1) == labels).mean())
    ref_acc = float((reference.argmax(1) == labels).mean())
    r, a = reference.astype(np.float64), logits.astype(np.float64)
    cos = (r * a).sum(1) / np.maximum(np.linalg.norm(r, axis=1) * np.linalg.norm(a, axis=1), 1e-300)
    return {"accuracy": acc, "reference_accuracy": ref_acc, "drop_pts": (ref_acc - acc) * 100,
            "cosine_mean": float(np.nan_to_num(cos, nan=-1.0).mean())}


def search(
    ranking: list[str],
    trial: Callable[[list[str]], dict[str, float]],
    budget: Budget,
    initial: dict[str, float],
    result: FallbackResult,
) -> list[str]:
    """Smallest prefix of `ranking` whose high-precision fallback meets the budget.

    `trial(names)` builds the target with `names` kept in high precision and returns its metrics
    (evaluate_logits). Doubling then bisection: O(log N) trials."""
    n = len(ranking)
    cache: dict[int, dict[str, float]] = {0: initial}

    def measure(k: int) -> bool:
        if k not in cache:
            t0 = time.perf_counter()
            cache[k] = trial(ranking[:k])
            m = cache[k]
            result.steps.append(Step(k, m["accuracy"], m["drop_pts"], m["cosine_mean"], budget.met(m),
                                     time.perf_counter() - t0))
            stderr_console.print(f"fallback: {k:3d}/{n} layers in high precision -> accuracy "
                                 f"{m['accuracy']:.2%} (drop {m['drop_pts']:+.2f} pts), cosine {m['cosine_mean']:.5f}"
                                 f"{'  [budget met]' if budget.met(m) else ''}")
        return budget.met(cache[k])

    lo, hi = 0, 1  # lo: known to miss; find hi that meets
    while hi < n and not measure(hi):
        lo, hi = hi, min(n, hi * 2)
    if hi >= n and not measure(n):
        return ranking  # even everything in high precision misses: report that honestly
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if measure(mid):
            hi = mid
        else:
            lo = mid
    return ranking[:hi]


def new_result(budget: Budget, search_data: str, rows: list[Any]) -> FallbackResult:
    ranking = [{"label": r.label, "node": r.node, "op": r.op, "evidence": r.evidence} for r in rows]
    return FallbackResult(budget, search_data, len(rows), ranking)




def fallback_targets() -> list[str]:
    """Targets whose build can keep named layers in higher precision (and rank them)."""
    from vitedge.targets.registry import all_targets

    return [t.name for t in all_targets() if t.fallback_option and t.diagnose]


def run_fallback(target: Any, ctx: Any, artifact: Any, budget: Budget, search_set: Any, reference_logits: np.ndarray,
                 open_runner: Callable[[Path, Any], Any], batch: int = 32) -> tuple[Any, FallbackResult]:
    """Stage: make `artifact` (already built into ctx.bundle_dir) meet `budget`, keeping the
    fewest, most sensitive layers in high precision. Returns the final artifact and the record.

    The target declares the option that holds its kept layers (`Target.fallback_option`) and how
    its layers are ranked (`Target.diagnose`); nothing here knows a target by name."""
    from vitedge.runtimes.open import run_batched

    option = target.fallback_option
    if option is None or target.diagnose is None:
        raise UsageError(f"--max-drop/--min-cosine work on {', '.join(fallback_targets())}, not {target.name}")
    search_x, search_labels, search_desc = search_set.x, search_set.labels, search_set.description

    def logits_of(bundle_dir: Path, art: Any) -> np.ndarray:
        runner = open_runner(bundle_dir, art)
        with runner:
            return next(iter(run_batched(runner, search_x, batch).values()))

    initial = evaluate_logits(logits_of(ctx.bundle_dir, artifact), reference_logits, search_labels)
    result = FallbackResult(budget, search_desc, 0, [])
    result.steps.append(Step(0, initial["accuracy"], initial["drop_pts"], initial["cosine_mean"],
                             budget.met(initial), 0.0))
    if budget.met(initial):
        result.met = True
        return artifact, result

    stderr_console.print(f"fallback: {target.name} misses the budget ({budget.describe()}): accuracy drop "
                         f"{initial['drop_pts']:.2f} pts, cosine {initial['cosine_mean']:.5f}; ranking layers")
    # The ranking reads the float reference the target quantised: its ONNX export, or the module.
    reference = ctx.loaded.module if target.source == "module" else ctx.require_onnx().path
    diag = target.diagnose(reference, ctx.bundle_dir / artifact.main_file, search_x[:16], ctx.work_dir)
    rows = diag.ranking()
    filled = new_result(budget, search_desc, rows)
    result.total_layers, result.ranking = filled.total_layers, filled.ranking
    existing = tuple(getattr(ctx.options, option))
    trials: dict[int, tuple[Path, Any]] = {}

    def trial(names: list[str]) -> dict[str, float]:
        d = ctx.work_dir / f"fallback-{len(names)}"
        d.mkdir()
        tctx = replace(ctx, bundle_dir=d, options=replace(ctx.options, **{option: existing + tuple(names)}))
        try:
            art = target.build(tctx)
            metrics = evaluate_logits(logits_of(d, art), reference_logits, search_labels)
        except Exception as e:  # a candidate the toolchain cannot build counts as a miss
            interrupts.check()
            stderr_console.print(f"fallback: keeping {len(names)} layers failed to build ({str(e)[:120]})")
            return {"accuracy": 0.0, "reference_accuracy": 0.0, "drop_pts": 100.0, "cosine_mean": -1.0}
        trials[len(names)] = (d, art)
        return metrics

    kept_names = search([r.node for r in rows], trial, budget, initial, result)
    k = len(kept_names)
    if k not in trials:  # nothing buildable met the budget (or nothing to keep): the original, said so
        result.met = False
        return artifact, result
    result.met = budget.met(evaluate_cached(result, k))
    result.kept = [{"label": r.label, "node": r.node, "op": r.op, "module": r.module, "evidence": r.evidence}
                   for r in rows[:k]]
    # Keep the all-reduced artifact aside for the side-by-side latency cost, then swap in the winner.
    original = ctx.work_dir / "fallback-original"
    shutil.copytree(ctx.bundle_dir, original)
    for p in list(ctx.bundle_dir.iterdir()):
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    winner_dir, winner = trials[k]
    for p in winner_dir.iterdir():
        shutil.copy2(p, ctx.bundle_dir / p.name) if p.is_file() else shutil.copytree(p, ctx.bundle_dir / p.name)
    result.latency_ms = _latency_cost(open_runner, original, artifact, ctx.bundle_dir, winner, search_x[:1])
    winner.details["fallback_kept"] = [r["node"] for r in result.kept]
    return winner, result


def evaluate_cached(result: FallbackResult, k: int) -> dict[str, float]:
    step = next(s for s in result.steps if s.kept == k)
    return {"accuracy": step.accuracy, "drop_pts": step.drop_pts, "cosine_mean": step.cosine_mean}


def _latency_cost(open_runner: Callable[[Path, Any], Any], a_dir: Path, a: Any, b_dir: Path, b: Any,
                  x: np.ndarray) -> dict[str, float]:
    """p50 of the all-reduced-precision artifact vs the final one, interleaved in one run."""
    from vitedge.bench.latency import time_calls

    ra, rb = open_runner(a_dir, a), open_runner(b_dir, b)
    with ra, rb:
        name_a, name_b = ra.inputs()[0].name, rb.inputs()[0].name
        stats = time_calls({"all_reduced": lambda: ra.infer({name_a: x}), "final": lambda: rb.infer({name_b: x})},
                           len(x), warmup=5, min_runs=20, budget_s=2.0)
    return {"all_reduced_p50": stats["all_reduced"].p50, "final_p50": stats["final"].p50,
            "cost_ratio": stats["final"].p50 / stats["all_reduced"].p50}
