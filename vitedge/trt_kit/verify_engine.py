#!/usr/bin/env python3
"""Verify a built engine against the PyTorch reference outputs shipped in this kit, then time it.

    python verify_engine.py [--engine model.engine] [--batch 1] [--runs 200]

Runs the kit's fixed inputs (reference.npz) through the engine, compares the logits with the
reference (max abs error, cosine, top-1 agreement) against the tolerances in kit.json, and
reports host latency and GPU compute time (CUDA events) percentiles. Exit 0 when parity holds,
4 when it does not, 5 when TensorRT / a GPU is missing. Needs tensorrt, numpy, cuda-python.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from engine import TensorRTUnavailable, TrtEngine, benchmark  # noqa: E402


def compare(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    r, g = ref.astype(np.float64), got.astype(np.float64)
    cos = (r * g).sum(1) / np.maximum(np.linalg.norm(r, axis=1) * np.linalg.norm(g, axis=1), 1e-300)
    return {"max_abs": float(np.abs(r - g).max()), "cosine_min": float(cos.min()),
            "top1_agreement": float((r.argmax(1) == g.argmax(1)).mean()),
            "finite": bool(np.isfinite(g).all())}


def main() -> int:
    kit = json.loads((HERE / "kit.json").read_text())
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", default="model.engine")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--runs", type=int, default=200)
    a = p.parse_args()
    try:
        engine = TrtEngine(HERE / a.engine)
    except TensorRTUnavailable as e:
        print(f"verify_engine: {e}", file=sys.stderr)
        return 5
    except FileNotFoundError:
        print(f"verify_engine: {HERE / a.engine} not found; run build_engine.py first", file=sys.stderr)
        return 3
    ref = np.load(HERE / "reference.npz")
    tol = kit["tolerance"]
    failures, results = [], {}
    for set_name in sorted({k.split("/")[0] for k in ref.files}):
        x = ref[f"{set_name}/input"]
        outputs, _ = engine.infer({kit["input_name"]: x})
        stats = compare(ref[f"{set_name}/{kit['output_name']}"], outputs[kit["output_name"]])
        results[set_name] = stats
        if not stats["finite"]:
            failures.append(f"{set_name}: NaN/Inf in the engine's outputs")
        if tol.get("max_abs") is not None and stats["max_abs"] > tol["max_abs"]:
            failures.append(f"{set_name}: max_abs {stats['max_abs']:.4g} > {tol['max_abs']}")
        if tol.get("cosine_min") is not None and stats["cosine_min"] < tol["cosine_min"]:
            failures.append(f"{set_name}: cosine_min {stats['cosine_min']:.6f} < {tol['cosine_min']}")
        if tol.get("top1_agreement") is not None and stats["top1_agreement"] < tol["top1_agreement"]:
            failures.append(f"{set_name}: top1_agreement {stats['top1_agreement']:.3f} < {tol['top1_agreement']}")
    shape = [a.batch] + list(kit["build"]["input_shape"])
    timing = benchmark(engine, {kit["input_name"]: np.random.default_rng(0).standard_normal(shape).astype(np.float32)},
                       runs=a.runs)
    engine.close()
    print(json.dumps({"parity": results, "tolerance": tol, "latency_ms": timing, "batch": a.batch,
                      "passed": not failures}, indent=2))
    for f in failures:
        print(f"verify_engine: parity failed: {f}", file=sys.stderr)
    return 4 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
