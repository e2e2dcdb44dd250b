"""`vitedge targets` and `vitedge export`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from vitedge.cli.common import (
    ArchOpt,
    ClassesOpt,
    ImgSizeOpt,
    ModelArg,
    NumClassesOpt,
    RandomInitOpt,
    WeightsOpt,
    console,
    load_model_from_cli,
)
from vitedge.cli.main import app


@app.command("targets")
def targets_command() -> None:
    """List export targets and whether each can run on this machine."""
    from vitedge.targets.registry import get_target, list_targets

    table = Table(title="vitedge targets")
    for col in ("target", "runtime", "precision", "calibration", "here", "description"):
        table.add_column(col)
    for name in list_targets():
        t = get_target(name)
        missing = t.missing()
        here = "yes" if not missing else f"no ({', '.join(missing)} missing)"
        table.add_row(name, t.runtime, t.precision, "yes" if t.needs_calibration else "", here, t.description)
    console.print(table)


def print_report(report) -> None:  # type: ignore[no-untyped-def]
    d = report.to_dict()
    p, acc, lat = d["parity"], d["accuracy"], d["latency_ms"]
    verdict = "[green]PASSED[/]" if report.passed else "[red]FAILED[/]"
    table = Table(title=f"{report.target}: parity {verdict}  ({report.out})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("limit", justify="right")
    limits = {c["metric"]: c for c in p["checks"]}
    for metric in ("max_abs", "cosine_min", "top1_agreement"):
        c = limits.get(metric)
        table.add_row(metric, f"{p[metric]:.6g}", f"{c['limit']:g}" + ("" if c["passed"] else " [red]x[/]") if c else "-")
    if acc.get("n"):
        c = limits.get("accuracy_drop")
        table.add_row("accuracy (ref -> artifact)", f"{acc['reference']:.2%} -> {acc['artifact']:.2%}",
                      (f"drop <= {c['limit']:g} pts" + ("" if c["passed"] else " [red]x[/]")) if c else "-")
    table.add_row("latency p50 artifact / torch", f"{lat['artifact']['p50']:.3f} / {lat['reference']['p50']:.3f} ms",
                  f"{d['speedup_vs_reference']:.2f}x")
    table.add_row("artifact size", f"{d['artifact_bytes'] / 1e6:.2f} MB", "")
    console.print(table)
    if report.artifact.predicted_by:
        console.print(f"[yellow]parity predicted on CPU by {report.artifact.predicted_by}; engine not built[/]")
    for note in d["notes"]:
        console.print(f"note: {note}")
    for c in report.parity.failures():
        console.print(f"[red]parity failed:[/] {c.describe()}")


@app.command("export")
def export_command(
    model: ModelArg,
    target: Annotated[str, typer.Option("--target", "-t", help="Export target (see `vitedge targets`).")] = "onnx-fp32",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Bundle directory to create.")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing --out directory.")] = False,
    arch: ArchOpt = None,
    weights: WeightsOpt = None,
    classes: ClassesOpt = None,
    random_init: RandomInitOpt = False,
    img_size: ImgSizeOpt = None,
    num_classes: NumClassesOpt = None,
    opset: Annotated[int, typer.Option(help="ONNX opset (17-23).")] = 20,
    static_batch: Annotated[int | None, typer.Option(help="Fix the batch size (default: dynamic).")] = None,
    exporter: Annotated[str, typer.Option(help="auto | dynamo | torchscript.")] = "auto",
    eval_data: Annotated[str, typer.Option("--eval", help="Labelled images for parity/accuracy: 'synthetic' or DIR.")] = "synthetic",
    eval_n: Annotated[int | None, typer.Option(help="Use a seeded subset of N eval images.")] = None,
    threads: Annotated[int | None, typer.Option(help="Threads for artifact and reference (default: all cores).")] = None,
    max_abs: Annotated[float | None, typer.Option(help="Override the max |logit error| limit.")] = None,
    cosine_min: Annotated[float | None, typer.Option(help="Override the min cosine limit.")] = None,
    top1_agreement: Annotated[float | None, typer.Option(help="Override the top-1 agreement limit.")] = None,
    max_accuracy_drop: Annotated[float | None, typer.Option(help="Override the accuracy-drop limit (pts).")] = None,
    bench_budget: Annotated[float, typer.Option(help="Seconds of timing for artifact + reference.")] = 3.0,
    seed: Annotated[int, typer.Option(help="Seed for random parity inputs and subsets.")] = 0,
) -> None:
    """Export MODEL to a target, check parity with PyTorch, time it, and write a bundle."""
    from vitedge.errors import ParityError, UsageError
    from vitedge.export.onnx_export import ExportConfig
    from vitedge.pipeline import BenchConfig, ExportRequest, export_target
    from vitedge.targets.registry import get_target

    get_target(target)  # unknown target: fail before loading anything
    if eval_n is not None and eval_n < 1:
        raise UsageError("--eval-n must be >= 1")
    if threads is not None and threads < 1:
        raise UsageError("--threads must be >= 1")
    export_cfg = ExportConfig(opset=opset, static_batch=static_batch, exporter=exporter)
    loaded = load_model_from_cli(model, arch, weights, classes, random_init, img_size, num_classes)
    out = out or Path("vitedge-out") / f"{loaded.card.arch.replace(':', '-')}-{target}"
    request = ExportRequest(
        target=target, out=out, force=force, export=export_cfg, eval_data=eval_data, eval_n=eval_n,
        threads=threads, seed=seed,
        tolerance={"max_abs": max_abs, "cosine_min": cosine_min, "top1_agreement": top1_agreement,
                   "max_accuracy_drop": max_accuracy_drop},
        bench=BenchConfig(budget_s=bench_budget),
    )
    report = export_target(loaded, request)
    print_report(report)
    if not report.passed:
        raise ParityError("; ".join(c.describe() for c in report.parity.failures())
                          + f" (bundle kept at {out} for inspection, marked passed=false)")
