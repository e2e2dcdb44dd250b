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
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """On-device latency benchmark: warm-up, then timed runs; min/p50/p90/p99/max, images/s."""
    import numpy as np

    from vitedge.bench.latency import time_calls_with_progress
    from vitedge.sysinfo import system_info

    sizes = _batches(batch)
    if threads is not None and threads < 1:
        raise UsageError("--threads must be >= 1")
    from vitedge.runtimes.open import open_runner, pixel_frames, takes_pixels

    runner = open_runner(artifact, threads)
    results = []
    with runner:
        spec = runner.inputs()[0]
        fixed = spec.shape[0] if isinstance(spec.shape[0], int) else None
        for b in sizes:
            if fixed is not None and b != fixed:
                raise UsageError(f"{artifact}: the model has a fixed batch of {fixed}; use --batch {fixed}")
            if takes_pixels(runner):  # preprocesses inside: timed on camera-sized frames (the resize included)
                x = pixel_frames(runner, b)
            else:
                shape = [b] + [d if isinstance(d, int) else 1 for d in spec.shape[1:]]
                x = np.random.default_rng(0).standard_normal(shape).astype(spec.dtype)
            feed = {spec.name: x}
            stats = time_calls_with_progress({"a": lambda f=feed: runner.infer(f)}, b, f"timing batch {b}",
                                             warmup=warmup, budget_s=budget)["a"]
            results.append(stats.to_dict())
        info = runner.info()
    if as_json:
        typer.echo(json.dumps({"artifact": str(artifact), "runner": info, "system": system_info(),
                               "results": results}, indent=2, default=str))
        return
    table = Table(title=f"{artifact} on {info.get('runtime')} {info.get('version', '')}, "
                        f"{info.get('threads', '?')} threads{_capped_note(artifact)}")
    for col in ("batch", "runs", "min ms", "p50 ms", "p90 ms", "p99 ms", "max ms", "images/s"):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(str(r["batch"]), str(r["runs"]), f"{r['min']:.3f}", f"{r['p50']:.3f}", f"{r['p90']:.3f}",
                      f"{r['p99']:.3f}", f"{r['max']:.3f}", f"{r['throughput']:.1f}")
    console.print(table)
    s = system_info()
    console.print(f"{s['cpu']} ({', '.join(s['cpu_flags'])}), {s['cores_available']} cores available")
