"""The mobile INT8 targets (ExecuTorch and LiteRT, both on XNNPACK) against ort-int8 on this CPU:
issue 25's goal is "within 1.1x of ort-int8, or the report names the runtime's kernel that
prevents it".

    python benchmarks/xnnpack_int8.py [--models timm:vit_small_patch16_224,timm:convnext_tiny] [--img-size 224]

Each model is a `vitedge matrix` of ort-int8, et-int8 and litert-int8 (random-init weights: the
timing does not depend on them; calibrated on 64 synthetic images, judged on 50), so the three
are timed side by side, each in its own process, in one run. The table gives p50, the ratio to
ort-int8, what each report says about placement and XNNPACK's slow kernels, and where the time
goes: `vitedge bench BUNDLE --ops` (the runtime's own profiler: ExecuTorch's ETDump with XNNPACK's
per-operator events, ONNX Runtime's profiler; LiteRT's Python interpreter has none), its three
slowest kernel kinds and the time per path.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import heading, model_args, publish, run  # noqa: E402

MODELS = ("vit-tiny", "convnext-zepto", "timm:vit_small_patch16_224", "timm:convnext_tiny")
TARGETS = ("ort-int8", "et-int8", "litert-int8")


def ops_summary(bundle: Path, threads: int) -> str:
    """The three slowest kernel kinds and the time per path, from `vitedge bench --ops`."""
    proc = subprocess.run(["vitedge", "bench", str(bundle), "--ops", "--json", "--no-profile", "--budget", "1",
                           "--threads", str(threads)], capture_output=True, text=True)
    prof = json.loads(proc.stdout).get("ops") if proc.returncode == 0 else None
    if not prof:
        return "no op profiler for this runtime" if proc.returncode == 0 else f"bench failed: {proc.stderr[-120:]}"
    from vitedge.runtimes.op_profile import by_path

    top = ", ".join(f"{r['op']} ({r['path']}, x{r['count']}) {r['ms']:.2f}" for r in prof["ops"][:3])
    split = " + ".join(f"{p} {ms:.2f}" for p, ms in sorted(by_path(prof).items(), key=lambda kv: -kv[1]))
    return f"{top}; ops {prof['ops_ms']:.2f} = {split}"


def main() -> None:
    a = model_args(__doc__, MODELS)
    t0 = time.perf_counter()
    lines = heading("XNNPACK INT8 (et-int8, litert-int8) against ort-int8", a.threads)
    lines += ["| model | target | p50 ms | vs ort-int8 | placement / XNNPACK notes | where the time goes (ms per "
              "inference, profiled) |", "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="vitedge-xnnpack-") as tmp:
        for model in a.models.split(","):
            out = Path(tmp) / model.replace(":", "_")
            args = ["vitedge", "matrix", model, "--targets", ",".join(TARGETS), "--out", str(out),
                    "--num-calib", "64", "--eval-n", "50", "--bench-budget", "6", "--no-throughput",
                    "--threads", str(a.threads)]
            if model.startswith("timm:"):
                args += ["--random-init", "--img-size", str(a.img_size)]
            run(args)
            cells = {c["target"]: c for c in (json.loads(f.read_text()) for f in (out / "cells").glob("*.json"))}
            ref = (cells.get("ort-int8", {}).get("latency_ms") or {}).get("p50")
            for t in TARGETS:
                c = cells.get(t, {})
                p50 = (c.get("latency_ms") or {}).get("p50")
                ratio = f"{p50 / ref:.2f}x" if p50 and ref else "-"
                said = [n for n in c.get("notes", []) if "XNNPACK" in n or "portable" in n]
                where = ops_summary(out / "bundles" / t, a.threads) if p50 else "-"
                lines.append(f"| {model} | {t} | {p50:.2f} | {ratio} | {'; '.join(s[:160] for s in said) or '-'} | "
                             f"{where} |" if p50 else
                             f"| {model} | {t} | - | - | {c.get('status')}: {str(c.get('error'))[:120]} | - |")
    publish(lines, a.out, t0)


if __name__ == "__main__":
    main()
