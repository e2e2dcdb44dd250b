"""Shared fixtures. Real files in tmp dirs, real runtimes; nothing is mocked."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Two cores on CI: keep every library to its share so tests running side by side don't thrash.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
_CORES = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
if not os.environ.get("VITEDGE_TEST_NO_PIN") and _WORKERS > 1 and len(_CORES) >= _WORKERS:
    # One core per xdist worker (and every process it spawns): runtimes size their pools from
    # the affinity (runtimes.base.default_threads), so two workers never oversubscribe two cores
    # with spinning thread pools (ONNX Runtime, OpenMP). Measured on 2 cores, -n 2, four test
    # files: 186 s -> 150 s. A test about using several cores asks for `all_cores`.
    _i = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:]) % _WORKERS
    _share = _CORES[_i::_WORKERS]
    os.sched_setaffinity(0, _share)
    os.environ["OMP_NUM_THREADS"] = str(len(_share))
os.environ.setdefault("OMP_NUM_THREADS", "2")


def pytest_configure(config):
    """The directory of the shared bundles (tests/shared_bundles.py), and one ONNX export cache
    (vitedge.export.cache) for the whole run, shared by the xdist workers
    (they inherit the environment when the controller spawns them, after this hook): the same
    built-in exported for the 20th time is a copy of the first real export, not a new one.
    Measured on this machine (2 cores): `vitedge export vit-tiny --target onnx-fp32` 14.9 s -> 6.8 s.
    Tests of the exporter itself export what no other test does, or clear the variable.
    VITEDGE_TEST_EXPORT_CACHE=0 turns it off."""
    if hasattr(config, "workerinput"):
        return
    if getattr(config.option, "maxschedchunk", False) is None:
        # xdist's load scheduling hands each worker a quarter of its share up front, in one
        # chunk: with the slow tests first (below) one worker got 250 s more of them than the
        # other (measured 2026-12-05). One test at a time keeps them level; --maxschedchunk wins.
        config.option.maxschedchunk = 1
    import tempfile

    from shared_bundles import ENV as SHARED_BUNDLES

    # the bundles tests share (tests/shared_bundles.py), one directory for every worker
    config._vitedge_dirs = [tempfile.mkdtemp(prefix="vitedge-test-bundles-")]
    os.environ[SHARED_BUNDLES] = config._vitedge_dirs[0]
    if os.environ.get("VITEDGE_TEST_EXPORT_CACHE") != "0":
        config._vitedge_dirs.append(tempfile.mkdtemp(prefix="vitedge-test-export-cache-"))
        os.environ["VITEDGE_EXPORT_CACHE"] = config._vitedge_dirs[-1]


def pytest_collection_modifyitems(config, items):
    """The slow tests first, the fast ones last (a stable sort: file order within each): xdist
    hands tests out in this order, one at a time (pytest_configure), so the two workers end on a
    pool of one-second tests instead of one waiting while the other runs a 90-second training
    test (measured 2026-12-05, in collection order: 77 s of one worker idle at the end)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_unconfigure(config):
    import shutil

    for d in getattr(config, "_vitedge_dirs", []):
        shutil.rmtree(d, ignore_errors=True)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Each phase's report on the test item (item.rep_setup / rep_call / rep_teardown), so a
    fixture's teardown can tell whether its test passed."""
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


@pytest.fixture
def all_cores():
    """Every core of the machine for this test (and what it spawns), whatever core its xdist
    worker was pinned to: for tests of thread counts and parallel streams. Yields the count."""
    if not hasattr(os, "sched_getaffinity"):
        yield os.cpu_count() or 1
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(_CORES) or before)
    try:
        yield len(os.sched_getaffinity(0))
    finally:
        os.sched_setaffinity(0, before)


@pytest.fixture(scope="session")
def torch_threads():
    import torch

    n = min(2, len(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else 2
    torch.set_num_threads(n)
    return n


@pytest.fixture(scope="session")
def ground(tmp_path_factory):
    """The real-photo proving ground (benchmarks/realground.py): EfficientNet-Lite0's real weights
    and the photos that scikit-image, scikit-learn and matplotlib ship (no Debian packages here).
    Needs the `realground` extra: the modules using it skip without it and say so."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from realground import layout
    finally:
        sys.path.pop(0)
    root = tmp_path_factory.mktemp("realground")
    manifest = layout(root, debian=False)  # the PyPI photos only
    assert manifest["labelled"] >= 5 and manifest["unlabelled"] >= 5, manifest
    return root
