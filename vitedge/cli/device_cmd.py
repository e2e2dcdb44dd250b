"""Device-side commands: `vitedge bench` and `vitedge verify`. numpy + the runtime only, no torch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from vitedge.cli.common import console
from vitedge.cli.main import app
from vitedge.errors import UsageError


def _batches(text: str) -> list[int]:
    try:
        out = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise UsageError(f"--batch {text!r}: expected comma-separated integers like 1,8") from None
    if not out or min(out) < 1:
        raise UsageError(f"--batch {text!r}: batch sizes must be >= 1")
    return out


def _capped_note(artifact: Path) -> str:
    from vitedge.bundle.manifest import MANIFEST, read_manifest

    if not (artifact.is_dir() and (artifact / MANIFEST).is_file()):
        return ""
    cap = read_manifest(artifact).max_threads
    return f" (the bundle's max_threads: auto measured it fastest on {cap})" if cap else ""


@app.command("bench")
def bench_command(
    artifact: Annotated[Path, typer.Argument(help="Bundle directory, or a model file any installed runtime opens (.onnx, OpenVINO .xml, .engine, ...).")],
    batch: Annotated[str, typer.Option(help="Batch sizes, comma-separated.")] = "1",
    threads: Annotated[int | None, typer.Option(help="Most runtime threads (default: all cores; a bundle chosen by "
                                                     "auto may record fewer, its max_threads).")] = None,
    budget: Annotated[float, typer.Option(help="Seconds of timed runs per batch size.")] = 3.0,
    warmup: Annotated[int, typer.Option(help="Untimed warm-up calls.")] = 10,
    profile: Annotated[bool, typer.Option(help="Also measure memory, load (cold/warm) and the first inference in a "
                                               "fresh process of its own.")] = True,
    throughput: Annotated[bool, typer.Option(
        "--throughput", help="Also images/s with all cores: the best of a batch x parallel-streams sweep, each "
                             "runtime parallelised its own way (OpenVINO streams, several sessions/interpreters).")] = False,
    ops: Annotated[bool, typer.Option(
        "--ops", help="Also where the time goes, per kernel kind, from the runtime's own profiler (ONNX Runtime, "
                      "OpenVINO PERF_COUNT, ExecuTorch ETDump with XNNPACK's per-operator events).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """On-device benchmark: latency (warm-up, then timed runs; min/p50/p90/p99/max, images/s), in a
    fresh process memory, load time cold and warm and the first inference, and (--throughput)
    images/s with all cores."""
    from vitedge.sysinfo import system_info

    sizes = _batches(batch)
    if threads is not None and threads < 1:
        raise UsageError("--threads must be >= 1")
    # the fresh process first: its load is the first of this run (a runtime's model cache, if the
    # bundle has one, is written there and read by the latency runner's load)
    device = _profile(artifact, threads, sizes[0], budget) if profile else None
    results, info, placement, op_profile = _latency(artifact, sizes, threads, warmup, budget, ops)
    best = _throughput(artifact, threads) if throughput else None
    if as_json:
        typer.echo(json.dumps({"artifact": str(artifact), "runner": info, "system": system_info(),
                               "results": results, "placement": placement, "ops": op_profile,
                               "profile": device.to_dict() if device else None,
                               "throughput": best.to_dict() if best else None}, indent=2, default=str))
        return
    _print_bench(artifact, info, results, placement, device, best)
    if ops:
        _print_ops(op_profile, info, next((r["p50"] for r in results if r["batch"] == 1), None))


def _print_ops(profile: dict | None, info: dict, p50: float | None) -> None:
    if profile is None:
        console.print(f"where the time goes: {info.get('runtime')} has no op profiler here "
                      "(vitedge.runtimes.op_profile says which runtimes do)")
        return
    from rich.markup import escape

    from vitedge.runtimes.op_profile import TOP, slowest_line

    table = Table(title=f"where the time goes: {profile['source']}, median of {profile['runs']} runs, per inference")
    for col, just in (("op (kernel)", "left"), ("path", "left"), ("nodes", "right"), ("ms", "right"),
                      ("share", "right")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in profile["ops"][:TOP]:
        table.add_row(r["op"], r["path"], str(r["count"]), f"{r['ms']:.3f}", f"{100 * r['share']:.1f}%")
    if len(profile["ops"]) > TOP:
        rest = profile["ops"][TOP:]
        table.add_row(f"{len(rest)} more kinds", "", str(sum(r["count"] for r in rest)),
                      f"{sum(r['ms'] for r in rest):.3f}", f"{100 * sum(r['share'] for r in rest):.1f}%")
    console.print(table)
    console.print(escape(slowest_line(profile)))
    if p50 is not None:  # the profile runs batch 1 (or the model's fixed batch)
        console.print(f"the ops' sum: {profile['ops_ms']:.3f} ms per inference; unprofiled p50 at batch 1 above: "
                      f"{p50:.3f} ms (the difference: calls between the ops, and the profiler's own cost)")


def _print_bench(artifact: Path, info: dict, results: list[dict], placement: dict | None, device, best) -> None:  # type: ignore[no-untyped-def]
    table = Table(title=f"{artifact} on {info.get('runtime')} {info.get('version', '')}, "
                        f"{info.get('threads', '?')} threads{_capped_note(artifact)}")
    for col in ("batch", "runs", "min ms", "p50 ms", "p90 ms", "p99 ms", "max ms", "images/s"):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(str(r["batch"]), str(r["runs"]), f"{r['min']:.3f}", f"{r['p50']:.3f}", f"{r['p90']:.3f}",
                      f"{r['p99']:.3f}", f"{r['max']:.3f}", f"{r['throughput']:.1f}")
    console.print(table)
    if placement:
        from vitedge.runtimes.base import placement_line

        console.print(f"op placement: {placement_line(placement)}")
    if device:
        console.print(profile_table(device))
    if best:
        console.print(throughput_table(best))
    from vitedge.sysinfo import system_info

    s = system_info()
    console.print(f"{s['cpu']} ({', '.join(s['cpu_flags'])}), {s['cores_available']} cores available")


def _latency(artifact: Path, sizes: list[int], threads: int | None, warmup: int, budget: float, ops: bool = False,
             ) -> tuple[list[dict], dict, dict | None, dict | None]:
    from vitedge.bench.latency import time_calls_with_progress
    from vitedge.quiet import native_stderr, quiet
    from vitedge.runtimes.open import open_runner, seeded_input

    # a runtime's import, load and first call print to stderr (ExecuTorch's cpuinfo probing,
    # torch's pytree warning): held back as vitedge.load() does, shown only if the load fails
    with quiet(capture_stdout=False), native_stderr():
        runner = open_runner(artifact, threads).activate()
        first = runner.inputs()[0]
        runner.infer({first.name: seeded_input(runner, first.shape[0] if isinstance(first.shape[0], int) else 1)})
    results = []
    with runner:
        spec = runner.inputs()[0]
        fixed = spec.shape[0] if isinstance(spec.shape[0], int) else None
        for b in sizes:
            if fixed is not None and b != fixed:
                raise UsageError(f"{artifact}: the model has a fixed batch of {fixed}; use --batch {fixed}")
            # a pixel artifact is timed on camera-sized frames (the resize inside included)
            feed = {spec.name: seeded_input(runner, b)}
            stats = time_calls_with_progress({"a": lambda f=feed: runner.infer(f)}, b, f"timing batch {b}",
                                             warmup=warmup, budget_s=budget)["a"]
            results.append(stats.to_dict())
        info = runner.info()
        placement = runner.placement()
        op_profile = None
        if ops:
            from vitedge.progress import stderr_console

            with stderr_console.status("profiling: where the time goes, per kernel"):
                op_profile = runner.op_profile()
    return results, info, placement, op_profile


def _profile(artifact: Path, threads: int | None, batch: int, budget: float):  # type: ignore[no-untyped-def]
    from vitedge.bench.isolated import Contestant
    from vitedge.bench.profile import profile
    from vitedge.progress import stderr_console

    with stderr_console.status("measuring memory, load and first inference in a fresh process"):
        return profile(Contestant("artifact", artifact), threads, batch=batch, budget_s=min(budget, 2.0))


def _throughput(artifact: Path, threads: int | None):  # type: ignore[no-untyped-def]
    from vitedge.bench.throughput import sweep
    from vitedge.progress import stderr_console

    with stderr_console.status("throughput: batch x parallel-streams sweep") as status:
        return sweep(artifact, cores=threads, on_point=lambda p: status.update(
            f"throughput: batch {p.batch}, {p.streams} stream(s): {p.images_per_s:.0f} images/s"))


def throughput_table(r) -> Table:  # type: ignore[no-untyped-def]
    """Every point of the sweep, the best one marked."""
    table = Table(title=f"throughput on {r.cores} cores ({r.frame} per image): best {r.best.images_per_s:.0f} "
                        f"images/s at {r.setting}")
    for col in ("batch", "streams", "runners x threads", "images/s", ""):
        table.add_column(col, justify="right")
    for p in r.points:
        table.add_row(str(p.batch), str(p.streams), f"{p.instances} x {p.threads_each}", f"{p.images_per_s:.1f}",
                      "best" if p == r.best else "")
    return table


def profile_table(p) -> Table:  # type: ignore[no-untyped-def]
    """A DeviceProfile as the two rows an edge engineer budgets by."""
    def mb(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    base = "" if p.baseline_mb is None else f", above a {p.baseline_mb:.0f} MB baseline (numpy + vitedge)"
    cache = f"; the runtime's model cache was {p.model_cache}" if p.model_cache else ""
    table = Table(title=f"in a fresh process: {p.frame} per call{base}{cache}")
    for col in ("", "runtime import", "load (cold)", "first inference", "steady", "load (warm)"):
        table.add_column(col, justify="right")
    table.add_row("peak MB", mb(p.import_mb), mb(p.load_peak_mb), mb(p.first_peak_mb), mb(p.steady_peak_mb), "")
    table.add_row("ms", f"{p.import_ms:.0f}", f"{p.load_cold_ms:.0f}", f"{p.first_ms:.1f}",
                  f"p50 {p.steady.p50:.3f} / p99 {p.steady.p99:.3f}", f"{p.load_warm_ms:.0f}")
    return table
