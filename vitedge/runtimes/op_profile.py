"""Where an artifact's time goes, kernel by kernel, from the runtime's own profiler: what
trtexec's `--dumpProfile` and benchmark_app's `-pc` print, for the runtimes that can say it here.

- ONNX Runtime: its session profiler (`enable_profiling`), one `*_kernel_time` event per node
  and run; the kind is the op type the session ran after its own fusions (QLinearMatMul,
  MatMulInteger, FusedConv, ...).
- OpenVINO: the CPU plugin's performance counters (`PERF_COUNT`), per layer of the compiled
  model; the kind is the layer type and the kernel the plugin chose (`FullyConnected
  brgemm_avx512_I8`), which names the precision it really ran in.
- ExecuTorch: the program's ETDump (the pip bindings are built with the event tracer), one event
  per portable-kernel call and, inside each XNNPACK delegate call, per XNNPACK operator
  (`Convolution (NHWC, QC8) DWConv`, `Convert (NC)` for a quantise/dequantise).
- LiteRT's Python interpreter has no op profiler (TFLite's is in its C++ benchmark tool), so
  LiteRT artifacts get none here; the placement report still lists the ops XNNPACK refused.

Each node's time is its median over the profiled runs (the first call's warm-up does not skew
it), summed per kind. The shares are of the ops' sum, not of a call: the profilers' own cost per
event lands between the ops (measured: an ExecuTorch MobileViTV2 INT8 call of 1.2 ms unprofiled
took 3.5 ms under ETDump, its ops 1.2 ms), so `profiled_call_ms` is recorded, not subtracted.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

PROFILED_RUNS = 20  # per artifact: enough for a stable median at a few ms per call
TOP = 12  # kinds a table shows (the rest summed in one row)


def op_times(nodes: Iterable[tuple[str, str, list[float]]], source: str, runs: int,
             total_ms: float | None = None) -> dict[str, Any]:
    """The profile `Runner.op_profile` returns, from (kind, path, [ms per run]) per node: per kind
    and path, the nodes per inference, the ms per inference (sum of the nodes' medians) and the
    share of the ops' total, slowest first."""
    rows: dict[tuple[str, str], list[float]] = {}
    for kind, path, ms in nodes:
        if ms:
            rows.setdefault((kind, path), []).append(statistics.median(ms))
    ops = sum(sum(v) for v in rows.values())
    table = [{"op": kind, "path": path, "count": len(v), "ms": round(sum(v), 4),
              "share": round(sum(v) / ops, 4) if ops else 0.0} for (kind, path), v in rows.items()]
    table.sort(key=lambda r: -r["ms"])
    out: dict[str, Any] = {"source": source, "runs": runs, "ops_ms": round(ops, 4), "ops": table}
    if total_ms is not None:  # the whole call as the profiler timed it: its own cost included
        out["profiled_call_ms"] = round(total_ms, 4)
    return out


def by_path(profile: dict[str, Any]) -> dict[str, float]:
    """ms per inference on each path (XNNPACK / portable, CPU EP, ...)."""
    out: dict[str, float] = {}
    for r in profile["ops"]:
        out[r["path"]] = round(out.get(r["path"], 0.0) + r["ms"], 4)
    return out


def slowest_line(profile: dict[str, Any], n: int = 3) -> str:
    """One line: the kinds that take the most time, with their share, and the time per path."""
    head = ", ".join(f"{r['op']} on {r['path']} x{r['count']} {r['ms']:.2f} ms ({100 * r['share']:.0f}%)"
                     for r in profile["ops"][:n])
    paths = by_path(profile)
    split = "; ".join(f"{p} {ms:.2f} ms" for p, ms in sorted(paths.items(), key=lambda kv: -kv[1]))
    return f"where the time goes ({profile['source']}): {head}" + (f"; by path: {split}" if len(paths) > 1 else "")
