"""OpenVINO targets: ov-fp32, ov-fp16 (FP16-compressed weights), ov-bf16 (bf16 compute, CPUs
with native bf16 only); ov-int8 (NNCF PTQ) builds on this file in openvino_int8.py.

The IR is converted from the exported ONNX (default) or straight from the nn.Module
(`ov_source="torch"`, through OpenVINO's TorchScript frontend); the report records which.

Precision on the CPU plugin: left alone, OpenVINO computes float layers in bf16 on CPUs that
have it (this machine reports avx512_bf16) and silently maps an "f16" request to bf16 where the
CPU has no native fp16. So every target sets the inference precision hint: ov-fp32 computes in
f32; ov-fp16 keeps FP16 weights and computes in f16 only where the CPU has native fp16
arithmetic (avx512_fp16 / amx_fp16), else in f32. The runner reports what the device used.

"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from vitedge.errors import UsageError
from vitedge.options import opt
from vitedge.quiet import quiet
from vitedge.sysinfo import cpu_flags
from vitedge.targets.context import BuildContext
from vitedge.targets.registry import Artifact, Hooks, Target, register_target

MODEL_FILE = "model.xml"


@dataclass(frozen=True)
class OvOptions:
    prefix: ClassVar[str] = "ov"
    source: str = opt("onnx", "convert the IR from the ONNX export or from the nn.Module (TorchScript frontend)",
                      choices=("onnx", "torch"))
    model_cache: bool = opt(False, "the device caches the compiled model beside the IR (OpenVINO CACHE_DIR, "
                                   "BUNDLE/ov-cache): loads after the first read it instead of compiling")


MODEL_CACHE = "ov-cache"  # the cache directory, relative to the bundle (created on the device)


def runner_options(ctx: BuildContext, precision: str) -> dict[str, Any]:
    """What the bundle's OpenVINO runner opens with: the pinned precision, and the model cache."""
    return {"inference_precision": precision, **({"cache_dir": MODEL_CACHE} if ctx.options.model_cache else {})}


def native_fp16_cpu() -> bool:
    return any(f in cpu_flags() for f in ("avx512_fp16", "amx_fp16"))


def bf16_host() -> str | None:
    """ov-bf16 needs native bf16 arithmetic; elsewhere OpenVINO would emulate it slowly or fall
    back to f32, and the artifact would not be what it says."""
    if any(f in cpu_flags() for f in ("avx512_bf16", "amx_bf16")):
        return None
    return "its CPU has no native bf16 arithmetic (avx512_bf16 / amx_bf16); use ov-fp32 or ov-int8"


def convert(ctx: BuildContext) -> tuple[Any, str]:
    """The float ov.Model, from the ONNX export or directly from the PyTorch module."""
    import openvino as ov

    source = ctx.options.source
    if source == "onnx":
        return ov.convert_model(str(ctx.require_onnx().path)), "onnx"
    if source == "torch":
        import torch

        if ctx.export.dynamic_size:
            raise UsageError("--dynamic-size needs --ov-source onnx (the direct PyTorch conversion traces one size)")

        from vitedge.export.rewrites import apply_rewrites

        h, w = ctx.loaded.card.preprocess.input_size
        module, _ = apply_rewrites(ctx.loaded.module, ctx.export.rewrites)  # as the ONNX path gets it
        with quiet():
            model = ov.convert_model(module, example_input=torch.zeros(1, 3, h, w),
                                     input=[-1, 3, h, w])
        # The torch frontend names the input after forward()'s argument; use the shared name.
        model.inputs[0].get_tensor().set_names({"input"})
        model.outputs[0].get_tensor().set_names({"logits"})
        return model, "torch (TorchScript frontend)"
    raise UsageError(f"--ov-source must be onnx or torch, got {source!r}")  # unreachable: options check choices


def save_ir(ctx: BuildContext, model: Any, compress_to_fp16: bool) -> list[str]:
    import openvino as ov

    model.set_rt_info(ctx.loaded.card.to_json(), ["vitedge", "card"])
    ov.save_model(model, str(ctx.bundle_dir / MODEL_FILE), compress_to_fp16=compress_to_fp16)
    return [MODEL_FILE, "model.bin"]


