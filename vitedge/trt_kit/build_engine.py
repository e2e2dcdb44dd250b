#!/usr/bin/env python3
"""Build the TensorRT engine for this kit, on the device that will run it.

    python build_engine.py                      # settings from kit.json
    python build_engine.py --max-batch 16 --opt-batch 4 --workspace-mb 4096

Needs `tensorrt` (10.12+ or 11.x) and `numpy`; `cuda-python` only for the GPU name in the report.
Writes model.engine, model.json (build facts) and timing.cache (reused by the next build).
The equivalent trtexec command is in trtexec.sh.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from engine import BuildConfig, ParserFailure, TensorRTUnavailable, build_engine  # noqa: E402


def main() -> int:
    kit = json.loads((HERE / "kit.json").read_text())
    cfg = BuildConfig(**{**kit["build"], "input_shape": tuple(kit["build"]["input_shape"])})
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx", default=kit["onnx"], help="TensorRT-ready ONNX (default: %(default)s)")
    p.add_argument("--engine", default="model.engine")
    p.add_argument("--min-batch", type=int, default=cfg.min_batch)
    p.add_argument("--opt-batch", type=int, default=cfg.opt_batch)
    p.add_argument("--max-batch", type=int, default=cfg.max_batch)
    p.add_argument("--workspace-mb", type=int, default=cfg.workspace_mb)
    p.add_argument("--optimization-level", type=int, default=cfg.optimization_level)
    p.add_argument("--timing-cache", default=cfg.timing_cache)
    p.add_argument("--version-compatible", action="store_true", default=cfg.version_compatible)
    p.add_argument("--hardware-compatible", action="store_true", default=cfg.hardware_compatible)
    a = p.parse_args()
    cfg = replace(cfg, min_batch=a.min_batch, opt_batch=a.opt_batch, max_batch=a.max_batch,
                  workspace_mb=a.workspace_mb, optimization_level=a.optimization_level,
                  timing_cache=a.timing_cache, version_compatible=a.version_compatible,
                  hardware_compatible=a.hardware_compatible)
    try:
        facts = build_engine(HERE / a.onnx, HERE / a.engine, cfg)
    except TensorRTUnavailable as e:
        print(f"build_engine: {e}", file=sys.stderr)
        return 5
    except ParserFailure as e:
        print(f"build_engine: {e}", file=sys.stderr)
        return 7
    except ValueError as e:
        print(f"build_engine: {e}", file=sys.stderr)
        return 2
    print(json.dumps(facts, indent=2))
    print(f"engine written to {HERE / a.engine}; next: python verify_engine.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
