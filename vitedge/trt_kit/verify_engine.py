#!/usr/bin/env python3
"""Verify a built engine against the PyTorch reference outputs shipped in this kit, then time it.

    python verify_engine.py [--engine model.engine] [--batch 1] [--runs 200] [--no-throughput]

Runs the kit's fixed inputs (reference.npz) through the engine, compares the logits with the
reference (max abs error, cosine, top-1 agreement) against the tolerances in kit.json, and
reports host latency and GPU compute time (CUDA events) percentiles. Exit 0 when parity holds,
4 when it does not, 5 when TensorRT / a GPU is missing. Needs tensorrt, numpy, cuda-python.

It also measures the device profile vitedge reports for the runtimes it can run itself
(`device_profile` in the JSON, one summary line on stderr): this process's memory before
TensorRT is imported (baseline_mb), then per phase the time and the peak above that baseline:
importing tensorrt + cuda-python, the cold load (CUDA start-up + deserialising the engine), the
first inference, steady runs (p50/p90/p99) and a warm load (closed and loaded again); plus the
GPU memory the load took. Then `throughput`: images/s over batch {1, 4, 8} (those the engine's
optimisation profile allows) x 1 or 2 parallel streams, each stream its own execution context
and CUDA stream; --no-throughput skips it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from device_profile import MB, SWEEP_BATCHES, Profiler, summary_line, throughput_sweep  # noqa: E402  (shipped beside it)

# engine.py imports tensorrt only inside its functions: the baseline is taken without it.
from engine import (  # noqa: E402
    TensorRTUnavailable,
    TrtEngine,
    benchmark,
    gpu_available,
    import_cudart,
    require_tensorrt,
)


def compare(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    r, g = ref.astype(np.float64), got.astype(np.float64)
    cos = (r * g).sum(1) / np.maximum(np.linalg.norm(r, axis=1) * np.linalg.norm(g, axis=1), 1e-300)
    return {"max_abs": float(np.abs(r - g).max()), "cosine_min": float(cos.min()),
            "top1_agreement": float((r.argmax(1) == g.argmax(1)).mean()),
            "finite": bool(np.isfinite(g).all())}


def _device_free_mb(cudart: Any) -> tuple[float, float] | None:
    """(free, total) device memory in MB: device-wide, so other processes' use shows too."""
    try:
        err, free, total = cudart.cudaMemGetInfo()
        return (free / MB, total / MB) if err == cudart.cudaError_t.cudaSuccess else None
    except Exception:  # a cosmetic field: never fail the verification over it
        return None


def _batches(engine: TrtEngine, name: str) -> list[int]:
    """The sweep's batches the engine's optimisation profile allows (its own batch if none does)."""
    prof = next((t.profile for t in engine.io if t.name == name and t.profile), None)
    if not prof:
        return [1]
    lo, hi = prof[0][0], prof[2][0]
    return [b for b in SWEEP_BATCHES if lo <= b <= hi] or [lo]


def main() -> int:
    prof = Profiler()  # first: the baseline is this process before TensorRT is imported
    kit = json.loads((HERE / "kit.json").read_text())
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", default="model.engine")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--no-throughput", action="store_true", help="skip the batch x streams throughput sweep")
    a = p.parse_args()
    name = kit["input_name"]
    shape = [a.batch] + list(kit["build"]["input_shape"])
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    gpu: dict[str, Any] = {"method": "cudaMemGetInfo before/after (device-wide: other processes count too)"}
    try:
        with prof.phase("import_ms", "import_mb"):
            require_tensorrt()
            cudart = import_cudart()
        with prof.phase("load_cold_ms", "load_peak_mb"):
            why = gpu_available()
            if why:
                raise TensorRTUnavailable(why)
            before = _device_free_mb(cudart)  # after CUDA's own start-up: the delta is the engine's
            engine = TrtEngine(HERE / a.engine)
            after = _device_free_mb(cudart)
    except TensorRTUnavailable as e:
        print(f"verify_engine: {e}", file=sys.stderr)
        return 5
    except FileNotFoundError:
        print(f"verify_engine: {HERE / a.engine} not found; run build_engine.py first", file=sys.stderr)
        return 3
    with prof.phase("first_ms", "first_peak_mb"):
        engine.infer({name: x})
    first = _device_free_mb(cudart)
    prof.steady(lambda: engine.infer({name: x}), a.batch)
    engine.close()
    del engine  # gone before the warm load, as an app closing and reopening it
    with prof.phase("load_warm_ms"):
        engine = TrtEngine(HERE / a.engine)
    if before and after:
        gpu.update(load_mb=round(before[0] - after[0], 1), total_mb=round(before[1], 1))
    if after and first:
        gpu["first_inference_mb"] = round(after[0] - first[0], 1)  # I/O buffers, lazily allocated
    activation = getattr(engine.engine, "device_memory_size_v2", None)
    gpu["context_activation_mb"] = None if activation is None else round(activation / MB, 1)
    device_profile = prof.result(f"{'x'.join(map(str, shape))} float32", gpu_memory=gpu)

    ref = np.load(HERE / "reference.npz")
    tol = kit["tolerance"]
    failures, results = [], {}
    for set_name in sorted({k.split("/")[0] for k in ref.files}):
        outputs, _ = engine.infer({name: ref[f"{set_name}/input"]})
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
    timing = benchmark(engine, {name: x}, runs=a.runs)

    throughput = None
    if not a.no_throughput:
        base = engine

        def open_stream(batch: int, i: int) -> tuple[Callable[[], Any], Callable[[], None]]:
            # Stream 0 is the loaded engine's own context; each further stream a fork of it.
            ctx = base if i == 0 else base.fork()
            feed = {name: np.random.default_rng(i).standard_normal([batch, *shape[1:]]).astype(np.float32)}

            def close() -> None:
                if ctx is not base:  # the loaded engine itself stays open for the next point
                    ctx.close()

            return lambda: ctx.infer(feed), close

        throughput = throughput_sweep(open_stream, _batches(engine, name),
                                      how="one execution context + CUDA stream each, sharing one engine")
        throughput["frame"] = f"{'x'.join(map(str, shape[1:]))} float32"
    engine.close()
    print(json.dumps({"parity": results, "tolerance": tol, "latency_ms": timing, "batch": a.batch,
                      "passed": not failures, "device_profile": device_profile, "throughput": throughput},
                     indent=2))
    print(f"verify_engine: device profile: {summary_line(device_profile)}", file=sys.stderr)
    if throughput is not None:
        print(f"verify_engine: throughput: {throughput['images_per_s']} images/s ({throughput['setting']})",
              file=sys.stderr)
    for f in failures:
        print(f"verify_engine: parity failed: {f}", file=sys.stderr)
    return 4 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