def build_ov_fp32(ctx: BuildContext) -> Artifact:
    model, source = convert(ctx)
    files = save_ir(ctx, model, compress_to_fp16=False)
    return Artifact(MODEL_FILE, files, "openvino", runner_options(ctx, "f32"),
                    details={"converted_from": source, "weights": "f32", "inference_precision": "f32"})


def build_ov_fp16(ctx: BuildContext) -> Artifact:
    model, source = convert(ctx)
    files = save_ir(ctx, model, compress_to_fp16=True)
    native = native_fp16_cpu()
    precision = "f16" if native else "f32"
    notes = [] if native else [
        "this CPU has no native fp16 arithmetic: weights are stored in fp16 and decompressed, "
        "compute runs in f32 (an 'f16' hint would silently run bf16 here)"]
    return Artifact(MODEL_FILE, files, "openvino", runner_options(ctx, precision),
                    details={"converted_from": source, "weights": "f16 (compress_to_fp16)",
                             "inference_precision": precision}, notes=notes)


def build_ov_bf16(ctx: BuildContext) -> Artifact:
    """What OpenVINO does by default on CPUs with bf16, made explicit: fp32 weights in the IR
    (the plugin converts them once at compile time), every float layer computed in bf16."""
    model, source = convert(ctx)
    files = save_ir(ctx, model, compress_to_fp16=False)
    return Artifact(MODEL_FILE, files, "openvino", runner_options(ctx, "bf16"),
                    details={"converted_from": source, "weights": "f32 (converted to bf16 when compiled)",
                             "inference_precision": "bf16"})


def _pixel_steps(node: Any, spec: Any) -> Any:
    """OpenVINO ops for vitedge.export.pixels' steps, on f32 NCHW of any size (the PrePostProcessor
    has converted type and layout). Interpolate's *_pillow modes are Pillow's filters."""
    import numpy as np
    import openvino.opset11 as ops11
    import openvino.opset13 as ops

    from vitedge.calib.preprocess import resize_rule

    h, w = spec.input_size
    kind, size = resize_rule(spec)
    i64 = lambda v: ops.constant(np.asarray(v, np.int64))  # noqa: E731
    if kind == "exact":
        new_hw = i64(size)
    else:  # integer arithmetic as resized_size: floor(S * side / short); float loses a pixel (427 px -> 255)
        hw = ops.gather(ops.shape_of(node, "i64"), i64([2, 3]), i64(0))
        new_hw = ops.divide(ops.multiply(hw, i64(size[0])), ops.reduce_min(hw, i64(0), keep_dims=False))
    mode = {"bicubic": "bicubic_pillow", "bilinear": "bilinear_pillow", "nearest": "nearest"}[spec.interpolation]
    resized = ops11.interpolate(node, new_hw, mode=mode, shape_calculation_mode="sizes", axes=i64([2, 3]),
                                coordinate_transformation_mode="half_pixel", cube_coeff=-0.5, antialias=True)
    margin = ops.subtract(new_hw, i64([h, w]))
    if spec.crop_rounding == "floor":
        start = ops.divide(margin, i64(2))
    else:
        half = ops.divide(ops.convert(margin, "f32"), ops.constant(np.float32(2)))
        start = ops.convert(ops.round(half, "half_to_even"), "i64")
    cropped = ops.slice(resized, start, ops.add(start, i64([h, w])), i64([1, 1]), i64([2, 3]))
    px = ops.round(ops.clamp(cropped, 0.0, 255.0), "half_to_even")
    scale = np.float32(spec.rescale)
    mean = (np.asarray(spec.mean, np.float32) / scale).reshape(1, 3, 1, 1)
    std = (np.asarray(spec.std, np.float32) / scale).reshape(1, 3, 1, 1)
    x = ops.divide(ops.subtract(px, ops.constant(mean)), ops.constant(std))
    if spec.channel_order == "BGR":
        x = ops.gather(x, i64([2, 1, 0]), i64(1))
    return x.output(0)


