"""CPU latency table: PyTorch eager, the runtimes used directly, and every vitedge CPU target.

    python benchmarks/cpu_targets.py                       # vit-tiny, convnext-zepto, vit-s16
    python benchmarks/cpu_targets.py --models vit-tiny --threads 2 --out bench.md

For each model, every vitedge target is built through the normal pipeline (parity checked), and
then *all* contestants are timed together in one interleaved run (batch 1 by default), so the
ratios to eager and between runtimes are measured side by side:

- `torch eager`: the PyTorch reference, `torch.inference_mode()`, same thread count.
- `ORT direct`: `onnxruntime.InferenceSession(model.onnx)` with ONNX Runtime's defaults only.
- `OV direct (defaults)`: `openvino.compile_model(model.onnx, "CPU")` with no config: on CPUs
  with bf16 support this computes in bf16, so it is not an fp32 result (shown for honesty).
- `OV direct (f32)`: the same with only the f32 precision hint, i.e. what ov-fp32 should match.
- each vitedge target through its vitedge runner (what `vitedge.load()` and `vitedge bench` use).

"vitedge adds no overhead" is the ratio vitedge-runner / direct on the same file.
ViT-S/16 has random weights (no trained checkpoint ships): its accuracy columns are meaningless
but its latency is what a trained ViT-S/16 would show.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TARGETS = ("onnx-fp32", "ov-fp32", "ov-fp16", "ort-int8", "ov-int8", "torchao-int8")


def build(model: str, workdir: Path, threads: int, num_calib: int, eval_n: int) -> tuple[object, dict]:
    from vitedge.calib.source import load_calibration
    from vitedge.models.resolve import load_model
    from vitedge.pipeline import SharedWork, export_target
    from vitedge.request import BenchConfig, ExportRequest

    loaded = load_model(model, random_init=True) if model == "vit-s16" else load_model(model)
    calib = load_calibration("synthetic", loaded.card.preprocess, num_calib)
    shared = SharedWork(workdir / "shared")
    reports = {}
    for target in TARGETS:
        t0 = time.perf_counter()
        reports[target] = export_target(loaded, ExportRequest(
            target=target, out=workdir / target, calibration=calib, threads=threads, eval_n=eval_n,
            bench=BenchConfig(warmup=3, min_runs=10, budget_s=0.5)), shared)
        r = reports[target].to_dict()
        print(f"  built {target:14s} in {time.perf_counter() - t0:5.1f} s  parity "
              f"{'ok' if r['passed'] else 'FAILED'}  acc delta {r['accuracy']['delta_pts']}  "
              f"cos mean {r['parity']['cosine_mean']:.5f}", file=sys.stderr)
    return loaded, reports


def contestants(loaded, reports: dict, workdir: Path, threads: int, batch: int) -> dict:
    import onnxruntime as ort
    import openvino as ov
    import torch

    from vitedge.pipeline import open_artifact

    h, w = loaded.card.preprocess.input_size
    x = np.random.default_rng(0).standard_normal((batch, 3, h, w)).astype(np.float32)
    fp32_onnx = str(workdir / "onnx-fp32" / "model.onnx")
    calls = {}

    torch.set_num_threads(threads)
    xt = torch.from_numpy(x)

    def eager():
        with torch.inference_mode():
            return loaded.module(xt)

    calls["torch eager"] = eager
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads  # the one setting needed to compare at equal threads
    sess = ort.InferenceSession(fp32_onnx, so, providers=["CPUExecutionProvider"])
    calls["ORT direct (defaults)"] = lambda: sess.run(None, {"input": x})
    core = ov.Core()
    ov_default = core.compile_model(fp32_onnx, "CPU", {"INFERENCE_NUM_THREADS": threads})
    ov_f32 = core.compile_model(fp32_onnx, "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                   "INFERENCE_PRECISION_HINT": "f32"})
    req_d, req_f = ov_default.create_infer_request(), ov_f32.create_infer_request()
    calls[f"OV direct (defaults: {ov_default.get_property('INFERENCE_PRECISION_HINT').get_type_name()})"] = \
        lambda: req_d.infer({"input": x})
    calls["OV direct (f32 hint)"] = lambda: req_f.infer({"input": x})
    for target, report in reports.items():
        runner = open_artifact(workdir / target, report.artifact, threads).activate()
        calls[f"vitedge {target}"] = (lambda r=runner: r.infer({"input": x}))
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="vit-tiny,convnext-zepto,vit-s16")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--budget", type=float, default=20.0, help="seconds of interleaved timing per model")
    parser.add_argument("--num-calib", type=int, default=300)
    parser.add_argument("--eval-n", type=int, default=1000)
    parser.add_argument("--out", type=Path, help="also write the markdown tables here")
    args = parser.parse_args()

    from vitedge.bench.latency import time_calls_with_progress
    from vitedge.sysinfo import system_info

    s = system_info()
    lines = [f"CPU: {s['cpu']} ({', '.join(s['cpu_flags'])}), {args.threads} threads, batch {args.batch}", ""]
    for model in args.models.split(","):
        print(f"{model}: building targets", file=sys.stderr)
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            n_calib = min(args.num_calib, 100) if model == "vit-s16" else args.num_calib
            n_eval = min(args.eval_n, 100) if model == "vit-s16" else args.eval_n
            loaded, reports = build(model, workdir, args.threads, n_calib, n_eval)
            calls = contestants(loaded, reports, workdir, args.threads, args.batch)
            stats = time_calls_with_progress(calls, args.batch, f"{model}: timing {len(calls)} contestants",
                                             warmup=10, min_runs=30, budget_s=args.budget)
        eager = stats["torch eager"].p50
        lines += [f"### {model}", "", "| contestant | p50 ms | p90 ms | vs eager | accuracy delta (pts) | MB |",
                  "|---|---|---|---|---|---|"]
        for name, st in sorted(stats.items(), key=lambda kv: kv[1].p50):
            target = name.removeprefix("vitedge ")
            rep = reports.get(target)
            acc = f"{rep.to_dict()['accuracy']['delta_pts']:+.2f}" if rep and rep.parity.accuracy else "-"
            size = f"{rep.artifact_bytes / 1e6:.1f}" if rep else "-"
            lines.append(f"| {name} | {st.p50:.3f} | {st.p90:.3f} | {eager / st.p50:.2f}x | {acc} | {size} |")
        ort_direct = stats["ORT direct (defaults)"].p50
        ov_f32 = stats["OV direct (f32 hint)"].p50
        lines += ["", f"vitedge overhead: onnx-fp32 runner / ORT direct = {stats['vitedge onnx-fp32'].p50 / ort_direct:.3f}; "
                      f"ov-fp32 runner / OV direct (f32) = {stats['vitedge ov-fp32'].p50 / ov_f32:.3f}", ""]
        print("\n".join(lines[-(len(stats) + 6):]))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
