"""onnx-fp32: the exported, cleaned ONNX graph itself is the artifact."""

from __future__ import annotations

from vitedge.export.metadata import update_onnx_metadata
from vitedge.targets.context import BuildContext
from vitedge.targets.registry import Artifact


def build_onnx_fp32(ctx: BuildContext) -> Artifact:
    onnx_file = ctx.place_onnx()
    update_onnx_metadata(onnx_file, {"vitedge.target": "onnx-fp32", "vitedge.precision": "fp32"})
    return Artifact(
        main_file=onnx_file.name,
        files=ctx.files_of(onnx_file),
        runtime="onnxruntime",
        runner_options={"graph_optimization": "all"},
        details={"graph_optimization": "all (ONNX Runtime default)"},
    )
