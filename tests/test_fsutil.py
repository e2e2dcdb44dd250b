"""Atomic outputs: a bundle appears whole or not at all, and never replaces another run's."""

from __future__ import annotations

import pytest

from vitedge.errors import OutputError
from vitedge.fsutil import atomic_dir


def test_a_bundle_another_run_finished_meanwhile_is_kept(tmp_path):
    """Two exports to one --out started seconds apart: the existence check passes for both at
    the start; the second to finish must refuse at commit time (exit 6), not replace the first."""
    final = tmp_path / "bundle"
    with pytest.raises(OutputError, match="appeared while this run was working"):
        with atomic_dir(final) as tmp:
            (tmp / "model.onnx").write_text("second run")
            final.mkdir()  # the first run commits while this one is still working
            (final / "model.onnx").write_text("first run")
    assert (final / "model.onnx").read_text() == "first run"
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]  # no partial directory left behind
    with atomic_dir(final, force=True) as tmp:  # --force replaces it, as asked
        (tmp / "model.onnx").write_text("forced")
    assert (final / "model.onnx").read_text() == "forced"
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]


def test_a_new_bundle_appears_whole(tmp_path):
    final = tmp_path / "b"
    with atomic_dir(final) as tmp:
        (tmp / "a").write_text("x")
        assert not final.exists()
    assert (final / "a").read_text() == "x"
    with pytest.raises(OutputError, match="already exists"):
        with atomic_dir(final):
            pass
