"""The mobile INT8 targets (ExecuTorch and LiteRT, both on XNNPACK) against ort-int8 on this CPU:
issue 25's goal is "within 1.1x of ort-int8, or the report names the runtime's kernel that
prevents it".

    python benchmarks/xnnpack_int8.py [--models timm:vit_small_patch16_224,timm:convnext_tiny] [--img-size 224]

Each model is a `vitedge matrix` of ort-int8, et-int8 and litert-int8 (random-init weights: the
timing does not depend on them; calibrated on 64 synthetic images, judged on 50), so the three
are timed side by side, each in its own process, in one run. The table gives p50, the ratio to
ort-int8 and what each report says about placement and XNNPACK's slow kernels.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import RESULTS, heading, publish, run  # noqa: E402

MODELS = ("timm:vit_small_patch16_224", "timm:convnext_tiny")
TARGETS = ("ort-int8", "et-int8", "litert-int8")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args()
    t0 = time.perf_counter()
    lines = heading("XNNPACK INT8 (et-int8, litert-int8) against ort-int8", a.threads)
    lines += ["| model | target | p50 ms | vs ort-int8 | placement / XNNPACK notes |", "|---|---|---|---|---|"]
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
                lines.append(f"| {model} | {t} | {p50:.2f} | {ratio} | {'; '.join(s[:160] for s in said) or '-'} |"
                             if p50 else f"| {model} | {t} | - | - | {c.get('status')}: {str(c.get('error'))[:120]} |")
    publish(lines, a.out, t0)


if __name__ == "__main__":
    main()
