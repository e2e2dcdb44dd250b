"""`vitedge.load(BUNDLE).predict(images)`: an exported model in an app, without PyTorch.

The bundle's manifest picks the runner (ONNX Runtime, OpenVINO, TensorRT, torchao) and carries
the preprocessing, so `predict` applies exactly what training and evaluation applied
(`vitedge.calib.preprocess`: resize + centre crop + normalise, the same functions). Inputs may be
uint8 HWC arrays (one image or an NHWC batch), PIL images, file paths, or lists of those.

Thread safety: each runtime declares whether one activated runner serves concurrent calls
(`RuntimeSpec.thread_safe`: ONNX Runtime sessions are shared, OpenVINO gets one infer request per
thread); the others (TensorRT's execution context) are serialised with a lock. 8 threads
predicting at once get the same results as one.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vitedge.bundle.manifest import Manifest, read_manifest
from vitedge.calib.images import load_image
from vitedge.calib.preprocess import PreprocessSpec, normalize, resize_and_crop
from vitedge.card import ModelCard
from vitedge.errors import InputError, ParityError
from vitedge.runtimes.base import Runner
from vitedge.runtimes.open import open_runner, run_batched, run_pixels
from vitedge.runtimes.registry import get_runtime

MAX_BATCH = 64  # images per runtime call for models with a dynamic batch


@dataclass(frozen=True)
class Prediction:
    labels: list[str]  # top-k class names, best first
    probs: list[float]  # their softmax probabilities
    indices: list[int]  # their class indices
    logits: np.ndarray | None = None  # (num_classes,) raw logits, when asked for

    @property
    def label(self) -> str:
        return self.labels[0]

    @property
    def prob(self) -> float:
        return self.probs[0]


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class Predictor:
    """A loaded bundle. Use `vitedge.load(path)`; close with `close()` or a `with` block."""

    def __init__(self, manifest: Manifest, runner: Runner):
        self.manifest = manifest
        self.card: ModelCard = manifest.card
        self.spec: PreprocessSpec = self.card.preprocess
        self.classes: tuple[str, ...] = self.card.classes
        self.pixels = manifest.pixels  # the artifact preprocesses inside (None: predict does)
        self._runner = runner
        self._ran = False  # the first inference runs quietly (see _run)
        self._lock = None if get_runtime(manifest.runtime).thread_safe else threading.Lock()

    @classmethod
    def open(cls, bundle: str | Path, threads: int | None = None, verify_checksums: bool = True,
             allow_failed: bool = False) -> Predictor:
        manifest = read_manifest(bundle)
        if verify_checksums:
            problems = manifest.checksum_problems()
            if problems:
                raise InputError(f"{manifest.bundle}: bundle files changed since export ({'; '.join(problems[:3])}); "
                                 "re-export or re-copy the bundle")
        if not manifest.data.get("parity", {}).get("passed", False) and not allow_failed:
            raise ParityError(f"{manifest.bundle}: this artifact failed its parity gate at export "
                              "(see report.md); pass allow_failed=True to load it anyway")
        if manifest.data.get("parity", {}).get("verdict") == "not judged":
            import warnings

            from vitedge.quiet import VitedgeWarning

            warnings.warn(f"{manifest.bundle}: this artifact was not judged at export (no images of its model's "
                          "own were given); re-export with --calib DIR or --eval DIR to check it", VitedgeWarning,
                          stacklevel=3)
        from vitedge.quiet import native_stderr, quiet

        # An app's stderr is its own: runtimes' import warnings and native banners (ExecuTorch's
        # cpuinfo probing, XNNPACK, oneDNN) stay inside unless VITEDGE_VERBOSE is set.
        with quiet(), native_stderr():
            runner = open_runner(manifest, threads)
            runner.activate()
        return cls(manifest, runner)

    # -- inputs ----------------------------------------------------------------------------------
    def preprocess(self, images: Any) -> np.ndarray:
        """Anything `predict` accepts -> (N, 3, H, W) float32, exactly as the model expects."""
        items = self._as_list(images)
        if not items:
            raise InputError("predict() got an empty batch; pass at least one image")
        out = np.empty((len(items), 3, *self.spec.input_size), np.float32)
        for i, item in enumerate(items):
            out[i] = normalize(self._pixels(item), self.spec)
        return out

    def _as_list(self, images: Any) -> list[Any]:
        if isinstance(images, np.ndarray):
            if images.ndim == 4:
                return list(images)
            return [images]
        if isinstance(images, (str, Path)) or hasattr(images, "convert"):
            return [images]
        if isinstance(images, Sequence):
            return list(images)
        raise InputError(f"predict() takes uint8 HWC arrays, PIL images or file paths, not {type(images).__name__}")

    def _pixels(self, item: Any) -> np.ndarray:
        """One image -> (H, W, 3) uint8 at the model's input size."""
        from PIL import Image

        return resize_and_crop(Image.fromarray(self._decoded(item), "RGB"), self.spec)

    def _decoded(self, item: Any) -> np.ndarray:
        """One image -> (h, w, 3) uint8 RGB at its own size."""
        if isinstance(item, (str, Path)):
            return np.asarray(load_image(item), np.uint8)
        if hasattr(item, "convert"):  # PIL image
            from vitedge.calib.images import to_rgb

            return np.asarray(to_rgb(item), np.uint8)
        if isinstance(item, np.ndarray):
            if item.dtype != np.uint8:
                raise InputError(f"image arrays must be uint8 (0-255) HWC, got dtype {item.dtype}; "
                                 "convert with (x * 255).round().astype(np.uint8) if it is 0-1 float")
            if item.ndim == 2:
                item = np.repeat(item[..., None], 3, axis=2)
            if item.ndim != 3 or item.shape[2] not in (1, 3, 4):
                raise InputError(f"image array has shape {item.shape}; expected HWC with 1, 3 or 4 channels "
                                 "(channels last, RGB)")
            if item.shape[2] == 1:
                item = np.repeat(item, 3, axis=2)
            if item.shape[2] == 4:
                item = item[..., :3]  # drop alpha, like the file loader
            if item.shape[0] < 1 or item.shape[1] < 1:
                raise InputError(f"image array of shape {item.shape} is empty")
            return np.ascontiguousarray(item)
        raise InputError(f"unsupported image type {type(item).__name__}")

    def feed(self, images: Any) -> list[np.ndarray] | np.ndarray:
        """What the artifact runs: (N, 3, H, W) float32 model input, or for a bundle that
        preprocesses inside (manifest `input.embedded_preprocessing`) uint8 RGB pixels: each
        image at its own size, or resized and cropped to the model's size where the artifact
        takes a fixed size (the app's job there, done here with the same Python preprocessing)."""
        if self.pixels is None:
            return self.preprocess(images)
        items = self._as_list(images)
        if not items:
            raise InputError("predict() got an empty batch; pass at least one image")
        if self.pixels.get("size") == "any":
            return [self._decoded(item) for item in items]
        return [self._pixels(item) for item in items]

    # -- inference -------------------------------------------------------------------------------
    def logits(self, images: Any) -> np.ndarray:
        """(N, num_classes) raw logits for `images`."""
        x = self.feed(images)
        if self._lock is not None:
            with self._lock:
                out = self._run(x)
        else:
            out = self._run(x)
        return next(iter(out.values()))

    def _run(self, x: np.ndarray | list[np.ndarray]) -> dict[str, np.ndarray]:
        run = run_pixels if isinstance(x, list) else run_batched
        if self._ran:
            return run(self._runner, x, MAX_BATCH)  # type: ignore[arg-type]
        from vitedge.quiet import native_stderr, quiet

        with quiet(), native_stderr():  # runtimes print on their first inference too (XNNPACK set-up)
            out = run(self._runner, x, MAX_BATCH)  # type: ignore[arg-type]
        self._ran = True
        return out

    def predict(self, images: Any, top_k: int = 5, return_logits: bool = False) -> Prediction | list[Prediction]:
        """Top-k classes and probabilities; one Prediction for one image, a list for a batch."""
        single = not isinstance(images, (list, tuple)) and not (isinstance(images, np.ndarray) and images.ndim == 4)
        if top_k < 1:
            raise InputError("top_k must be >= 1")
        z = self.logits(images)
        p = _softmax(z)
        k = min(top_k, z.shape[1])
        results = []
        for row_z, row_p in zip(z, p, strict=True):
            idx = np.argsort(-row_p, kind="stable")[:k]
            results.append(Prediction([self.classes[i] for i in idx], [float(row_p[i]) for i in idx],
                                      [int(i) for i in idx], row_z.copy() if return_logits else None))
        return results[0] if single else results

    def close(self) -> None:
        self._runner.deactivate()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Predictor({self.manifest.bundle}, target={self.manifest.target}, runtime={self.manifest.runtime}, "
                f"{len(self.classes)} classes, input {self.spec.input_size})")
