"""`vitedge matrix` and `vitedge verify`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from vitedge.calib.source import DEFAULT_NUM_CALIB
from vitedge.cli.common import (
    ArchOpt,
    CalibOpt,
    ClassesOpt,
    EvalNOpt,
    EvalOpt,
    ImgSizeOpt,
    NumCalibOpt,
    NumClassesOpt,
    OptionOpt,
    RandomInitOpt,
    SeedOpt,
    ThreadsOpt,
    WeightsOpt,
    check_common,
    console,
    load_model_from_cli,
)
from vitedge.cli.main import app
from vitedge.errors import ParityError, UsageError


def default_targets() -> list[str]:
    """Every matrix target that can run (or, for a kit, be prepared) on this machine."""
    from vitedge.targets.registry import all_targets

    return [t.name for t in all_targets() if t.in_matrix and not t.missing() and not t.unsupported()]


def parse_batches(batch_sweep: str) -> tuple[int, ...]:
    try:
        batches = tuple(int(b) for b in batch_sweep.split(","))
    except ValueError:
        raise UsageError(f"--batch-sweep {batch_sweep!r}: expected integers like 1,8") from None
    if not batches or min(batches) < 1:
        raise UsageError("--batch-sweep sizes must be >= 1")
    return batches


@app.command("matrix")
def matrix_command(
    model: Annotated[str | None, typer.Argument(help="Model as for `vitedge export` (omit with --merge).", show_default=False)] = None,
    targets: Annotated[str | None, typer.Option(help="Comma-separated targets (default: every target available here).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Matrix directory (cells/, bundles/, matrix.md/json, pareto.png).")] = Path("vitedge-matrix"),
    merge_from: Annotated[list[Path] | None, typer.Option("--merge", help="Merge cells from these matrix dirs / cell files into --out (repeatable).")] = None,
    arch: ArchOpt = None,
    weights: WeightsOpt = None,
    classes: ClassesOpt = None,
    random_init: RandomInitOpt = False,
    img_size: ImgSizeOpt = None,
    num_classes: NumClassesOpt = None,
    calib: CalibOpt = None,
    num_calib: NumCalibOpt = DEFAULT_NUM_CALIB,
    eval_data: EvalOpt = None,
    eval_n: EvalNOpt = None,
    threads: ThreadsOpt = None,
    batch_sweep: Annotated[str, typer.Option(help="Batch sizes for the side-by-side latency, e.g. 1,8.")] = "1",
    bench_budget: Annotated[float, typer.Option(help="Seconds of side-by-side timing per batch size.")] = 10.0,
    throughput: Annotated[bool, typer.Option(help="Also measure each bundle's images/s with all cores (best of a batch x parallel-streams sweep, as `vitedge bench --throughput`).")] = True,
    seed: SeedOpt = 0,
    option: OptionOpt = None,
    max_drop: Annotated[float | None, typer.Option(help="Accuracy budget (pts) for the targets that can keep layers in higher precision (as `export --max-drop`); the others run as usual.", rich_help_panel="Accuracy-aware fallback")] = None,
    min_cosine: Annotated[float | None, typer.Option(help="Mean logit cosine budget for those targets (as `export --min-cosine`).", rich_help_panel="Accuracy-aware fallback")] = None,
) -> None:
    """Export MODEL to many targets and compare them side by side: table, JSON and Pareto plot.

    Target option flags (--ort-calib-method, --ov-preset, ...) apply to every selected target
    that declares them."""
    from vitedge.matrix.merge import read_cells

    if merge_from:
        if model is not None:
            raise UsageError("--merge combines existing cells; do not also give a MODEL")
        return _write_merged(read_cells(list(merge_from)), out)
    if model is None:
        raise UsageError("give a MODEL to run the matrix, or --merge DIR to combine existing cells")
    import tempfile

    from vitedge.cli.flags import parse_option_values
    from vitedge.matrix.cells import run_cell, time_side_by_side
    from vitedge.pipeline import SharedWork
    from vitedge.plan import plan_cells
    from vitedge.policy import matrix_calibration
    from vitedge.request import BenchConfig
    from vitedge.runtimes.base import default_threads

    check_common(eval_n, threads)
    batches = parse_batches(batch_sweep)
    names = [t.strip() for t in targets.split(",") if t.strip()] if targets else default_targets()
    plans = plan_cells(names, parse_option_values(option), max_drop=max_drop, min_cosine=min_cosine)
    loaded = load_model_from_cli(model, arch, weights, classes, random_init, img_size, num_classes)
    # One calibration set for every cell (None without data or an honest default: those cells say so).
    calibration = matrix_calibration([p.candidates[0] for p in plans], loaded.card, calib, num_calib, seed,
                                     eval_data is None)
    n_threads = threads or default_threads()
    out.mkdir(parents=True, exist_ok=True)
    cells = []
    with tempfile.TemporaryDirectory(prefix="vitedge-matrix-") as tmp:
        shared = SharedWork(Path(tmp))
        for i, plan in enumerate(plans, 1):
            console.print(f"[bold]matrix[/] {i}/{len(plans)}: {loaded.card.arch} -> {plan.target}")
            request = plan.request(out, eval_data=eval_data, eval_n=eval_n, seed=seed, threads=n_threads,
                                   calibration=calibration, bench=BenchConfig(warmup=5, min_runs=10, budget_s=1.0))
            cells.append(run_cell(loaded, request, out, shared))
    time_side_by_side(loaded, cells, out, n_threads, batches, bench_budget, throughput)
    _write_merged(read_cells([out]), out)
    if not any(c.get("passed") for c in cells):
        raise ParityError("no target passed its parity gate; see matrix.md")


def _write_merged(cells: list[dict], out: Path) -> None:
    from vitedge.matrix.merge import merge

    written = merge(cells, out)
    _print_table(written["json"])
    console.print(f"wrote {', '.join(str(p) for p in written.values())}")


def _print_table(json_path: Path) -> None:
    import json

    rows = json.loads(json_path.read_text())["rows"]
    multi = len({r["model"] for r in rows}) > 1
    table = Table(title="vitedge matrix" + ("" if multi else f": {rows[0]['model']}"))
    cols = ("model",) * multi + ("target", "status", "MB", "acc", "delta", "cos min", "agree", "p50 ms", "x torch")
    for col in cols:
        table.add_column(col, justify="left" if col in ("model", "target", "status") else "right")

    def f(v, spec):  # type: ignore[no-untyped-def]
        return "-" if v is None else format(v, spec)

    for r in rows:
        status = "error" if r["error"] else r["status"].replace("kit only, predicted", "kit (pred.)")
        table.add_row(*((r["model"],) if multi else ()), r["target"], status, f(r["size_mb"], ".1f"), f(r["accuracy"], ".2%"),
                      f(r["delta_pts"], "+.2f"), f(r["cosine_min"], ".4f"), f(r["top1_agreement"], ".1%"),
                      f(r["p50_ms"], ".3f"), f(r["speedup_vs_pytorch"], ".2f"))
    console.print(table)
    for r in rows:
        if r["error"]:
            console.print(f"[red]{r['target']}[/]: {r['error']}")


@app.command("verify")
def verify_command(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory (an export --out).")],
    threads: Annotated[int | None, typer.Option(help="Runtime threads.")] = None,
) -> None:
    """Re-verify a bundle on this device: checksums, then parity against the shipped reference outputs."""
    from vitedge.bundle.verify import verify_bundle

    result = verify_bundle(bundle, threads)
    table = Table(title=f"verify {bundle} ({result.target} on {result.runtime})")
    for col in ("outputs", "max abs", "cosine min", "top-1 vs torch", "same top-1 as at export"):
        table.add_column(col, justify="left" if col == "outputs" else "right")
    for key, row in result.sets.items():
        same = row.get("same_top1_as_export")
        table.add_row(key, f"{row['max_abs']:.3g}", f"{row['cosine_min']:.6f}", f"{row['top1_agreement']:.0%}",
                      "-" if same is None else f"{same:.0%}")
    if result.sets:
        console.print(table)
    if result.integrity:
        raise ParityError(f"{bundle}: integrity check failed: {'; '.join(result.integrity[:3])}")
    if result.failures:
        raise ParityError(f"{bundle}: re-verification failed: {'; '.join(result.failures[:3])}")
    console.print(f"[green]verified[/]: {len(result.sets)} output set(s) match the reference; all checksums match")
