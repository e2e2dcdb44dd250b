"""Verify and benchmark a vitedge Core ML kit on a Mac: coremltools + numpy only, no torch, no vitedge.

    python verify_coreml.py [--compute-units ALL,CPU_ONLY] [--runs 200] [--warmup 20] [--no-throughput]

Loads model.mlpackage, runs every '<set>/input' array in reference.npz through it in batches of
the package's static batch, compares with the PyTorch outputs '<set>/logits' (max abs error and
per-sample cosine against the limits in kit.json), then times one batch per compute unit.
Exit 0: passed; 4: parity failed; 5: Core ML unavailable (not macOS / coremltools missing).

It also measures, on the first compute unit, the device profile vitedge reports for the runtimes
it can run itself (`device_profile` in the JSON, one summary line on stderr): this process's
memory before coremltools is imported (baseline_mb), then per phase the time and the peak above
that baseline: importing coremltools, the cold load (Core ML compiles the package), the first
inference, steady runs (p50/p90/p99) and a warm load (loaded again in the same process). macOS
has no resettable per-phase peak, so there the peaks are the most since the process started
(`memory_peaks`, `memory_method` say so). Then `throughput`: images/s at the package's batch x 1
or 2 parallel streams (threads, one MLModel each); --no-throughput skips it.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from device_profile import Profiler, summary_line, throughput_sweep  # noqa: E402  (shipped beside it)


def _load(ct, units: str):
    return ct.models.MLModel(str(HERE / KIT["package"]), compute_units=getattr(ct.ComputeUnit, units))


def _run(model, x: np.ndarray, batch: int) -> np.ndarray:
    outs = []
    for i in range(0, len(x), batch):
        chunk = x[i : i + batch]
        n = len(chunk)
        if n < batch:  # the package has a static batch: pad, then drop the padding
            chunk = np.concatenate([chunk, np.zeros((batch - n, *chunk.shape[1:]), chunk.dtype)])
        out = model.predict({KIT["input_name"]: np.ascontiguousarray(chunk, np.float32)})[KIT["output_name"]]
        outs.append(np.asarray(out, np.float32).reshape(batch, -1)[:n])
    return np.concatenate(outs)


def _compare(got: np.ndarray, ref: np.ndarray) -> dict:
    g, r = got.astype(np.float64), ref.astype(np.float64)
    cos = (g * r).sum(1) / np.maximum(np.linalg.norm(g, axis=1) * np.linalg.norm(r, axis=1), 1e-12)
    return {"max_abs": float(np.abs(g - r).max()), "cosine_min": float(cos.min()),
            "cosine_mean": float(cos.mean()), "top1_agreement": float((g.argmax(1) == r.argmax(1)).mean()),
            "finite": bool(np.isfinite(got).all())}


def main(argv: list[str] | None = None) -> int:
    prof = Profiler()  # first: the baseline is this process before coremltools is imported
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--compute-units", default=None, help="comma-separated: ALL,CPU_ONLY,CPU_AND_GPU,CPU_AND_NE")
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--no-throughput", action="store_true", help="skip the batch x streams throughput sweep")
    args = p.parse_args(argv)
    try:
        with prof.phase("import_ms", "import_mb"):
            import coremltools as ct
    except ImportError:
        print("coremltools is not installed: pip install coremltools numpy", file=sys.stderr)
        return 5
    if platform.system() != "Darwin":
        print(f"Core ML runs on macOS only (this is {platform.system()}); nothing was run", file=sys.stderr)
        return 5
    units = (args.compute_units or KIT["compute_units"]).split(",")
    ref = np.load(HERE / "reference.npz")
    sets = sorted({k.split("/")[0] for k in ref.files if k.endswith("/input")})
    tol = KIT["tolerance"]
    report: dict = {"package": KIT["package"], "precision": KIT["precision"], "coremltools": ct.__version__,
                    "macos": platform.mac_ver()[0], "machine": platform.machine(), "parity": {}, "latency_ms": {}}
    ok = True
    batch = int(KIT["batch"])
    x = np.ascontiguousarray(ref[f"{sets[0]}/input"][:1].repeat(batch, 0), np.float32)
    feed = {KIT["input_name"]: x}

    # The profile comes first so that its cold load is this process's first (Core ML compiles
    # the package then) and its first inference the model's first.
    with prof.phase("load_cold_ms", "load_peak_mb"):
        model = _load(ct, units[0])
    with prof.phase("first_ms", "first_peak_mb"):
        model.predict(feed)
    prof.steady(lambda: model.predict(feed), batch)
    del model  # gone before the warm load, as an app releasing and loading it again
    with prof.phase("load_warm_ms"):
        profiled = _load(ct, units[0])
    device_profile = prof.result(f"{'x'.join(map(str, x.shape))} float32", compute_units=units[0])

    for unit in units:
        model = profiled if unit == units[0] else _load(ct, unit)
        for s in sets:
            m = _compare(_run(model, ref[f"{s}/input"], batch), ref[f"{s}/logits"])
            passed = m["finite"] and (tol["max_abs"] is None or m["max_abs"] <= tol["max_abs"]) and (
                tol["cosine_min"] is None or m["cosine_min"] >= tol["cosine_min"])
            ok &= passed
            report["parity"][f"{unit}/{s}"] = {**m, "passed": passed}
        for _ in range(args.warmup):
            model.predict(feed)
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            model.predict(feed)
            times.append((time.perf_counter() - start) * 1e3)
        ms = np.array(times)
        report["latency_ms"][unit] = {"batch": batch, "p50": float(np.percentile(ms, 50)),
                                      "p90": float(np.percentile(ms, 90)), "min": float(ms.min()), "runs": args.runs}

    throughput = None
    if not args.no_throughput:
        def open_stream(b: int, i: int) -> tuple[Callable[[], Any], Callable[[], None]]:
            # One MLModel per stream: the sweep then measures what threads of an app that each
            # own a model get, whether or not Core ML serialises predictions on one model.
            m = profiled if i == 0 else _load(ct, units[0])
            return lambda: m.predict(feed), lambda: None

        # The package has a static batch (kit.json), so the sweep is over streams only.
        throughput = throughput_sweep(open_stream, [batch], how=f"one MLModel each ({units[0]})")
        throughput["frame"] = f"{'x'.join(map(str, x.shape[1:]))} float32"
    report["device_profile"] = device_profile
    report["throughput"] = throughput
    print(json.dumps(report, indent=2))
    (HERE / "coreml_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"device profile ({units[0]}): {summary_line(device_profile)}", file=sys.stderr)
    if throughput is not None:
        print(f"throughput: {throughput['images_per_s']} images/s ({throughput['setting']})", file=sys.stderr)
    print("PASSED" if ok else "FAILED: parity outside the kit's tolerance", file=sys.stderr)
    return 0 if ok else 4


KIT = json.loads((HERE / "kit.json").read_text())

if __name__ == "__main__":
    sys.exit(main())
