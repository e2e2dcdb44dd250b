"""Shared fixtures. Real files in tmp dirs, real runtimes; nothing is mocked."""

from __future__ import annotations

import os

import pytest

# Two cores on CI: keep every library to its share so tests running side by side don't thrash.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def torch_threads():
    import torch

    torch.set_num_threads(2)
    return 2
