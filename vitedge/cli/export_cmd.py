"""`vitedge targets` and `vitedge export`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
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
    from vitedge.auto import AUTO_TARGETS

    for name, candidates in AUTO_TARGETS.items():
        table.add_row(name, "(measured)", "-", "if given", "yes",
                      f"builds {', '.join(candidates)}; keeps the fastest that passes parity on this device")
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
    for metric in ("max_abs", "cosine_min", "cosine_mean", "top1_agreement"):
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
        console.print(f"build kit in {report.out}: KIT.md, build_engine.py, trtexec.sh, verify_engine.py")
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


def calibration_for(target, card, calib: str | None, num_calib: int, seed: int):  # type: ignore[no-untyped-def]
    """Load the calibration set a target needs, before any export work starts."""
    from vitedge.calib import synthetic
    from vitedge.calib.source import load_calibration
    from vitedge.errors import UsageError

    if not target.needs_calibration:
        return None
    if calib is None:
        if card.classes != synthetic.CLASSES:
            raise UsageError(f"target {target.name} needs calibration data: pass --calib DIR or "
                             "--calib FILE.npy with images like the ones the model will see")
        calib = "synthetic"
    return load_calibration(calib, card.preprocess, num_calib, seed)


def auto_calibration(card, calib: str | None, num_calib: int, seed: int):  # type: ignore[no-untyped-def]
    """auto-cpu: calibrate INT8 candidates when data is given or the model was trained on shapes10."""
    from vitedge.calib import synthetic
    from vitedge.calib.source import load_calibration

    if calib is None and card.classes != synthetic.CLASSES:
        return None  # INT8 candidates are skipped (and say why)
    return load_calibration(calib or "synthetic", card.preprocess, num_calib, seed)


def print_auto(result) -> None:  # type: ignore[no-untyped-def]
    table = Table(title=f"auto-cpu: chose {result.chosen}")
    for col in ("target", "status", "accuracy", "delta pts", "cosine mean", "p50 ms", "MB"):
        table.add_column(col, justify="left" if col in ("target", "status") else "right")
    for r in result.candidates:
        def f(v, fmt):  # type: ignore[no-untyped-def]
            return "-" if v is None else format(v, fmt)
        table.add_row(r["target"], r["status"][:60], f(r.get("accuracy"), ".2%"), f(r.get("delta_pts"), "+.2f"),
                      f(r.get("cosine_mean"), ".5f"), f(r.get("p50_ms"), ".3f"), f(r.get("size_mb"), ".2f"))
    console.print(table)
    console.print(result.reason)


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
    cosine_min: Annotated[float | None, typer.Option(help="Override the worst-sample cosine limit.")] = None,
    cosine_mean: Annotated[float | None, typer.Option(help="Override the mean cosine limit.")] = None,
    top1_agreement: Annotated[float | None, typer.Option(help="Override the top-1 agreement limit.")] = None,
    max_accuracy_drop: Annotated[float | None, typer.Option(help="Override the accuracy-drop limit (pts).")] = None,
    bench_budget: Annotated[float, typer.Option(help="Seconds of timing for artifact + reference.")] = 3.0,
    seed: Annotated[int, typer.Option(help="Seed for random parity inputs and subsets.")] = 0,
    calib: Annotated[str | None, typer.Option(help="Calibration data: 'synthetic', DIR, or FILE.npy/.npz (INT8 targets; default synthetic for models trained on it).", rich_help_panel="Quantisation")] = None,
    num_calib: Annotated[int, typer.Option(help="Calibration samples (seeded subset).", rich_help_panel="Quantisation")] = 300,
    calib_method: Annotated[str, typer.Option(help="ort-int8 calibration: minmax | percentile | entropy.", rich_help_panel="Quantisation")] = "minmax",
    calib_percentile: Annotated[float, typer.Option(help="Percentile for --calib-method percentile.", rich_help_panel="Quantisation")] = 99.999,
    ort_reduce_range: Annotated[bool, typer.Option(help="ort-int8: 7-bit weights, safe on x86 CPUs without VNNI.", rich_help_panel="Quantisation")] = True,
    ort_activations: Annotated[str, typer.Option(help="ort-int8 activation type: uint8 | int8.", rich_help_panel="Quantisation")] = "uint8",
    quantize_attention: Annotated[bool, typer.Option(help="ort-int8: also quantise attention's Q.K^T and attn.V MatMuls.", rich_help_panel="Quantisation")] = False,
    ov_preset: Annotated[str | None, typer.Option(help="ov-int8 NNCF preset: mixed | performance.", rich_help_panel="Quantisation")] = None,
    ov_bias_correction: Annotated[str, typer.Option(help="ov-int8 bias correction: fast | full.", rich_help_panel="Quantisation")] = "fast",
    ov_smooth_quant: Annotated[float | None, typer.Option(help="ov-int8 SmoothQuant alpha for MatMuls (-1 = off).", rich_help_panel="Quantisation")] = None,
    ov_source: Annotated[str, typer.Option(help="OpenVINO targets convert from: onnx | torch.", rich_help_panel="Quantisation")] = "onnx",
    ignore: Annotated[list[str] | None, typer.Option(help="Node name kept in float (repeatable; ORT node names or OpenVINO friendly names).", rich_help_panel="Quantisation")] = None,
    min_batch: Annotated[int, typer.Option(help="TensorRT profile: smallest batch.", rich_help_panel="TensorRT")] = 1,
    opt_batch: Annotated[int, typer.Option(help="TensorRT profile: batch to optimise for.", rich_help_panel="TensorRT")] = 1,
    max_batch: Annotated[int, typer.Option(help="TensorRT profile: largest batch.", rich_help_panel="TensorRT")] = 8,
    workspace_mb: Annotated[int, typer.Option(help="TensorRT workspace limit (MiB).", rich_help_panel="TensorRT")] = 2048,
    trt_opt_level: Annotated[int, typer.Option(help="TensorRT builder optimisation level 0-5.", rich_help_panel="TensorRT")] = 3,
    version_compatible: Annotated[bool, typer.Option(help="TensorRT version-compatible engine.", rich_help_panel="TensorRT")] = False,
    hardware_compatible: Annotated[bool, typer.Option(help="TensorRT Ampere+ hardware-compatible engine.", rich_help_panel="TensorRT")] = False,
    trt_major: Annotated[str, typer.Option(help="TensorRT major version the lint checks against: 10 | 11.", rich_help_panel="TensorRT")] = "10",
    require_engine: Annotated[bool, typer.Option(help="Fail (exit 5) when no engine can be built here, instead of writing a kit.", rich_help_panel="TensorRT")] = False,
    max_drop: Annotated[float | None, typer.Option(help="Accuracy budget (pts on held-out labelled data): keep the most sensitive layers in higher precision until it holds.", rich_help_panel="Accuracy-aware fallback")] = None,
    min_cosine: Annotated[float | None, typer.Option(help="Budget on the mean logit cosine vs PyTorch (alternative or addition to --max-drop).", rich_help_panel="Accuracy-aware fallback")] = None,
    fallback_n: Annotated[int, typer.Option(help="Images in the fallback's search set (shapes10 val, or half of --eval DIR).", rich_help_panel="Accuracy-aware fallback")] = 1000,
    ov_accuracy_control: Annotated[bool, typer.Option(help="ov-int8: use NNCF's quantize_with_accuracy_control instead of vitedge's search.", rich_help_panel="Accuracy-aware fallback")] = False,
) -> None:
    """Export MODEL to a target, check parity with PyTorch, time it, and write a bundle."""
    from vitedge.auto import AUTO_TARGETS
    from vitedge.errors import ParityError, UsageError
    from vitedge.export.onnx_export import ExportConfig
    from vitedge.pipeline import BenchConfig, ExportRequest, export_target
    from vitedge.targets.registry import get_target

    is_auto = target in AUTO_TARGETS
    if not is_auto:
        get_target(target)  # unknown target: fail before loading anything
    if eval_n is not None and eval_n < 1:
        raise UsageError("--eval-n must be >= 1")
    if threads is not None and threads < 1:
        raise UsageError("--threads must be >= 1")
    export_cfg = ExportConfig(opset=opset, static_batch=static_batch, exporter=exporter)
    budget = None
    if max_drop is not None or min_cosine is not None:
        from vitedge.fallback import FALLBACK_OPTION, Budget

        budget = Budget(max_drop=max_drop, min_cosine=min_cosine)
        if not is_auto and target not in FALLBACK_OPTION:
            raise UsageError(f"--max-drop/--min-cosine apply to {', '.join(FALLBACK_OPTION)}; {target} has no "
                             "reduced-precision layers to move back")
        # The budget is also the parity gate, so the report and the search agree.
        max_accuracy_drop = max_drop if max_accuracy_drop is None else max_accuracy_drop
        cosine_mean = min_cosine if cosine_mean is None else cosine_mean
    if ov_accuracy_control and max_drop is None:
        raise UsageError("--ov-accuracy-control needs --max-drop")
    if ov_bias_correction not in ("fast", "full"):
        raise UsageError("--ov-bias-correction must be fast or full")
    options = {
        "ort_calibrate_method": calib_method, "ort_percentile": calib_percentile,
        "ort_reduce_range": ort_reduce_range, "ort_activation_type": ort_activations,
        "ort_quantize_attention": quantize_attention, "ort_exclude": tuple(ignore or ()),
        "ov_preset": ov_preset, "ov_fast_bias_correction": ov_bias_correction == "fast",
        "ov_smooth_quant": ov_smooth_quant, "ov_source": ov_source, "ignore": tuple(ignore or ()),
        "trt_min_batch": min_batch, "trt_opt_batch": opt_batch, "trt_max_batch": max_batch,
        "trt_workspace_mb": workspace_mb, "trt_optimization_level": trt_opt_level,
        "trt_version_compatible": version_compatible, "trt_hardware_compatible": hardware_compatible,
        "trt_major": trt_major, "require_engine": require_engine, "ov_accuracy_control": ov_accuracy_control,
    }
    if trt_major not in ("10", "11"):
        raise UsageError("--trt-major must be 10 or 11")
    if require_engine and target.startswith("trt-"):
        from vitedge.errors import MissingDependencyError
        from vitedge.targets.tensorrt import why_no_engine

        reason = why_no_engine()
        if reason:  # fail before any work: CI jobs asking for an engine want to know at once
            raise MissingDependencyError(f"--require-engine: no TensorRT engine can be built here ({reason})")
    loaded = load_model_from_cli(model, arch, weights, classes, random_init, img_size, num_classes)
    if is_auto:
        calibration = auto_calibration(loaded.card, calib, num_calib, seed)
    else:
        calibration = calibration_for(get_target(target), loaded.card, calib, num_calib, seed)
    out = out or Path("vitedge-out") / f"{loaded.card.arch.replace(':', '-')}-{target}"
    request = ExportRequest(
        target=target, out=out, force=force, export=export_cfg, eval_data=eval_data, eval_n=eval_n,
        threads=threads, seed=seed,
        tolerance={"max_abs": max_abs, "cosine_min": cosine_min, "cosine_mean": cosine_mean,
                   "top1_agreement": top1_agreement,
                   "max_accuracy_drop": max_accuracy_drop},
        bench=BenchConfig(budget_s=bench_budget), calibration=calibration, options=options,
        budget=budget, fallback_n=fallback_n,
    )
    if is_auto:
        from vitedge.auto import export_auto

        result = export_auto(loaded, request, target)
        print_auto(result)
        return
    report = export_target(loaded, request)
    print_report(report)
    if not report.passed:
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
    n: Annotated[int, typer.Option(help="Images to compare on.")] = 16,
    top: Annotated[int, typer.Option(help="How many of the most sensitive layers to list.")] = 10,
    eval_data: Annotated[str, typer.Option("--eval", help="'synthetic' or a labelled folder.")] = "synthetic",
    out: Annotated[Path | None, typer.Option(help="Write diagnose.md / .json / .png here (default: the bundle).")] = None,
) -> None:
    """Per-layer divergence: where the artifact departs from fp32, and which layers cause it."""
    import json

    from vitedge.diagnose.result import plot_depth
    from vitedge.diagnose.run import diagnose_bundle
    from vitedge.errors import UsageError

    if n < 1 or top < 1:
        raise UsageError("--n and --top must be >= 1")
    diag = diagnose_bundle(bundle, model, n, eval_data=eval_data)
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
