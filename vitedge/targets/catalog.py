"""Every target vitedge knows, in one list (the registry reads it on first use)."""

from __future__ import annotations

from vitedge.targets.registry import Target, register_target

register_target(Target(
    name="onnx-fp32", runtime="onnxruntime", precision="fp32",
    description="ONNX (fp32), cleaned with onnxslim; runs on ONNX Runtime or any ONNX runtime",
    builder="vitedge.targets.onnx:build_onnx_fp32", requires=("onnxruntime",),
))

register_target(Target(
    name="ov-fp32", runtime="openvino", precision="fp32",
    description="OpenVINO IR, fp32 weights, inference precision pinned to f32",
    builder="vitedge.targets.openvino:build_ov_fp32", requires=("openvino",),
))
register_target(Target(
    name="ov-fp16", runtime="openvino", precision="fp16",
    description="OpenVINO IR, fp16-compressed weights (f16 compute only on CPUs with native fp16)",
    builder="vitedge.targets.openvino:build_ov_fp16", requires=("openvino",),
))
register_target(Target(
    name="ov-int8", runtime="openvino", precision="int8", needs_calibration=True,
    description="OpenVINO IR quantised by NNCF PTQ (transformer model type for ViTs, SmoothQuant)",
    builder="vitedge.targets.openvino:build_ov_int8", requires=("openvino", "nncf"),
))
register_target(Target(
    name="ort-int8", runtime="onnxruntime", precision="int8", needs_calibration=True,
    description="QDQ ONNX by ONNX Runtime static quantisation (per-channel, ViT-aware op selection)",
    builder="vitedge.targets.ort_int8:build_ort_int8", requires=("onnxruntime",),
))
register_target(Target(
    name="torchao-int8", runtime="torchao", precision="int8", needs_onnx=False,
    description="torchao int8 dynamic activations + int8 weights (PyTorch eager on the device)",
    builder="vitedge.targets.torchao_target:build_torchao_int8", requires=("torchao",),
))
register_target(Target(
    name="torchao-int8-wo", runtime="torchao", precision="int8", needs_onnx=False,
    description="torchao int8 weight-only (PyTorch eager on the device)",
    builder="vitedge.targets.torchao_target:build_torchao_int8_wo", requires=("torchao",),
))

for _precision, _desc in (("fp32", "fp32 ONNX for a strongly typed engine (TF32 off)"),
                          ("fp16", "mixed FP16 ONNX (LayerNorm/Softmax/reductions and I/O kept FP32)"),
                          ("int8", "explicit symmetric Q/DQ ONNX (TensorRT placement), calibrated")):
    register_target(Target(
        name=f"trt-{_precision}", runtime="tensorrt", precision=_precision,
        needs_calibration=_precision == "int8",
        description=f"TensorRT: {_desc}; engine built where TensorRT + GPU exist, else a build kit "
                    "with parity predicted on CPU",
        builder=f"vitedge.targets.tensorrt:build_trt_{_precision}", requires=("onnxruntime",),
    ))
