"""`vitedge targets` and `vitedge export`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from vitedge.calib.source import DEFAULT_NUM_CALIB
from vitedge.cli.common import (
    ArchOpt,
    CalibOpt,
    ClassesOpt,
    EvalNOpt,
    EvalOpt,
    ImgSizeOpt,
    ModelArg,
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
from vitedge.export.config import ExportConfig
from vitedge.request import TIMINGS, BenchConfig, ExportRequest
from vitedge.targets.catalog import DEFAULT_TARGET


@app.command("targets")
def targets_command(
    options: Annotated[str | None, typer.Option("--options", help="List this target's options (flags and defaults).")] = None,
) -> None:
    """List export targets and whether each can run on this machine."""
    from vitedge.targets.registry import AUTO_DEVICES, all_targets, auto_candidates, get_target

    if options is not None:
        _print_options(get_target(options))
        return
    table = Table(title="vitedge targets")
    for col in ("target", "runtime", "precision", "calibration", "here", "description"):
        table.add_column(col)
    for t in all_targets():
        missing, unsupported = t.missing(), t.unsupported()
        here = (f"no ({', '.join(missing)} missing)" if missing else f"no ({unsupported})" if unsupported
                else "kit" if t.kit else "yes")
        table.add_row(t.name, t.runtime, t.precision, "yes" if t.needs_calibration else "", here, t.description)
    for name in AUTO_DEVICES:
        candidates = ", ".join(t.name for t in auto_candidates(name))
        table.add_row(name, "(measured)", "-", "if given", "yes",
                      f"builds {candidates}; keeps the fastest that passes parity on this device")
    console.print(table)
    console.print("Target options: `vitedge targets --options TARGET`; shared flags: `vitedge export --help`.")


def _print_options(target) -> None:  # type: ignore[no-untyped-def]
    from vitedge.options import option_infos

    infos = [i for i in option_infos(target.options) if not i.hidden]
    if not infos:
        console.print(f"{target.name} has no options.")
        return
    table = Table(title=f"{target.name} options (flag, or --option KEY=VALUE)")
    for col in ("flag", "type", "default", "help"):
        table.add_column(col)
    for i in infos:
        choices = f" ({' | '.join(i.choices)})" if i.choices else ""
        table.add_row(i.flag, i.type, repr(i.default) if i.default is not None else "auto", i.help + choices)
    console.print(table)
    if target.fallback_option:
        console.print(f"--ignore NAME (repeatable) keeps layers in higher precision ({target.fallback_option}); "
                      "--max-drop / --min-cosine search for them")


def print_report(report) -> None:  # type: ignore[no-untyped-def]
    d = report.to_dict()
    p, acc, lat = d["parity"], d["accuracy"], d["latency_ms"]
    verdict = {"passed": "[green]PASSED[/]", "failed": "[red]FAILED[/]",
               "not judged": "[yellow]NOT JUDGED[/]"}[report.verdict]
    table = Table(title=f"{report.target}: parity {verdict}  ({report.out})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("limit", justify="right")
    limits = {c["metric"]: c for c in p["checks"]}
    for metric in ("max_abs", "cosine_min", "cosine_mean", "sqnr_db", "err_spread", "top1_agreement"):
        c = limits.get(metric)
        if c is None and metric in ("sqnr_db", "err_spread"):
            continue  # shown where gated (untrained models); always in report.json
        value = f"{p[metric]:.6g}"
        if metric == "top1_agreement" and p.get("images_n"):  # a rate says what it is over
            value += f" ({round(p[metric] * p['images_n'])}/{p['images_n']})"
        table.add_row(metric, value, f"{c['limit']:g}" + ("" if c["passed"] else " [red]x[/]") if c else "-")
    if acc.get("n"):
        c = limits.get("accuracy_drop")
        n = acc["n"]
        table.add_row(f"accuracy (ref -> artifact, n={n})",
                      f"{acc['reference']:.2%} -> {acc['artifact']:.2%} ({round(acc['reference'] * n)} -> "
                      f"{round(acc['artifact'] * n)})",
                      (f"drop <= {c['limit']:g} pts" + ("" if c["passed"] else " [red]x[/]")) if c else "-")
    table.add_row("latency p50 artifact / torch", f"{lat['artifact']['p50']:.3f} / {lat['reference']['p50']:.3f} ms",
                  f"{d['speedup_vs_reference']:.2f}x")
    table.add_row("artifact size", f"{d['artifact_bytes'] / 1e6:.2f} MB", "")
    if d.get("device_profile") and not report.artifact.predicted_by:
        from vitedge.bench.profile import summary

        table.add_row("memory / start-up (own process)", summary(d["device_profile"]), "")
    console.print(table)
    console.print(f"judged on: {escape(d['judged_on'])}")
    placement = d.get("placement") or {}
    if placement.get("off_fast_path") and "delegate" in placement.get("fast_path", ""):
        from vitedge.runtimes.base import placement_line

        console.print(f"[yellow]warning: {escape(placement_line(placement))}[/] (each op off the delegate runs on "
                      "the runtime's reference kernels and splits the graph)")
    if report.artifact.predicted_by:
        console.print(f"[yellow]parity predicted on CPU by {report.artifact.predicted_by}; "
                      "the target runtime was not run here[/]")
        kit = report.artifact.details.get("kit_files")
        if kit:
            console.print(f"build kit in {report.out}: {', '.join(kit)}")
    for note in d["notes"]:
        console.print(f"note: {escape(note)}")
    fb = d.get("fallback")
    if fb and fb.get("steps") and len(fb["steps"]) > 1:
        b, a = fb["before"], fb["after"]
        console.print(f"accuracy-aware fallback ({fb['budget_text']}, on {fb['search_data']}): "
                      f"{fb['kept_count']} of {fb['total_layers']} layers kept in higher precision; drop "
                      f"{b['drop_pts']:.2f} -> {a['drop_pts']:.2f} pts; latency x{fb['latency_ms'].get('cost_ratio', 1):.2f}")
        for k in fb["kept_high_precision"]:
            console.print(f"  kept: {escape(k['label'])} ({k['op']}; {k['evidence']})")
    elif fb and fb.get("method"):
        console.print(f"NNCF accuracy control ({fb['budget_text']}): {fb['kept_count']} op(s) kept in float: "
                      f"{escape(', '.join(fb['kept_high_precision'][:8]))}")
    for c in report.parity.failures():
        console.print(f"[red]parity failed:[/] {c.describe()}")


def print_auto(result) -> None:  # type: ignore[no-untyped-def]
    from vitedge.auto import by_threads_text

    chosen = result.chosen + (f" on {result.max_threads} thread(s)" if result.max_threads else "")
    table = Table(title=f"auto-cpu: chose {chosen}")
    for col in ("candidate", "status", "accuracy", "delta pts", "cosine mean", "p50 ms", "p50 ms on N threads", "MB",
                "peak MB", "load ms"):
        table.add_column(col, justify="left" if col in ("candidate", "status") else "right")
    for r in result.candidates:
        def f(v, fmt):  # type: ignore[no-untyped-def]
            return "-" if v is None else format(v, fmt)
        table.add_row(r.get("candidate") or r["target"], r["status"][:60], f(r.get("accuracy"), ".2%"), f(r.get("delta_pts"), "+.2f"),
                      f(r.get("cosine_mean"), ".5f"), f(r.get("p50_ms"), ".3f"), by_threads_text(r),
                      f(r.get("size_mb"), ".2f"), f(r.get("peak_mb"), ".0f"), f(r.get("load_ms"), ".0f"))
    console.print(table)
    console.print(result.reason)


@app.command("export")
def export_command(
    model: ModelArg,
    target: Annotated[str, typer.Option("--target", "-t", help="Export target (see `vitedge targets`).")] = DEFAULT_TARGET,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Bundle directory to create.")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing --out directory.")] = False,
    arch: ArchOpt = None,
    weights: WeightsOpt = None,
    classes: ClassesOpt = None,
    random_init: RandomInitOpt = False,
    img_size: ImgSizeOpt = None,
    num_classes: NumClassesOpt = None,
    opset: Annotated[int, typer.Option(help="ONNX opset (17-23).")] = ExportConfig.opset,
    static_batch: Annotated[int | None, typer.Option(help="Fix the batch size (default: dynamic).")] = None,
    dynamic_size: Annotated[bool, typer.Option(
        "--dynamic-size", help="Dynamic height/width in the ONNX (convolutional models; timm ViTs via "
                               "dynamic_img_size). Parity is checked at --img-size.")] = False,
    exporter: Annotated[str, typer.Option(help="auto | dynamo | torchscript.")] = ExportConfig.exporter,
    embed_preprocessing: Annotated[bool, typer.Option(
        "--embed-preprocessing", help="The artifact takes uint8 RGB pixels (NHWC; any size for ONNX/OpenVINO, the "
                                      "model's size for LiteRT) and resizes/crops/normalises inside.")] = False,
    eval_data: EvalOpt = None,
    eval_n: EvalNOpt = None,
    threads: ThreadsOpt = None,
    tol_max_abs: Annotated[float | None, typer.Option(help="Override the max |logit error| limit.", rich_help_panel="Parity gate")] = None,
    tol_cosine_min: Annotated[float | None, typer.Option(help="Override the worst-sample cosine limit.", rich_help_panel="Parity gate")] = None,
    tol_cosine_mean: Annotated[float | None, typer.Option(help="Override the mean cosine limit.", rich_help_panel="Parity gate")] = None,
    tol_top1_agreement: Annotated[float | None, typer.Option(help="Override the top-1 agreement limit.", rich_help_panel="Parity gate")] = None,
    tol_accuracy_drop: Annotated[float | None, typer.Option(help="Override the accuracy-drop limit (pts).", rich_help_panel="Parity gate")] = None,
    bench_budget: Annotated[float, typer.Option(help="Seconds of timing for artifact + reference.")] = BenchConfig.budget_s,
    timing: Annotated[str, typer.Option(help="isolated: artifact and reference each timed in its own process, plus "
                                             "the device profile (memory, load, first inference); interleaved: both "
                                             "in this process, a few seconds sooner, no device profile.")] = TIMINGS[0],
    seed: SeedOpt = 0,
    calib: CalibOpt = None,
    num_calib: NumCalibOpt = DEFAULT_NUM_CALIB,
    ignore: Annotated[list[str] | None, typer.Option(help="Layer kept in higher precision (repeatable; ONNX node names or OpenVINO friendly names, as `vitedge diagnose` shows them).", rich_help_panel="Quantisation")] = None,
    max_drop: Annotated[float | None, typer.Option(help="Accuracy budget (pts on held-out labelled data): keep the most sensitive layers in higher precision until it holds.", rich_help_panel="Accuracy-aware fallback")] = None,
    min_cosine: Annotated[float | None, typer.Option(help="Budget on the mean logit cosine vs PyTorch (alternative or addition to --max-drop).", rich_help_panel="Accuracy-aware fallback")] = None,
    max_memory_mb: Annotated[float | None, typer.Option(help="auto-*: most memory (peak MB above the process baseline, measured in the candidate's own process) the chosen artifact may take.", rich_help_panel="Device budget (auto-*)")] = None,
    max_load_ms: Annotated[float | None, typer.Option(help="auto-*: longest cold load (open + compile, ms) the chosen artifact may take.", rich_help_panel="Device budget (auto-*)")] = None,
    fallback_n: Annotated[int, typer.Option(help="Images in the fallback's search set (shapes10 val, or half of --eval DIR).", rich_help_panel="Accuracy-aware fallback")] = ExportRequest.fallback_n,
    option: OptionOpt = None,
) -> None:
    """Export MODEL to a target, check parity with PyTorch, time it, and write a bundle.

    Target options are flags named after the target family (--ort-calib-method, --ov-preset,
    --trt-max-batch, ...): `vitedge targets --options TARGET` lists them with their defaults."""
    from vitedge.cli.flags import parse_option_values
    from vitedge.errors import ParityError
    from vitedge.plan import plan_export
    from vitedge.policy import plan_calibration

    check_common(eval_n, threads)
    plan = plan_export(  # options, budget and preflight are checked before anything is loaded
        target, parse_option_values(option), ignore=ignore or (), max_drop=max_drop, min_cosine=min_cosine,
        tolerance={"max_abs": tol_max_abs, "cosine_min": tol_cosine_min, "cosine_mean": tol_cosine_mean,
                   "top1_agreement": tol_top1_agreement, "max_accuracy_drop": tol_accuracy_drop},
        export=ExportConfig(opset=opset, static_batch=static_batch, exporter=exporter, dynamic_size=dynamic_size),
        embed_preprocessing=embed_preprocessing, max_memory_mb=max_memory_mb, max_load_ms=max_load_ms)
    bench = BenchConfig.for_export(bench_budget, timing, auto=plan.is_auto)
    loaded = load_model_from_cli(model, arch, weights, classes, random_init, img_size, num_classes,
                                 dynamic_size=dynamic_size)
    out = out or Path("vitedge-out") / f"{loaded.card.arch.replace(':', '-')}-{target}"
    request = plan.request(
        out, force=force, eval_data=eval_data, eval_n=eval_n, threads=threads, seed=seed, fallback_n=fallback_n, bench=bench,
        calibration=plan_calibration(plan, loaded.card, calib, num_calib, seed, eval_data is None))
    if plan.is_auto:
        from vitedge.auto import export_auto

        print_auto(export_auto(loaded, request, target))
        return
    from vitedge.pipeline import export_target

    report = export_target(loaded, request)
    print_report(report)
    if report.verdict == "failed":
        raise ParityError("; ".join(c.describe() for c in report.parity.failures())
                          + f" (bundle kept at {out} for inspection, marked passed=false)")


@app.command("lint")
def lint_command(
    model_file: Annotated[Path, typer.Argument(help="ONNX file to check.")],
    target: Annotated[str, typer.Option(help="Runtime to lint for (trt).")] = "trt",
    trt_major: Annotated[str, typer.Option(help="TensorRT major version: 10 | 11.")] = "10",
    show_info: Annotated[bool, typer.Option("--info", help="Also list per-op restrictions to review.")] = False,
) -> None:
    """Static TensorRT-readiness check of an ONNX graph (ops, types, opset, Q/DQ, LayerNorm, Attention)."""
    from vitedge.errors import ExportError, UsageError
    from vitedge.lint.tensorrt import lint_file

    if target != "trt":
        raise UsageError("--target: only 'trt' (TensorRT) has a lint")
    if trt_major not in ("10", "11"):
        raise UsageError("--trt-major must be 10 or 11")
    findings = lint_file(model_file, trt_major)
    shown = [f for f in findings if show_info or f.level != "info"]
    table = Table(title=f"TensorRT {trt_major} lint: {model_file}")
    for col in ("level", "node", "op", "finding"):
        table.add_column(col)
    for f in shown:
        style = {"error": "red", "warning": "yellow"}.get(f.level, "")
        table.add_row(f"[{style}]{f.level}[/]" if style else f.level, f.node, f.op, f.message)
    if shown:
        console.print(table)
    n_err = sum(f.level == "error" for f in findings)
    n_warn = sum(f.level == "warning" for f in findings)
    console.print(f"{n_err} error(s), {n_warn} warning(s), {len(findings) - n_err - n_warn} note(s)")
    if n_err:
        first = next(f for f in findings if f.level == "error")
        raise ExportError(f"{model_file}: {n_err} TensorRT lint error(s); first: {first.node} ({first.op}): "
                          f"{first.message}")


@app.command("diagnose")
def diagnose_command(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory (an export --out) with an ONNX or OpenVINO artifact.")],
    model: Annotated[str | None, typer.Option(help="Reference model (default: the bundle's own source).")] = None,
    eval_n: Annotated[int, typer.Option(help="Images to compare on.")] = 16,
    top: Annotated[int, typer.Option(help="How many of the most sensitive layers to list.")] = 10,
    eval_data: Annotated[str, typer.Option("--eval", help="Images: 'synthetic', a folder (labelled or not), an IDX set or .npy/.npz.")] = "synthetic",
    out: Annotated[Path | None, typer.Option(help="Write diagnose.md / .json / .png here (default: the bundle).")] = None,
) -> None:
    """Per-layer divergence: where the artifact departs from fp32, and which layers cause it."""
    import json

    from vitedge.diagnose.result import plot_depth
    from vitedge.diagnose.run import diagnose_bundle
    from vitedge.errors import UsageError

    if eval_n < 1 or top < 1:
        raise UsageError("--eval-n and --top must be >= 1")
    diag = diagnose_bundle(bundle, model, eval_n, eval_data=eval_data)
    dest = out or bundle
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "diagnose.md").write_text(diag.to_markdown(top))
    (dest / "diagnose.json").write_text(json.dumps(diag.to_dict(top), indent=2, default=str) + "\n")
    plot_depth(diag, dest / "diagnose.png")
    jump = diag.first_jump()
    table = Table(title=f"most sensitive layers: {diag.artifact}")
    for col in ("rank", "layer", "op", "layer-alone SQNR dB", "local drop dB", "output SQNR dB"):
        table.add_column(col, justify="left" if col in ("layer", "op") else "right")

    def f(v):  # type: ignore[no-untyped-def]
        return "-" if v is None else ("inf" if v == float("inf") else f"{v:.1f}")

    for i, r in enumerate(diag.ranking()[:top], 1):
        table.add_row(str(i), escape(r.label), r.op, f(r.local_sqnr_db), f(r.local_drop_db), f(r.sqnr_db))
    console.print(table)
    console.print(f"first jump: {escape(jump.label) if jump else 'none'}; {diag.method}")
    console.print(f"wrote {dest / 'diagnose.md'}, {dest / 'diagnose.json'}, {dest / 'diagnose.png'}")
