#!/usr/bin/env python3
"""A minimal app that embeds a vitedge bundle: classify every image in a folder.

    python examples/classify_folder.py BUNDLE_DIR IMAGES_DIR [--top-k 3] [--threads 2] [--json]

Needs only vitedge's device side (numpy, Pillow) and the bundle's runtime (onnxruntime,
openvino, ...): no PyTorch. The bundle brings its own preprocessing and class names, so the app
does not repeat them. Unreadable images are reported and skipped, not fatal.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import vitedge
from vitedge.calib.images import IMAGE_SUFFIXES
from vitedge.errors import VitedgeError


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", type=Path)
    p.add_argument("images", type=Path)
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", action="store_true", help="one JSON object per image on stdout")
    args = p.parse_args()
    try:
        model = vitedge.load(str(args.bundle), threads=args.threads)
    except VitedgeError as e:
        print(f"classify_folder: {e}", file=sys.stderr)
        return e.exit_code
    files = sorted(f for f in args.images.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        print(f"classify_folder: no images in {args.images}", file=sys.stderr)
        return 3
    counts: dict[str, int] = {}
    t0 = time.perf_counter()
    skipped = 0
    with model:
        for f in files:
            try:
                pred = model.predict(f, top_k=args.top_k)
            except VitedgeError as e:
                print(f"skipped {f}: {e}", file=sys.stderr)
                skipped += 1
                continue
            counts[pred.label] = counts.get(pred.label, 0) + 1
            if args.json:
                print(json.dumps({"file": str(f), "labels": pred.labels, "probs": [round(x, 5) for x in pred.probs]}))
            else:
                top = ", ".join(f"{label} {prob:.1%}" for label, prob in zip(pred.labels, pred.probs, strict=True))
                print(f"{f.relative_to(args.images)}: {top}")
    dt = time.perf_counter() - t0
    done = len(files) - skipped
    print(f"{done} images in {dt:.2f} s ({done / dt:.1f}/s), {skipped} skipped; predicted: "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
