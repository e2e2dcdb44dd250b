"""Matrix cells: one target of one model, run as an independent step that writes one JSON file.

A cell is the export pipeline for one target (bundle in `DIR/bundles/<target>/`) plus a
`DIR/cells/<model>--<target>.json` summary. Cells do not know about each other, so a user with
many models or devices can fan them out with any scheduler (a CI matrix, Ray, a batch system)
by running `vitedge matrix MODEL --targets T --out DIR` per cell, and merge the JSON files
afterwards (`vitedge matrix --merge DIR...`). A failing target becomes a cell with its error.

When several cells run in one process, `time_side_by_side` re-times all of them (and the
PyTorch reference) interleaved in one run, so the table's latency ratios are side by side.
"""

from __future__ import annotations

import json
import tempfile
import traceback
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from vitedge import __version__
from vitedge.errors import VitedgeError
from vitedge.fsutil import atomic_file
from vitedge.models.resolve import LoadedModel
from vitedge.pipeline import ExportRequest, SharedWork, export_target
from vitedge.progress import stderr_console
from vitedge.report import ExportReport
from vitedge.runtimes.base import default_threads
from vitedge.sysinfo import system_info

CELL_FORMAT = "vitedge-matrix-cell"


def cell_name(model: str, target: str) -> str:
    return f"{model.replace(':', '-').replace('/', '-')}--{target}"


def _cell_from_report(report: ExportReport, bundle: Path, out: Path) -> dict[str, Any]:
    d = report.to_dict()
    predicted = bool(report.artifact.predicted_by)
    status = report.verdict
    if predicted:
        status = "kit only, predicted" if report.passed else "kit only, predicted: failed"
    lat = d["latency_ms"]
    return {
        "status": status,
        "passed": report.passed,
        "judged_on": d["judged_on"],
        "predicted_by": report.artifact.predicted_by,
        "bundle": str(bundle.relative_to(out)),
        "precision": report.precision,
        "runtime": report.artifact.runtime,
        "size_mb": report.artifact_bytes / 1e6,
        "accuracy": d["accuracy"],
        "parity": {k: d["parity"][k] for k in ("max_abs", "cosine_min", "cosine_mean", "sqnr_db", "err_spread",
                                               "top1_agreement", "images_n")},
        "failures": [c.describe() for c in report.parity.failures()],
        # The cell's own timing (artifact vs reference in the same cell run); a CPU stand-in's
        # latency says nothing about TensorRT, so predicted cells carry none.
        "latency_ms": None if predicted else {"p50": lat["artifact"]["p50"], "p90": lat["artifact"]["p90"],
                                               "p99": lat["artifact"]["p99"], "batch": lat["artifact"]["batch"],
                                               "reference_p50": lat["reference"]["p50"],
                                               "speedup_vs_pytorch": d["speedup_vs_reference"],
                                               "measured": "in its own cell run"},
        "notes": d["notes"],
        "placement": d.get("placement"),  # where its ops run (Runner.placement), None for a kit
        # What the accuracy-aware fallback kept in higher precision (matrix --max-drop), or None.
        "fallback": None if not d.get("fallback") else {
            k: d["fallback"][k] for k in ("budget_text", "met", "kept_count", "total_layers", "before", "after")
        } | {"kept": [k.get("module") or k.get("label") for k in d["fallback"]["kept_high_precision"]]},
    }


def run_cell(loaded: LoadedModel, request: ExportRequest, out: Path, shared: SharedWork | None = None) -> dict[str, Any]:
    """Export one target into `out/bundles/<target>` and write its cell JSON; never raises for
    a failing target (the error is the cell's content)."""
    bundle = out / "bundles" / request.target
    cell: dict[str, Any] = {
        "format": CELL_FORMAT, "format_version": 1, "vitedge_version": __version__,
        "model": loaded.card.arch, "model_source": loaded.card.source, "target": request.target,
        "model_family": loaded.card.family, "input_size": list(loaded.card.preprocess.input_size),
        "model_params": sum(p.numel() for p in loaded.module.parameters()),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "system": system_info(),
        "threads": request.threads or default_threads(),
    }
    try:
        report = export_target(loaded, replace(request, out=bundle, force=True), shared)
        cell.update(_cell_from_report(report, bundle, out))
    except (VitedgeError, Exception) as e:  # one failing target is a row, not a crash
        cell.update({"status": "error", "passed": False, "error": f"{type(e).__name__}: {e}".splitlines()[0][:400],
                     "traceback": traceback.format_exc(limit=5) if not isinstance(e, VitedgeError) else None})
        stderr_console.print(f"[red]{request.target}: {cell['error']}[/]")
    write_cell(out, cell)
    return cell


def write_cell(out: Path, cell: dict[str, Any]) -> Path:
    path = out / "cells" / f"{cell_name(cell['model'], cell['target'])}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(cell, indent=2, default=str) + "\n")
    return path


REFERENCE = "PyTorch (reference)"