def embed_pixels(ctx: BuildContext, artifact: Artifact) -> Artifact:
    """--embed-preprocessing: the IR takes uint8 NHWC RGB of any size (PrePostProcessor)."""
    import openvino as ov
    from openvino.preprocess import PrePostProcessor

    from vitedge.export.pixels import check_embeddable, input_info
    from vitedge.runtimes.base import PIXELS_NAME

    spec = ctx.loaded.card.preprocess
    check_embeddable(spec)
    path = ctx.bundle_dir / artifact.main_file
    model = ov.Core().read_model(str(path))
    if ctx.export.dynamic_size:
        model.reshape({model.inputs[0]: [-1, 3, *spec.input_size]})
    ppp = PrePostProcessor(model)
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_spatial_dynamic_shape()
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    ppp.input().preprocess().convert_element_type(ov.Type.f32).convert_layout(ov.Layout("NCHW")).custom(
        lambda node: _pixel_steps(node, spec))
    model = ppp.build()
    model.inputs[0].get_tensor().set_names({PIXELS_NAME})
    # Saved beside and moved over: read_model maps the .bin it read, which must not be written
    # under it. No compression: the weights stay as they were stored, the mean/std stay f32.
    tmp = ctx.work_dir / "pixels" / path.name
    tmp.parent.mkdir(exist_ok=True)
    ov.save_model(model, str(tmp), compress_to_fp16=False)
    del model, ppp
    for f in (tmp, tmp.with_suffix(".bin")):
        f.replace(path.with_name(f.name))
    artifact.details["input"] = input_info(spec, any_size=True, interpolation=f"OpenVINO Interpolate {spec.interpolation}_pillow (antialiased)")
    return artifact


def _diagnose(fp32_onnx: Path, artifact_file: Path, x: Any, work: Path) -> Any:
    """An OpenVINO IR vs the fp32 ONNX converted by OpenVINO (same friendly names)."""
    import onnx
    import openvino as ov

    from vitedge.diagnose.onnx_layers import _modules
    from vitedge.diagnose.openvino_layers import diagnose_openvino

    core = ov.Core()
    return diagnose_openvino(ov.convert_model(str(fp32_onnx)), core.read_model(str(artifact_file)), x,
                             artifact_file.name, _modules(onnx.load(str(fp32_onnx))))


# onnxslim's FusionGemm rewrites a Linear on a 3-D/4-D activation (every ViT/ConvNeXt MLP) as
# Reshape -> Gemm -> Reshape. ONNX Runtime likes it (convnext-zepto static batch 1: ort-int8 0.87
# vs 0.91 ms, onnx-fp32 0.81 vs 0.84), but OpenVINO's CPU plugin cannot fuse the GELU after fc1
# across that Reshape into the FullyConnected's post-ops, so every block runs one more kernel:
# vit-tiny ov-int8 (NNCF default type) 0.79 / 0.82 ms without the Gemm rewrite vs 0.83 / 0.84
# with it, two isolated runs; its per-layer counters show the extra `gelu` Subgraph per block.
# This is the IR difference to NNCF's own pipeline (which converts the raw export).
# ConvNeXt channels-first (vitedge.export.rewrites: no Transposes, so no layout Reorders; timm
# convnext_tiny NNCF INT8 1.5x faster).
OV_TARGET = dict(runtime="openvino", extra="ov", requires=("openvino",), dynamic_size=True,
                 onnx_slim_skip=("FusionGemm",), export_rewrites=("convnext-channels-first",))
OV_HOOKS = dict(diagnose=_diagnose, embed=embed_pixels)  # every ov-* target's, beside its build
register_target(Target(
    name="ov-fp32", precision="fp32", hooks=Hooks(build=build_ov_fp32, **OV_HOOKS), options=OvOptions, auto=("x86",), **OV_TARGET,
    description="OpenVINO IR, fp32 weights, inference precision pinned to f32"))
register_target(Target(
    name="ov-fp16", precision="fp16", hooks=Hooks(build=build_ov_fp16, **OV_HOOKS), options=OvOptions, auto=("x86",), **OV_TARGET,
    description="OpenVINO IR, fp16-compressed weights (f16 compute only on CPUs with native fp16)"))
register_target(Target(
    name="ov-bf16", precision="bf16", hooks=Hooks(build=build_ov_bf16, host_check=bf16_host, **OV_HOOKS), options=OvOptions, auto=("x86",),
    **OV_TARGET, description="OpenVINO IR computed in bf16 (the CPU plugin's default where the CPU has native bf16)"))
