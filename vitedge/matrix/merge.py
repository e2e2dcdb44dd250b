"""Merge matrix cells into one table: `matrix.json`, `matrix.md` and `pareto.png`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vitedge.errors import InputError
from vitedge.matrix.cells import CELL_FORMAT


def read_cells(sources: list[Path]) -> list[dict[str, Any]]:
    """Cell JSON files from files or directories (a matrix DIR, its cells/ dir, or single files)."""
    files: list[Path] = []
    for src in sources:
        if src.is_dir():
            found = sorted((src / "cells").glob("*.json")) if (src / "cells").is_dir() else sorted(src.glob("*.json"))
            files += found
        elif src.is_file():
            files.append(src)
        else:
            raise InputError(f"{src}: no such matrix directory or cell file")
    cells = []
    for f in files:
        try:
            data = json.loads(f.read_text())
        except (OSError, ValueError) as e:
            raise InputError(f"{f}: unreadable matrix cell ({e})") from None
        if isinstance(data, dict) and data.get("format") == CELL_FORMAT:
            data["_file"] = str(f)
            cells.append(data)
    if not cells:
        raise InputError(f"no matrix cells found in {', '.join(map(str, sources))}")
    return cells


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def rows(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for c in cells:
        acc = c.get("accuracy") or {}
        par = c.get("parity") or {}
        lat = c.get("latency_ms") or {}
        out.append({
            "model": c["model"], "target": c["target"], "status": c.get("status"), "error": c.get("error"),
            "size_mb": c.get("size_mb"), "accuracy": acc.get("artifact"), "reference_accuracy": acc.get("reference"),
            "delta_pts": acc.get("delta_pts"), "cosine_min": par.get("cosine_min"),
            "top1_agreement": par.get("top1_agreement"), "p50_ms": lat.get("p50"), "p90_ms": lat.get("p90"),
            "speedup_vs_pytorch": lat.get("speedup_vs_pytorch"), "latency_measured": lat.get("measured"),
            "batch_sweep": c.get("batch_sweep"), "cpu": (c.get("system") or {}).get("cpu"),
            "threads": c.get("threads"), "fallback": c.get("fallback"),
            "images_n": par.get("images_n"), "judged_on": c.get("judged_on"),
            # measured in the artifact's own timing process (vitedge.bench.profile)
            "peak_mb": (c.get("device_profile") or {}).get("peak_mb"),
            "load_ms": (c.get("device_profile") or {}).get("load_cold_ms"),
            "first_ms": (c.get("device_profile") or {}).get("first_ms"),
            "placement": c.get("placement"),
            # all cores, the best of a batch x streams sweep (vitedge.bench.throughput)
            "images_per_s": (c.get("throughput") or {}).get("images_per_s"),
            "throughput_setting": (c.get("throughput") or {}).get("setting")
            or (c.get("throughput") or {}).get("error"),
        })
    order = {"passed": 0, "kit only, predicted": 1, "not judged": 2, "failed": 3}
    out.sort(key=lambda r: (r["model"], order.get(r["status"], 4), r["p50_ms"] if r["p50_ms"] is not None else 1e9))
    return out


def _agreement(r: dict[str, Any]) -> str:
    """Top-1 agreement with the n it is over (a rate on 20 images is coarse: say so)."""
    n = r.get("images_n")
    if r["top1_agreement"] is None or not n:
        return _fmt(r["top1_agreement"], ".2%")
    return f"{r['top1_agreement']:.2%} ({round(r['top1_agreement'] * n)}/{n})"


def render_markdown(table: list[dict[str, Any]]) -> str:
    lines = []
    for model in dict.fromkeys(r["model"] for r in table):
        mrows = [r for r in table if r["model"] == model]
        ref = next((r["reference_accuracy"] for r in mrows if r["reference_accuracy"] is not None), None)
        cpu = next((r["cpu"] for r in mrows if r["cpu"]), "?")
        judged = sorted({r["judged_on"] for r in mrows if r.get("judged_on")})
        lines += [f"### {model}", "",
                  f"PyTorch reference accuracy: {_fmt(ref, '.2%')}. Latency: batch 1, {mrows[0]['threads']} threads, "
                  f"{cpu}.", ""]
        lines += [f"Judged on: {'; '.join(judged)}.", ""] if judged else []
        lines += [
                  "| target | status | size MB | accuracy | delta vs PyTorch (pts) | cosine min | top-1 agreement "
                  "| p50 ms | p90 ms | speed-up vs PyTorch | peak MB | load ms | first ms | img/s |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in mrows:
            status = r["status"] if not r["error"] else f"error: {r['error'][:80]}"
            lines.append(
                f"| {r['target']} | {status} | {_fmt(r['size_mb'], '.2f')} | {_fmt(r['accuracy'], '.2%')} | "
                f"{_fmt(r['delta_pts'], '+.2f')} | {_fmt(r['cosine_min'], '.5f')} | {_agreement(r)} | "
                f"{_fmt(r['p50_ms'], '.3f')} | {_fmt(r['p90_ms'], '.3f')} | {_fmt(r['speedup_vs_pytorch'], '.2f') + 'x' if r['speedup_vs_pytorch'] else '-'} | "
                f"{_fmt(r.get('peak_mb'), '.0f')} | {_fmt(r.get('load_ms'), '.0f')} | {_fmt(r.get('first_ms'), '.1f')} | "
                f"{_fmt(r.get('images_per_s'), '.0f')} |")
        sweeps = [r for r in mrows if r["batch_sweep"]]
        batches = sorted({int(b) for r in sweeps for b in r["batch_sweep"]})
        if len(batches) > 1:
            lines += ["", "Batch sweep (p50 ms / images per s, side by side):", "",
                      "| target | " + " | ".join(f"batch {b}" for b in batches) + " |",
                      "|---|" + "---|" * len(batches)]
            for r in sweeps:
                cells = [r["batch_sweep"].get(str(b)) for b in batches]
                lines.append(f"| {r['target']} | " + " | ".join(
                    f"{c['p50']:.2f} / {c['throughput']:.0f}" if c else "-" for c in cells) + " |")
        kept = [r for r in mrows if r.get("fallback")]
        if kept:
            lines += ["", "Accuracy-aware fallback (" + kept[0]["fallback"]["budget_text"] + "; drop measured on the "
                      "search set, the table's accuracy on the held-out data):", "",
                      "| target | plain INT8 drop (pts) | after fallback (pts) | budget met | kept in higher precision |",
                      "|---|---|---|---|---|"]
            for r in kept:
                fb = r["fallback"]
                names = (f"{fb['kept_count']} / {fb['total_layers']}: {', '.join(fb['kept'])}" if fb["kept_count"]
                         else "none needed")
                lines.append(f"| {r['target']} | {_fmt((fb.get('before') or {}).get('drop_pts'), '.2f')} | "
                             f"{_fmt((fb.get('after') or {}).get('drop_pts'), '.2f')} | {'yes' if fb['met'] else 'no'} | "
                             f"{names} |")
        off = [r for r in mrows if (r.get("placement") or {}).get("off_fast_path")]
        if off:
            from vitedge.runtimes.base import placement_line

            lines += ["", "Op placement (ops off the runtime's fast path; the runtime's own tools):", ""]
            lines += [f"- {r['target']}: {placement_line(r['placement'])}" for r in off]
        if any(r.get("peak_mb") is not None for r in mrows):
            lines += ["", "Peak MB: the most memory the artifact's process held above its baseline (numpy + "
                      "vitedge) while loading, on its first inference and in the timed runs; load ms: open and "
                      "compile, cold; first ms: the first inference (each artifact in its own process)."]
        tput = [r for r in mrows if r.get("throughput_setting")]
        if tput:
            lines += ["", "img/s: images per second with all cores, the best point of a batch x parallel-streams "
                      "sweep in the runtime's own way of running in parallel (`vitedge bench --throughput`); "
                      "the setting that won:", ""]
            lines += [f"- {r['target']}: {r['throughput_setting']}" for r in tput]
        measured = {r["latency_measured"] for r in mrows if r["latency_measured"]}
        lines += ["", "Latency measured: " + "; ".join(sorted(measured)) if measured else "", ""]
    return "\n".join(lines)


def merge(cells: list[dict[str, Any]], out: Path) -> dict[str, Path]:
    from vitedge.matrix.plot import pareto_plot

    out.mkdir(parents=True, exist_ok=True)
    table = rows(cells)
    (out / "matrix.json").write_text(json.dumps({"rows": table}, indent=2, default=str) + "\n")
    (out / "matrix.md").write_text(render_markdown(table) + "\n")
    written = {"json": out / "matrix.json", "md": out / "matrix.md"}
    png = pareto_plot(table, out / "pareto.png")
    if png:
        written["png"] = png
    return written
