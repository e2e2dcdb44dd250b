"""Every target vitedge knows, in one list (the registry reads it on first use)."""

from __future__ import annotations

from vitedge.targets.registry import Target, register_target

register_target(Target(
    name="onnx-fp32", runtime="onnxruntime", precision="fp32",
    description="ONNX (fp32), cleaned with onnxslim; runs on ONNX Runtime or any ONNX runtime",
    builder="vitedge.targets.onnx:build_onnx_fp32", requires=("onnxruntime",),
))
