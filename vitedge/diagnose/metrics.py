"""Tensor comparison metrics for localisation (numpy, float64)."""

from __future__ import annotations

import math

import numpy as np


def sqnr_db(reference: np.ndarray, other: np.ndarray) -> float:
    """Signal-to-quantisation-noise ratio in dB (higher is better; inf when identical)."""
    r = reference.astype(np.float64).ravel()
    n = r - other.astype(np.float64).ravel()
    noise = float(np.dot(n, n))
    signal = float(np.dot(r, r))
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def cosine(reference: np.ndarray, other: np.ndarray) -> float:
    r = reference.astype(np.float64).ravel()
    o = other.astype(np.float64).ravel()
    d = float(np.linalg.norm(r) * np.linalg.norm(o))
    return float(np.dot(r, o) / d) if d > 0 else 1.0


def rel_err(reference: np.ndarray, other: np.ndarray) -> float:
    r = reference.astype(np.float64)
    return float(np.linalg.norm(r - other.astype(np.float64)) / max(np.linalg.norm(r), 1e-12))