def _static_batch(bundle: Path) -> int | None:
    from vitedge.bundle.manifest import read_manifest

    first = (read_manifest(bundle).data.get("input") or {}).get("shape", ["batch"])[0]
    return first if isinstance(first, int) else None


def time_side_by_side(loaded: LoadedModel, cells: list[dict[str, Any]], out: Path, threads: int,
                      batches: tuple[int, ...], budget_s: float, throughput: bool = True) -> None:
    """Re-time every runnable cell and the PyTorch reference side by side (per batch size), each
    in its own process, one working at a time (vitedge.bench.isolated: in one process they
    measurably slow each other down); store the result in each cell as `latency_ms` (batch 1)
    and `batch_sweep`; then (`throughput`) each bundle's images/s with all cores."""
    from vitedge.bench.isolated import Contestant, time_isolated
    from vitedge.models.checkpoint import save_checkpoint
    from vitedge.progress import make_progress

    bundles = {cell["target"]: out / cell["bundle"] for cell in cells
               if cell.get("status") in ("passed", "failed", "not judged") and cell.get("bundle")}
    if not bundles:
        return
    static = {t: _static_batch(b) for t, b in bundles.items()}
    h, w = loaded.card.preprocess.input_size
    sweep: dict[str, dict[int, Any]] = {}
    isolation: dict[int, Any] = {}
    with tempfile.TemporaryDirectory(prefix="vitedge-timing-") as tmp, make_progress() as progress:
        ckpt = Path(tmp) / "reference.safetensors"  # the reference process loads it (safetensors)
        save_checkpoint(ckpt, loaded.module, loaded.card)
        for b in batches:
            use = [Contestant(REFERENCE, ckpt, torch=True)] + [
                Contestant(t, p) for t, p in bundles.items() if static[t] in (None, b)]
            task = progress.add_task(f"matrix: {len(use)} runners side by side (own processes), batch {b}",
                                     total=100)
            x = np.random.default_rng(b).standard_normal((b, 3, h, w)).astype(np.float32)
            # the first batch's processes also give each artifact's device profile (memory, load)
            profile = tuple(c.name for c in use if c.name != REFERENCE) if b == batches[0] else ()
            res = time_isolated(use, {b: x}, threads, budget_s=budget_s, profile=profile,
                                on_round=lambda f, task=task: progress.update(task, completed=100 * f))[b]
            progress.update(task, completed=100)
            isolation[b] = res
            for k, st in res.stats.items():
                sweep.setdefault(k, {})[b] = st
    ref = sweep[REFERENCE]
    first_iso = isolation[batches[0]]
    for cell in cells:
        if cell["target"] not in sweep:
            continue
        own = sweep[cell["target"]]
        first = batches[0]
        if first in own:
            cell["latency_ms"] = {"p50": own[first].p50, "p90": own[first].p90, "p99": own[first].p99,
                                  "batch": first, "reference_p50": ref[first].p50,
                                  "speedup_vs_pytorch": ref[first].p50 / own[first].p50,
                                  "measured": f"side by side with {len(sweep) - 1} runners, each in its own "
                                              f"process, one run",
                                  "cross_talk": round(first_iso.worst_cross_talk(), 4)}
        if cell["target"] in first_iso.profiles:
            from vitedge.bench.profile import from_fields

            cell["device_profile"] = from_fields(first_iso.profiles[cell["target"]], own[first]).to_dict()
        cell["batch_sweep"] = {str(b): {"p50": st.p50, "p90": st.p90, "throughput": st.throughput,
                                        "speedup_vs_pytorch": ref[b].p50 / st.p50 if b in ref else None}
                               for b, st in own.items()}
        write_cell(out, cell)
    if throughput:
        measure_throughput(cells, bundles, out, threads, budget_s)


def measure_throughput(cells: list[dict[str, Any]], bundles: dict[str, Path], out: Path, cores: int,
                       budget_s: float) -> None:
    """Each bundle's images/s with all cores (vitedge.bench.throughput: the best of its batch x
    parallel-streams sweep, the runtime's own way of running in parallel), one bundle at a time
    so none shares the cores with another; stored in the cell as `throughput`. A setting the
    runtime cannot run leaves that cell's column empty with the reason, not the matrix failed."""
    from vitedge.bench.throughput import SWEEP_MEASURE_S, sweep
    from vitedge.errors import VitedgeError
    from vitedge.progress import make_progress

    with make_progress() as progress:
        task = progress.add_task(f"matrix: throughput, {len(bundles)} bundles one at a time, {cores} cores",
                                 total=len(bundles))
        for cell in cells:
            if cell["target"] not in bundles:
                continue
            try:
                # a point measures at most a quarter of the side-by-side budget (--bench-budget)
                cell["throughput"] = sweep(bundles[cell["target"]], cores,
                                           measure_s=min(SWEEP_MEASURE_S, budget_s / 4)).to_dict()
            except VitedgeError as e:
                cell["throughput"] = {"images_per_s": None, "error": str(e).splitlines()[0][:200]}
            write_cell(out, cell)
            progress.advance(task)
