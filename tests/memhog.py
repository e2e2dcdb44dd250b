"""A contestant whose memory is known: the instrument check of vitedge.bench.profile. It is not
a fake runtime standing in for one; it is the calibration weight for the memory measure (a
process that holds exactly LOAD_MB after opening, and briefly FIRST_MB more on its first call)."""

from __future__ import annotations

import numpy as np

from vitedge.runtimes.base import TensorSpec

MB = 1024 * 1024
LOAD_MB, FIRST_MB = 200, 100


def _touch(mb: int) -> np.ndarray:
    return np.ones(mb * MB // 8)  # np.ones writes every page: resident, not just reserved


class Hog:
    def __init__(self, path, threads):  # type: ignore[no-untyped-def]
        self.block = None
        self.calls = 0

    def activate(self):  # type: ignore[no-untyped-def]
        self.block = _touch(LOAD_MB)
        return self

    def deactivate(self) -> None:
        self.block = None

    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec("input", "float32", (1, 3, 8, 8))]

    def infer(self, feed):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.calls == 1:
            transient = _touch(FIRST_MB)  # freed on return: only the first call's peak holds it
            del transient
        return {"logits": np.zeros((1, 10), np.float32)}


def open_hog(path, threads):  # type: ignore[no-untyped-def]
    return Hog(path, threads)
