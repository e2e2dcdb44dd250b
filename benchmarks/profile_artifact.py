"""Where an artifact's time goes, by op type, from the runtime's own profiler (issue 14).

    python benchmarks/profile_artifact.py BUNDLE [--runs 200] [--threads 2]

OpenVINO IR: the CPU plugin's per-layer counters (`PERF_COUNT`), grouped by layer type and by the
kernel it ran (`exec_type`: e.g. `brgemm_avx512_amx_I8` is an int8 AMX matmul, `..._f32` a float
one), so layers left in float show up by name. ONNX Runtime: its profiler's per-node events
grouped by op type. Prints a markdown table (and appends it to --out when given). Per-layer
profiling adds its own overhead (the summed layer times exceed the unprofiled latency, e.g.
1.57 vs 0.72 ms for vit-tiny ov-int8): read the shares, not the sums.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np


def _input(shape: list, batch: int) -> np.ndarray:
    dims = [batch if not isinstance(d, int) or d < 0 else d for d in shape]
    return np.random.default_rng(0).standard_normal(dims).astype(np.float32)


def profile_openvino(path: Path, runs: int, threads: int, options: dict) -> tuple[dict, float]:
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    shape = [d.get_length() if d.is_static else -1 for d in model.inputs[0].get_partial_shape()]
    config = {"PERF_COUNT": True, "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
    if options.get("inference_precision"):
        config["INFERENCE_PRECISION_HINT"] = options["inference_precision"]
    compiled = core.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    x = _input(shape, 1)
    for _ in range(20):
        request.infer({0: x})
    totals: dict[tuple[str, str], float] = defaultdict(float)
    for _ in range(runs):
        request.infer({0: x})
        for p in request.profiling_info:
            if p.status == p.Status.EXECUTED:
                totals[(p.node_type, p.exec_type)] += p.real_time.total_seconds() * 1e3
    return {k: v / runs for k, v in totals.items()}, sum(totals.values()) / runs


def profile_ort(path: Path, runs: int, threads: int) -> tuple[dict, float]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    x = _input(inp.shape, 1)
    warmup = 20
    for _ in range(warmup + runs):
        session.run(None, {inp.name: x})
    trace = json.loads(Path(session.end_profiling()).read_text())
    # Count only the runs after warm-up: node events from the (warmup+1)-th model_run on.
    starts = sorted(ev["ts"] for ev in trace if ev.get("name") == "model_run")
    t_from = starts[warmup] if len(starts) > warmup else 0
    totals: dict[tuple[str, str], float] = defaultdict(float)
    for ev in trace:
        if ev.get("cat") == "Node" and ev["name"].endswith("_kernel_time") and ev["ts"] >= t_from:
            args = ev.get("args", {})
            totals[(args.get("op_name", "?"), args.get("provider", "").replace("ExecutionProvider", ""))] += ev["dur"] / 1e3
    return {k: v / runs for k, v in totals.items()}, sum(totals.values()) / runs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path, help="a vitedge bundle (OpenVINO or ONNX Runtime artifact) or a model file")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    path, options, runtime = args.bundle, {}, ""
    if args.bundle.is_dir():
        from vitedge.bundle.manifest import read_manifest

        m = read_manifest(args.bundle)
        path, options, runtime = m.main_file, dict(m.runner_options or {}), m.runtime
    runtime = runtime or ("openvino" if path.suffix == ".xml" else "onnxruntime")
    if runtime == "openvino":
        per, total = profile_openvino(path, args.runs, args.threads, options)
        head = "| layer type | kernel (exec_type) | ms per run | share |"
    elif runtime == "onnxruntime":
        per, total = profile_ort(path, args.runs, args.threads)
        head = "| op type | provider | ms per run | share |"
    else:
        raise SystemExit(f"{args.bundle}: profiles OpenVINO and ONNX Runtime artifacts, not {runtime}")
    rows = sorted(per.items(), key=lambda kv: -kv[1])
    lines = [f"Profile of `{args.bundle}` ({runtime}, {args.threads} threads, batch 1, {args.runs} runs): "
             f"{total:.3f} ms per run summed over layers.", "", head, "|---|---|---|---|"]
    for (kind, kernel), ms in rows[: args.top]:
        lines.append(f"| {kind} | {kernel} | {ms:.3f} | {ms / total:.0%} |")
    rest = sum(ms for _, ms in rows[args.top:])
    if rest:
        lines.append(f"| (other {len(rows) - args.top}) | | {rest:.3f} | {rest / total:.0%} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
