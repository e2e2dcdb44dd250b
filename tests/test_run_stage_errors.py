"""A runtime that fails on the artifact it was just handed (found by the zoo: eager torchao on
EVA02/BEiT/SwinV2 raises IndexError inside torchao) is an ExportError naming the stage, and no
bundle is left behind. The failing runtime is a stand-in (monkeypatched ONNX Runtime runner):
the real cases depend on upstream bugs that may be fixed any day."""

from __future__ import annotations

import pytest

from vitedge.errors import ExportError
from vitedge.models.resolve import load_model
from vitedge.pipeline import export_target
from vitedge.request import BenchConfig, ExportRequest
from vitedge.runtimes.ort_runner import OrtRunner


def test_a_runtime_failing_on_its_artifact_names_the_stage(tmp_path, monkeypatch):
    def broken(self, feed):  # stand-in for a runtime bug on this artifact
        raise IndexError("tuple index out of range")

    monkeypatch.setattr(OrtRunner, "_infer", broken)
    with pytest.raises(ExportError, match=r"running the onnxruntime artifact on the parity inputs failed: "
                                          r"IndexError: tuple index out of range; .*try another target"):
        export_target(load_model("vit-tiny"), ExportRequest(target="onnx-fp32", out=tmp_path / "b", eval_n=8,
                                                             bench=BenchConfig(warmup=1, min_runs=2, budget_s=0.1)))
    assert not (tmp_path / "b").exists() and list(tmp_path.iterdir()) == []
