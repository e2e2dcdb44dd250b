"""The in-tree target modules, one line each. A module registers the target(s) it defines;
out-of-tree targets are modules named in VITEDGE_PLUGINS (see vitedge.targets.registry)."""

TARGET_MODULES = (
    "vitedge.targets.onnx",
    "vitedge.targets.openvino",
    "vitedge.targets.openvino_int8",
    "vitedge.targets.ort_int8",
    "vitedge.targets.torchao_target",
    "vitedge.targets.tensorrt",
    "vitedge.targets.inductor",
    "vitedge.targets.executorch",
    "vitedge.targets.litert",
    "vitedge.targets.coreml",
)

DEFAULT_TARGET = "onnx-fp32"  # `vitedge export` without --target
