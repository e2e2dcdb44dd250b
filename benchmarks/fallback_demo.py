"""The accuracy-aware fallback on a model that needs it: plain INT8 vs accuracy-aware, per target.

    python benchmarks/fallback_demo.py [--max-drop 0.3] [--out fallback.md]

Builds `vit-outliers`: the built-in vit-tiny with function-preserving activation outliers in four
layers (vitedge.models.outliers; fp32 accuracy unchanged), then exports it to ort-int8, ov-int8
(vitedge's search, and NNCF's quantize_with_accuracy_control) and trt-int8 with and without
`--max-drop`, and prints accuracy on the held-out test split, layers kept in high precision,
and the latency cost. Also runs `vitedge diagnose` on the plain ort-int8 bundle.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

from vitedge.calib.source import load_calibration
from vitedge.diagnose.run import diagnose_bundle
from vitedge.fallback import Budget
from vitedge.models.checkpoint import save_checkpoint
from vitedge.models.outliers import inject_outliers
from vitedge.models.resolve import LoadedModel, load_model
from vitedge.pipeline import BenchConfig, ExportRequest, export_target

OUTLIERS = [("mlp", 1, [5, 77, 150], 500.0), ("mlp", 3, [12, 99], 500.0),
            ("qk", 2, [3, 40], 300.0), ("qk", 4, [7, 100], 300.0)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-drop", type=float, default=0.3)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    base = load_model("vit-tiny")
    module = copy.deepcopy(base.module)
    inject_outliers(module, OUTLIERS)
    tmp = Path(tempfile.mkdtemp(prefix="vitedge-fallback-demo-"))
    ckpt = tmp / "vit-outliers.safetensors"
    save_checkpoint(ckpt, module, base.card.with_(source=str(ckpt)))
    loaded = LoadedModel(module.eval(), base.card.with_(source=str(ckpt)))
    calib = load_calibration("synthetic", base.card.preprocess, 300)
    runs = [("ort-int8", {}), ("ov-int8", {}), ("ov-int8", {"ov-accuracy-control": True}), ("trt-int8", {})]
    lines = [f"Budget: accuracy drop <= {args.max_drop} pts (searched on shapes10 val, reported on the test split).", "",
             "| target | mode | accuracy (torch 97.80%) | delta pts | layers kept high / total | kept | latency cost | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    for target, opts in runs:
        for aware in (False, True):
            if opts and not aware:
                continue
            t0 = time.perf_counter()
            req = ExportRequest(target=target, out=tmp / f"{target}-{aware}-{bool(opts)}", calibration=calib,
                                threads=2, bench=BenchConfig(budget_s=1.0), options=dict(opts),
                                budget=Budget(max_drop=args.max_drop) if aware else None,
                                tolerance={"max_accuracy_drop": args.max_drop})
            r = export_target(loaded, req)
            d = r.to_dict()
            fb = d.get("fallback") or {}
            kept = fb.get("kept_high_precision", [])
            kept_names = [k["label"] if isinstance(k, dict) else k for k in kept]
            mode = "plain" if not aware else ("NNCF accuracy control" if opts else "vitedge fallback")
            cost = fb.get("latency_ms", {}).get("cost_ratio")
            total = fb.get("total_layers", "-")
            lines.append(f"| {target} | {mode} | {d['accuracy']['artifact']:.2%} | {d['accuracy']['delta_pts']:+.2f} | "
                         f"{len(kept) if aware else 0} / {total} | {', '.join(kept_names) or '-'} | "
                         f"{f'{cost:.2f}x' if cost else '-'} | {time.perf_counter() - t0:.0f} |")
            print(lines[-1], file=sys.stderr)
    diag = diagnose_bundle(tmp / "ort-int8-False-False", str(ckpt), 16)
    lines += ["", f"`vitedge diagnose` on plain ort-int8: first jump at {diag.first_jump().label if diag.first_jump() else '-'}; "
              "top 4: " + ", ".join(r.label for r in diag.ranking()[:4])]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
