"""What one export is asked to do (no torch here: the CLI builds these before loading anything)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitedge.bench.latency import MIN_RUNS, WARMUP
from vitedge.export.config import ExportConfig
from vitedge.inputs import EvalSpec, calibration_held_out, judging_data


@dataclass(frozen=True)
class BenchConfig:
    batch: int = 1
    warmup: int = WARMUP
    min_runs: int = MIN_RUNS
    budget_s: float = 3.0  # a `vitedge export`'s default --bench-budget (the helpers' own is BUDGET_S)
    # Time artifact and reference each in its own process, one working at a time
    # (vitedge.bench.isolated): in one process torch's OpenMP workers spin into the other
    # runtime's blocks (measured up to 1.14x on vit-tiny). `vitedge export` turns it on; callers
    # that re-time everything side by side afterwards (matrix, auto) keep the cheaper
    # in-process timing, which spawns nothing.
    isolated: bool = False

    @classmethod
    def for_export(cls, budget_s: float, timing: str, auto: bool = False) -> BenchConfig:
        """`vitedge export --bench-budget S --timing isolated|interleaved` (TIMINGS). auto-* keeps
        the in-process timing whatever --timing says: it re-times its candidates side by side."""
        if timing not in TIMINGS:
            from vitedge.errors import UsageError

            raise UsageError(f"--timing {timing!r}: must be one of {', '.join(TIMINGS)}")
        return cls(budget_s=budget_s, isolated=timing == "isolated" and not auto)


# `vitedge export --timing`: "isolated" (the default) spawns a process for the artifact and one for
# the reference and gives the device profile (memory, load cold/warm, first inference) besides;
# "interleaved" times both inside the export's own process: no interpreter and runtime start-ups
# (a convnext-zepto onnx-fp32 export on one pinned core: 7.7 s isolated, 4.9 s interleaved,
# 2026-12-05; et-fp32 28.8 s vs 22.5 s, its processes import torch), for runs that only want parity
# and a rough latency (CI, scripted sweeps). The report says which one measured.
TIMINGS = ("isolated", "interleaved")


@dataclass(frozen=True)
class ExportRequest:
    target: str
    out: Path
    force: bool = False
    export: ExportConfig = ExportConfig()
    # --eval: an image source (vitedge.calib.imagesource); None: the held-out part of --calib, or
    # the model's own data set when it has one (vitedge.inputs.judging_data)
    eval_data: str | None = None
    eval_n: int | None = None  # images for parity/accuracy (default: the whole test split)
    random_n: int = 16  # seeded random inputs in the model's value range
    seed: int = 0
    threads: int | None = None
    tolerance: dict[str, float | None] = field(default_factory=dict)
    bench: BenchConfig = BenchConfig()
    calibration: Any = None  # a CalibrationSet for targets that need one
    # The target's options instance (vitedge.plan.plan_export), or {key: value} by key
    # ("ort-calib-method") or field name, of which each target takes the ones it declares.
    options: Any = field(default_factory=dict)
    parity_batch: int = 32
    budget: Any = None  # vitedge.fallback.Budget: accuracy-aware fallback for INT8/FP16 targets
    fallback_n: int = 1000  # search-set images (shapes10 val, an IDX val part, or half of a folder's rest)
    # The artifact takes uint8 RGB pixels and preprocesses inside (Target.embed, vitedge.export.pixels)
    embed_preprocessing: bool = False
    # auto-*'s device budgets: a candidate whose peak memory (MB above the process baseline) or
    # cold load time exceeds them is not chosen (vitedge.bench.profile, measured in its process)
    max_memory_mb: float | None = None
    max_load_ms: float | None = None

    def judging(self, card: Any) -> tuple[str | None, str]:
        """(image source, origin) of the images that judge this export (vitedge.inputs)."""
        return judging_data(card, self.eval_data, self.calibration)

    def eval_spec(self, card: Any, exclude: frozenset[str] = frozenset()) -> EvalSpec:
        data, origin = self.judging(card)
        return EvalSpec(data, self.eval_n, self.seed, self.random_n,
                        calibration_held_out(self.calibration) | exclude, origin)
