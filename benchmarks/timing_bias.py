"""How much do contestants timed side by side slow each other down? (issue 14's timing trap)

    python benchmarks/timing_bias.py                                  # timm convnext_tiny, 224 px
    python benchmarks/timing_bias.py --model vit-tiny --targets onnx-fp32,ort-int8 --budget 5

Builds the targets once, then times every contestant (the targets and the PyTorch reference,
batch 1) three ways and prints p50 ms:

- alone: each contestant by itself in its own process - the ground truth;
- one process: all of them interleaved in blocks in this process (`time_calls`, how `vitedge
  matrix` and `export` timed before);
- own processes: interleaved in blocks, each in its own process, one working at a time
  (`time_isolated`, how `vitedge matrix` times now).

The ratio to "alone" is the bias. Run it on an otherwise idle machine: it measures cross-talk.
"""

from __future__ import annotations

import argparse
import tempfile
from datetime import date
from pathlib import Path

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="timm:convnext_tiny")
    ap.add_argument("--img-size", type=int, default=None)
    ap.add_argument("--targets", default="ov-int8,ort-int8,onnx-fp32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget", type=float, default=10.0, help="seconds of timing per way (alone: per contestant)")
    args = ap.parse_args()

    from vitedge.bench.isolated import Contestant, time_isolated
    from vitedge.bench.latency import time_calls
    from vitedge.calib.source import load_calibration
    from vitedge.models.checkpoint import save_checkpoint
    from vitedge.models.resolve import load_model
    from vitedge.pipeline import SharedWork, export_target
    from vitedge.request import BenchConfig, ExportRequest
    from vitedge.runtimes.open import open_runner
    from vitedge.runtimes.torch_runner import TorchRunner
    from vitedge.sysinfo import system_info

    random_init = args.model.startswith("timm:")
    overrides = {"img_size": args.img_size} if args.img_size else None
    loaded = load_model(args.model, random_init=random_init, overrides=overrides)
    h, w = loaded.card.preprocess.input_size
    x = np.random.default_rng(0).standard_normal((1, 3, h, w)).astype(np.float32)
    targets = args.targets.split(",")
    with tempfile.TemporaryDirectory(prefix="vitedge-bias-") as tmp:
        work = Path(tmp)
        calib = load_calibration("synthetic", loaded.card.preprocess, 64)
        shared = SharedWork(work / "shared")
        for t in targets:
            print(f"building {t} ...", flush=True)
            export_target(loaded, ExportRequest(target=t, out=work / t, calibration=calib, eval_n=32,
                                                threads=args.threads,
                                                bench=BenchConfig(warmup=1, min_runs=3, budget_s=0.1)), shared)
        save_checkpoint(work / "ref.safetensors", loaded.module, loaded.card)
        contestants = [Contestant("PyTorch eager", work / "ref.safetensors", torch=True)] + [
            Contestant(t, work / t) for t in targets]

        print("timing each alone ...", flush=True)
        alone = {c.name: time_isolated([c], {1: x}, args.threads, budget_s=args.budget / 2)[1].stats[c.name].p50
                 for c in contestants}
        print("timing all in one process ...", flush=True)
        runners = {"PyTorch eager": TorchRunner(loaded.module, (3, h, w), threads=args.threads),
                   **{t: open_runner(work / t, args.threads) for t in targets}}
        for r in runners.values():
            r.activate()
        try:
            calls = {k: (lambda r=r: r.infer({r.inputs()[0].name: x})) for k, r in runners.items()}
            one = {k: s.p50 for k, s in time_calls(calls, 1, budget_s=args.budget).items()}
        finally:
            for r in runners.values():
                r.deactivate()
        print("timing all in their own processes ...", flush=True)
        iso = time_isolated(contestants, {1: x}, args.threads, budget_s=args.budget)[1]
        own = {k: s.p50 for k, s in iso.stats.items()}

    info = system_info()
    lines = [
        f"### Timing cross-talk: {args.model} ({h} px), batch 1, {args.threads} threads, {date.today().isoformat()}",
        "",
        f"`python benchmarks/timing_bias.py --model {args.model} --targets {args.targets}`. CPU: {info['cpu']}; "
        f"flags: {', '.join(info['cpu_flags'])}. p50 ms; the ratio to \"alone\" is the bias.",
        "",
        "| contestant | alone | one process (before) | own processes (now) | before / alone | now / alone |",
        "|---|---|---|---|---|---|",
    ]
    for c in contestants:
        a, o, n = alone[c.name], one[c.name], own[c.name]
        lines.append(f"| {c.name} | {a:.2f} | {o:.2f} | {n:.2f} | {o / a:.2f} | {n / a:.2f} |")
    lines += ["", f"Other contestants' CPU use during a block (own processes): worst "
                  f"{100 * iso.worst_cross_talk():.2f}% of a core; blocks started before the others went quiet: "
                  f"{iso.not_quiet}."]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
