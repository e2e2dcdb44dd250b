"""`--target auto-cpu`: build the CPU candidates, measure them on *this* device, keep the fastest
one that passes its parity gate, and explain the choice.

Every candidate goes through the normal pipeline (one shared ONNX export and one set of
reference outputs). The candidates that pass are then timed again *together*, interleaved in
one run (each in its own process, one at a time: vitedge.bench.isolated), so the choice rests on
ratios measured side by side rather than on separate runs. On a
CPU where INT8 kernels do not pay, an INT8 candidate is simply slower and is not chosen.
The three fastest are then re-timed together on all threads and on fewer (halving to 1): a
small model can run faster on fewer, and the bundle records the count (`max_threads`).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from vitedge.bench.latency import LatencyStats
from vitedge.errors import ExportError, ParityError, VitedgeError
from vitedge.fsutil import atomic_dir
from vitedge.models.resolve import LoadedModel
from vitedge.options import keyed
from vitedge.pipeline import ExportRequest, SharedWork, export_target
from vitedge.progress import stderr_console
from vitedge.report import ExportReport
from vitedge.runtimes.base import default_threads
from vitedge.targets.registry import auto_candidates


@dataclass
class AutoResult:
    chosen: str
    report: ExportReport
    candidates: list[dict[str, Any]]  # one row per candidate: status, parity, latency
    reason: str
    max_threads: int | None = None  # fewer threads than given measured faster (the bundle records it)


@dataclass(frozen=True)
class Candidate:
    label: str  # the target name, plus "(option=value, ...)" for an option variant
    target: str
    options: dict[str, Any]  # the request's options with the variant's on top
    slot: str  # its scratch directory name


def candidates_for(auto: str, request: ExportRequest, card: Any) -> tuple[list[Candidate], list[dict[str, Any]]]:
    """The builds `auto` measures: each candidate target with the user's options, plus the option
    variants the target declares for this model (`Target.auto_variants`) unless the user already
    set those options. Returns (candidates, rows for the ones skipped and why)."""
    out, skipped = [], []
    for target in auto_candidates(auto):
        name = target.name
        missing = target.missing()
        if missing:
            skipped.append({"target": name, "status": f"skipped: {', '.join(missing)} not installed"})
            continue
        unsupported = target.unsupported()
        if unsupported:
            skipped.append({"target": name, "status": f"skipped: {unsupported}"})
            continue
        if target.needs_calibration and request.calibration is None:
            skipped.append({"target": name, "status": "skipped: no calibration data (--calib)"})
            continue
        out.append(Candidate(name, name, dict(request.options), name))
        variants = target.auto_variants(card) if target.auto_variants else ()
        for i, variant in enumerate(variants, 1):
            label = f"{name} ({', '.join(f'{k}={v}' for k, v in variant.items())})"
            variant = keyed(target.options, variant)  # a variant naming no field is a plugin bug
            target.make_options(variant)  # ... and so is one that is not a valid option set
            if set(variant) & set(request.options):
                continue  # the user chose these options: build only what they asked for
            out.append(Candidate(label, name, {**request.options, **variant}, f"{name}.v{i}"))
    return out, skipped


def auto_export_config(request: ExportRequest) -> tuple[Any, str | None]:
    """The export settings candidates are built with. auto measures one batch size, so unless the
    user fixed one (--static-batch) the candidates are built for exactly that batch: a static
    shape lets OpenVINO and ONNX Runtime plan memory and pick kernels once (measured on vit-tiny,
    batch 1: ov-int8 0.72 ms static vs 1.00 ms dynamic, ort-int8 0.73 vs 0.80). Returns the config
    and a note for the report (None when the user's setting is kept)."""
    cfg = request.export
    if cfg.static_batch is not None or cfg.dynamic_size:
        return cfg, None
    batch = request.bench.batch
    return (replace(cfg, static_batch=batch),
            f"candidates built with a static batch of {batch}, the batch auto measured (run_batched pads "
            "or splits other batches; pass --static-batch N to choose for another batch)")


def export_auto(loaded: LoadedModel, request: ExportRequest, auto: str = "auto-cpu") -> AutoResult:
    export_cfg, batch_note = auto_export_config(request)
    request = replace(request, export=export_cfg)
    candidates, rows = candidates_for(auto, request, loaded.card)
    # The bundle is written like any other (fsutil.atomic_dir: refused if --out exists, disk-full
    # and permission errors named, replaced only when complete); the candidates are built inside
    # it and the chosen one's files moved up at the end.
    with atomic_dir(request.out, force=request.force) as bundle:
        scratch = bundle / ".candidates"
        shared = SharedWork(scratch / "shared")
        reports: dict[str, ExportReport] = {}
        slots = {c.label: c.slot for c in candidates}
        for c in candidates:
            stderr_console.print(f"[bold]{auto}[/]: candidate {c.label}")
            try:
                reports[c.label] = export_target(loaded, replace(
                    request, target=c.target, out=scratch / c.slot, force=False, options=c.options), shared)
            except VitedgeError as e:
                rows.append({"target": c.target, "candidate": c.label, "status": f"error: {e}"})
        passing = [n for n, r in reports.items() if r.passed]
        for n, r in reports.items():
            if r.verdict == "not judged":
                rows.append(_row(n, r, None, "not judged: no images of the model's own (pass --calib DIR or --eval DIR)"))
            elif not r.passed:
                rows.append(_row(n, r, None, "failed parity: " + "; ".join(c.describe() for c in r.parity.failures())))
        if not passing:
            raise ParityError(f"{auto}: no candidate passed its parity gate: "
                              + "; ".join(f"{r['target']}: {r['status']}" for r in rows))
        bundles = {n: scratch / slots[n] for n in passing}
        together, profiles = _time_together(passing, reports, bundles, request)
        over = over_budget(profiles, request.max_memory_mb, request.max_load_ms)
        fits = [n for n in passing if n not in over]
        if not fits:
            raise ExportError(f"{auto}: no candidate that passed its gate fits the device budget: "
                              + "; ".join(f"{n}: {why}" for n, why in over.items()))
        chosen = first = choose({n: together[n].p50 for n in fits})
        threads = request.threads or default_threads()
        by_threads = _time_threads(sorted(fits, key=lambda n: together[n].p50)[:THREAD_FINALISTS],
                                   reports, bundles, request, threads)
        if by_threads:
            chosen, chosen_threads = choose(by_threads)
        else:
            chosen_threads = threads
        for n in passing:
            rows.append(_row(n, reports[n], together[n], "chosen" if n == chosen else over.get(n, "passed"),
                             {t: p for (m, t), p in by_threads.items() if m == n}, profiles[n]))
        rows.sort(key=lambda r: (r.get("p50_ms") is None, r.get("p50_ms") or 0))
        reason = explain_choice(first, fits, together, reports)
        if over:
            fastest = choose({n: together[n].p50 for n in passing})
            reason += (f"; the device budget ruled out {len(over)} candidate(s)"
                       + (f", among them the fastest, {fastest} ({over[fastest]})" if fastest in over else ""))
        if by_threads:
            reason += "; " + explain_threads(chosen, chosen_threads, threads, by_threads, first)
        if batch_note:
            reason += f"; {batch_note}"
        max_threads = chosen_threads if chosen_threads < threads else None
        _annotate(scratch / slots[chosen], auto, rows, reason, max_threads)
        for f in (scratch / slots[chosen]).iterdir():
            f.rename(bundle / f.name)
        shutil.rmtree(scratch)
    return AutoResult(chosen, reports[chosen], rows, reason, max_threads)


def _time_side_by_side(contestants: list[Any], input_size: tuple[int, int], request: ExportRequest,
                       what: str, profile: bool = False) -> Any:
    """Bundles timed side by side, each in its own process (they are complete in `scratch`), one
    working at a time: in one process they slow each other down. Stats by contestant name (and,
    with `profile`, the result with each one's device profile too)."""
    from vitedge.bench.isolated import time_isolated
    from vitedge.progress import make_progress

    batch = request.export.static_batch or request.bench.batch
    x = np.random.default_rng(7).standard_normal((batch, 3, *input_size)).astype(np.float32)
    with make_progress() as progress:
        task = progress.add_task(f"timing {what} side by side (own processes)", total=100)
        res = time_isolated(contestants, {batch: x}, request.threads or default_threads(),
                            warmup=request.bench.warmup, min_runs=request.bench.min_runs,
                            budget_s=max(request.bench.budget_s, 1.5 * len(contestants)),
                            on_round=lambda f: progress.update(task, completed=100 * f),
                            profile=tuple(c.name for c in contestants) if profile else ())
        progress.update(task, completed=100)
    return res[batch] if profile else res[batch].stats


def _time_together(names: list[str], reports: dict[str, ExportReport], bundles: dict[str, Path],
                   request: ExportRequest) -> tuple[dict[str, LatencyStats], dict[str, Any]]:
    """Every passing candidate, on all the threads it was given; with each one's device profile
    (memory, load, first inference: vitedge.bench.profile) from the same processes."""
    from vitedge.bench.isolated import Contestant
    from vitedge.bench.profile import from_fields

    res = _time_side_by_side([Contestant(n, bundles[n]) for n in names],
                             reports[names[0]].card.preprocess.input_size, request, f"{len(names)} candidates",
                             profile=True)
    return res.stats, {n: from_fields(res.profiles[n], res.stats[n]) for n in names}


def over_budget(profiles: dict[str, Any], max_memory_mb: float | None, max_load_ms: float | None) -> dict[str, str]:
    """Candidates a device budget rules out -> why (the measured number against the budget)."""
    out = {}
    for n, p in profiles.items():
        why = []
        if max_memory_mb is not None and p.peak_mb is not None and p.peak_mb > max_memory_mb:
            why.append(f"peak {p.peak_mb:.0f} MB > --max-memory-mb {max_memory_mb:g}")
        if max_load_ms is not None and p.load_cold_ms > max_load_ms:
            why.append(f"load {p.load_cold_ms:.0f} ms > --max-load-ms {max_load_ms:g}")
        if why:
            out[n] = "over budget: " + ", ".join(why)
    return out


def choose(p50_ms: dict[Any, Any]) -> Any:
    """The pick among candidates that passed their parity gate: the lowest p50 measured here
    (keys: candidate names, or (name, threads) pairs; a tie goes to the first in sort order, i.e.
    fewer threads). No precision is preferred: where INT8 kernels do not pay (a CPU without VNNI),
    the INT8 candidates are measured slower and lose to fp32."""
    return min(p50_ms, key=lambda n: (p50_ms[n], n))


THREAD_FINALISTS = 3  # the fastest candidates auto also times on fewer threads


def fewer_threads(threads: int) -> list[int]:
    """The thread counts tried besides all `threads`: halving down to 1 (2 -> [1]; 8 -> [4, 2, 1])."""
    out, t = [], threads // 2
    while t >= 1:
        out.append(t)
        t //= 2
    return out


def _time_threads(finalists: list[str], reports: dict[str, ExportReport], bundles: dict[str, Path],
                  request: ExportRequest, threads: int) -> dict[tuple[str, int], float]:
    """The finalists timed side by side on all `threads` and on fewer: on a small model the
    synchronisation of a second thread can cost more than it saves (vit-tiny ov-int8 at 64 px,
    batch 1: 0.69 ms on 1 thread vs 0.83 ms on 2). p50 per (candidate, threads); {} when there is
    nothing fewer to try."""
    from vitedge.bench.isolated import Contestant

    counts = [threads, *fewer_threads(threads)]
    if len(counts) == 1:
        return {}
    keys = {f"{n} @{t}": (n, t) for n in finalists for t in counts}
    stats = _time_side_by_side([Contestant(k, bundles[n], threads=t) for k, (n, t) in keys.items()],
                               reports[finalists[0]].card.preprocess.input_size, request,
                               f"the {len(finalists)} fastest on {', '.join(map(str, counts))} threads")
    return {keys[k]: s.p50 for k, s in stats.items()}


def explain_threads(chosen: str, chosen_threads: int, threads: int, by_threads: dict[tuple[str, int], float],
                     first: str | None = None) -> str:
    """How the (candidate, threads) re-timing decided; `first`: the pick of the first timing."""
    mine = {t: p for (n, t), p in by_threads.items() if n == chosen}
    counts = ", ".join(map(str, sorted({t for _, t in by_threads}, reverse=True)))
    how = f"the fastest {len({n for n, _ in by_threads})} re-timed together on {counts} threads"
    who = "it" if first in (None, chosen) else f"{chosen} (not {first})"
    if chosen_threads < threads:
        return (f"{how}: {who} runs fastest on {chosen_threads} of {threads} threads ({mine[chosen_threads]:.3f} ms "
                f"vs {mine[threads]:.3f} ms on {threads}); the bundle records max_threads={chosen_threads}")
    others = ", ".join(f"{mine[t]:.3f} ms on {t}" for t in sorted(mine, reverse=True) if t != threads)
    return f"{how}: {who} is fastest on all {threads} ({mine[threads]:.3f} ms; {others})"


def _row(name: str, r: ExportReport, t: LatencyStats | None, status: str,
         by_threads: dict[int, float] | None = None, profile: Any = None) -> dict[str, Any]:
    d = r.to_dict()
    acc = d["accuracy"]
    row = {"target": r.target, "candidate": name, "options": r.options, "status": status, "precision": r.precision,
           "accuracy": acc.get("artifact"), "delta_pts": acc.get("delta_pts"),
           "cosine_mean": d["parity"]["cosine_mean"], "top1_agreement": d["parity"]["top1_agreement"],
           "p50_ms": t.p50 if t else None, "p90_ms": t.p90 if t else None,
           "size_mb": r.artifact_bytes / 1e6}
    if profile is not None:  # measured in its own process beside the timing (fields only added)
        row.update(peak_mb=profile.peak_mb, load_ms=profile.load_cold_ms, first_ms=profile.first_ms)
    if by_threads:  # a finalist: re-timed on each thread count (p50 ms)
        row["p50_ms_by_threads"] = {str(k): v for k, v in sorted(by_threads.items(), reverse=True)}
    return row


def explain_choice(chosen: str, passing: list[str], t: dict[str, LatencyStats], reports: dict[str, ExportReport]) -> str:
    ranked = sorted(passing, key=lambda n: t[n].p50)
    parts = [f"{chosen} is the fastest candidate that passed its parity gate "
             f"(p50 {t[chosen].p50:.3f} ms, timed side by side with {len(passing) - 1} other passing candidate(s))"]
    if len(ranked) > 1:
        runner_up = ranked[1]
        parts.append(f"next: {runner_up} at {t[runner_up].p50:.3f} ms ({t[runner_up].p50 / t[chosen].p50:.2f}x slower)")
    int8 = [n for n in passing if reports[n].precision == "int8"]
    floats = [n for n in passing if reports[n].precision != "int8"]
    if int8 and floats:
        best_int8 = min(int8, key=lambda n: t[n].p50)
        best_float = min(floats, key=lambda n: t[n].p50)
        ratio = t[best_float].p50 / t[best_int8].p50
        parts.append(f"INT8 {'pays' if ratio > 1 else 'does not pay'} on this CPU: best INT8 ({best_int8}) vs "
                     f"best float ({best_float}) = {ratio:.2f}x")
    return "; ".join(parts)


def _label(row: dict[str, Any]) -> str:
    """A candidate's display name: the target, plus the option variant it was built with."""
    return str(row.get("candidate") or row["target"])


def by_threads_text(row: dict[str, Any]) -> str:
    by = row.get("p50_ms_by_threads") or {}
    return ", ".join(f"{t}: {p:.3f}" for t, p in by.items()) or "-"


def _annotate(bundle: Path, auto: str, rows: list[dict[str, Any]], reason: str,
              max_threads: int | None = None) -> None:
    """Add the selection record to the chosen bundle and refresh its manifest."""
    from vitedge.bundle.manifest import MANIFEST, bundle_files, file_entries, save_manifest

    (bundle / "auto.json").write_text(json.dumps({"auto": auto, "reason": reason, "candidates": rows},
                                                 indent=2, default=str) + "\n")
    lines = [f"# {auto}: chose {rows and next(_label(r) for r in rows if r['status'] == 'chosen')}", "",
             reason, "", "| candidate | status | accuracy | delta pts | cosine mean | top-1 agr. | p50 ms | p90 ms | "
             "p50 ms on N threads | MB | peak MB | load ms | first ms |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        def f(v: Any, fmt: str) -> str:
            return "-" if v is None else format(v, fmt)
        lines.append(f"| {_label(r)} | {r['status']} | {f(r.get('accuracy'), '.2%')} | {f(r.get('delta_pts'), '+.2f')} | "
                     f"{f(r.get('cosine_mean'), '.5f')} | {f(r.get('top1_agreement'), '.2%')} | {f(r.get('p50_ms'), '.3f')} | "
                     f"{f(r.get('p90_ms'), '.3f')} | {by_threads_text(r)} | {f(r.get('size_mb'), '.2f')} | "
                     f"{f(r.get('peak_mb'), '.0f')} | {f(r.get('load_ms'), '.0f')} | {f(r.get('first_ms'), '.1f')} |")
    (bundle / "auto.md").write_text("\n".join(lines) + "\n")
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["selected_by"] = {"auto": auto, "reason": reason}
    if max_threads is not None:
        manifest["artifact"]["max_threads"] = max_threads
    manifest["files"] = file_entries(bundle, bundle_files(bundle, manifest["artifact"]["files"]))
    save_manifest(bundle / MANIFEST, manifest)
