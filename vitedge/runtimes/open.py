"""The one way to open and run an artifact: `open_runner` and `run_batched`.

`open_runner` takes a bundle (directory or its Manifest), or a bare model file, and returns the
runner its runtime declares (vitedge.runtimes.registry), not yet activated. `run_batched` feeds
(N, ...) inputs through a runner in chunks that fit its input spec: a model exported with a
static batch B gets chunks of exactly B, the last one zero-padded and the padding dropped from
the outputs; a dynamic one gets chunks of at most `batch`. Export, verify, the predictor, the
fallback and the matrix all run artifacts through these two. numpy only (device side).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vitedge.errors import InputError
from vitedge.runtimes.base import Runner, default_threads
from vitedge.runtimes.registry import get_runtime, runtime_for_file


def runner_for(runtime: str, path: Path, threads: int | None = None, options: dict[str, Any] | None = None) -> Runner:
    spec = get_runtime(runtime)
    if not spec.available():
        raise spec.missing_error()
    runner: Runner = spec.runner_class()(path, threads=threads, **(options or {}))
    return runner


def capped_threads(threads: int | None, max_threads: int | None) -> int | None:
    """`threads` (None: every core) is the most a runner may use; a bundle whose artifact measured
    faster on fewer (`Manifest.max_threads`) gets that many."""
    if max_threads is None:
        return threads
    return min(threads or default_threads(), max_threads)


def open_runner(source: Any, threads: int | None = None) -> Runner:
    """A runner for a bundle directory, a `Manifest`, or a bare model file (by its suffix)."""
    from vitedge.bundle.manifest import MANIFEST, Manifest, read_manifest

    if isinstance(source, Manifest):
        return runner_for(source.runtime, source.main_file, capped_threads(threads, source.max_threads),
                          source.runner_options)
    path = Path(source)
    if path.is_dir() and (path / MANIFEST).is_file():
        return open_runner(read_manifest(path), threads)
    if not path.exists():
        raise InputError(f"{path}: no such bundle or model file")
    return runner_for(runtime_for_file(path).name, path, threads)


def static_batch(runner: Runner) -> int | None:
    """The fixed batch size the runner's first input requires, or None if it is dynamic."""
    first = runner.inputs()[0].shape[0] if runner.inputs()[0].shape else None
    return first if isinstance(first, int) else None


def run_batched(runner: Runner, x: np.ndarray, batch: int = 32) -> dict[str, np.ndarray]:
    """Run (N, ...) inputs through an active `runner`; returns {output: (N, ...)}."""
    if len(x) == 0:
        raise InputError("no inputs to run")
    name = runner.inputs()[0].name
    fixed = static_batch(runner)
    step = fixed or min(batch, runner.max_batch() or batch)
    parts: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(x), step):
        chunk = x[i : i + step]
        n = len(chunk)
        if fixed and n < fixed:
            chunk = np.concatenate([chunk, np.zeros((fixed - n, *chunk.shape[1:]), chunk.dtype)])
        for k, v in runner.infer({name: np.ascontiguousarray(chunk)}).items():
            parts.setdefault(k, []).append(v[:n])
    return {k: np.concatenate(v) for k, v in parts.items()}


# -- artifacts that take pixels (--embed-preprocessing) ----------------------------------------

CAMERA_HW = (480, 640)  # the frame a pixel artifact of any input size is timed on (VGA camera)


def takes_pixels(runner: Runner) -> bool:
    """Whether the artifact preprocesses inside: its input is uint8 NHWC pixels."""
    return runner.inputs()[0].dtype == "uint8"


def timing_feed(runner: Runner, x: np.ndarray) -> np.ndarray:
    """What a runner is timed on, given the model-input batch `x` (B, 3, H, W): `x` itself, or for
    a pixel artifact seeded uint8 pixels of the same batch at its fixed size, or a VGA frame when
    it takes any size (so its time includes the resize a camera frame needs)."""
    return pixel_frames(runner, len(x)) if takes_pixels(runner) else x


def pixel_frames(runner: Runner, batch: int) -> np.ndarray:
    """Seeded uint8 frames for a pixel artifact: its fixed size, or CAMERA_HW when any size goes."""
    _, h, w, _ = runner.inputs()[0].shape
    size = (h, w) if isinstance(h, int) and isinstance(w, int) else CAMERA_HW
    return np.random.default_rng(123).integers(0, 256, (batch, *size, 3), dtype=np.uint8)


def run_pixels(runner: Runner, images: list[np.ndarray], batch: int = 32) -> dict[str, np.ndarray]:
    """Run uint8 HWC images (any sizes) through an active pixel artifact: runs of equal size go
    together (in chunks of `batch`), outputs in the images' order."""
    if not images:
        raise InputError("no inputs to run")
    parts: dict[str, list[np.ndarray]] = {}
    i = 0
    while i < len(images):
        j = i + 1
        while j < len(images) and j - i < batch and images[j].shape == images[i].shape:
            j += 1
        for k, v in run_batched(runner, np.stack(images[i:j]), batch).items():
            parts.setdefault(k, []).append(v)
        i = j
    return {k: np.concatenate(v) for k, v in parts.items()}


def seeded_input(runner: Runner, batch: int) -> np.ndarray:
    """A seeded input of the runner's own spec for timing and profiling: pixel frames for a pixel
    artifact (pixel_frames), else standard-normal values with dynamic dimensions 1."""
    if takes_pixels(runner):
        return pixel_frames(runner, batch)
    spec = runner.inputs()[0]
    shape = [batch] + [d if isinstance(d, int) else 1 for d in spec.shape[1:]]
    return np.random.default_rng(0).standard_normal(shape).astype(spec.dtype)
