"""Classification metrics on numpy logits (device side: no torch)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def topk_correct(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """(N,) bool: is the label among the top-k logits."""
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return (top == labels[:, None]).any(axis=1)


@dataclass(frozen=True)
class Accuracy:
    top1: float
    top5: float
    n: int
    confusion: np.ndarray  # (C, C) counts, rows = true class, cols = predicted

    def per_class(self) -> np.ndarray:
        totals = self.confusion.sum(axis=1)
        return np.divide(np.diag(self.confusion), totals, out=np.zeros(len(totals)), where=totals > 0)

    def most_confused(self, classes: tuple[str, ...], n: int = 5) -> list[tuple[str, str, int]]:
        off = self.confusion.copy()
        np.fill_diagonal(off, 0)
        flat = np.argsort(-off, axis=None)[:n]
        pairs = [np.unravel_index(i, off.shape) for i in flat]
        return [(classes[t], classes[p], int(off[t, p])) for t, p in pairs if off[t, p] > 0]


def accuracy(logits: np.ndarray, labels: np.ndarray) -> Accuracy:
    labels = np.asarray(labels, np.int64)
    c = logits.shape[1]
    pred = logits.argmax(axis=1)
    confusion = np.zeros((c, c), np.int64)
    np.add.at(confusion, (labels, pred), 1)
    return Accuracy(
        top1=float((pred == labels).mean()),
        top5=float(topk_correct(logits, labels, 5).mean()),
        n=len(labels),
        confusion=confusion,
    )
