"""OpenVINO targets: ov-fp32, ov-fp16 (FP16-compressed weights), ov-bf16 (bf16 compute, CPUs
with native bf16 only) and ov-int8 (NNCF PTQ).

The IR is converted from the exported ONNX (default) or straight from the nn.Module
(`ov_source="torch"`, through OpenVINO's TorchScript frontend); the report records which.

Precision on the CPU plugin: left alone, OpenVINO computes float layers in bf16 on CPUs that
have it (this machine reports avx512_bf16) and silently maps an "f16" request to bf16 where the
CPU has no native fp16. So every target sets the inference precision hint: ov-fp32 computes in
f32; ov-fp16 keeps FP16 weights and computes in f16 only where the CPU has native fp16
arithmetic (avx512_fp16 / amx_fp16), else in f32. The runner reports what the device used.

ov-int8 uses `nncf.quantize` (NNCF's post-training quantisation: per-channel int8 weights,
per-tensor activations, fast or full bias correction). ViTs use `ModelType.TRANSFORMER`, which
keeps LayerNorm (MVN), Softmax, GELU and residual Adds in float and applies SmoothQuant to the
MatMuls (alpha 0.95 by default; `smooth_quant=-1` turns it off).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np

from vitedge import interrupts
from vitedge.calib.source import nncf_dataset
from vitedge.errors import ExportError, UsageError
from vitedge.models.family import openvino_head_nodes
from vitedge.options import opt
from vitedge.quiet import quiet
from vitedge.runtimes import sigstack
from vitedge.sysinfo import cpu_flags
from vitedge.targets.context import BuildContext
from vitedge.targets.registry import Artifact, Target, register_target

MODEL_FILE = "model.xml"


@dataclass(frozen=True)
class OvOptions:
    prefix: ClassVar[str] = "ov"
    source: str = opt("onnx", "convert the IR from the ONNX export or from the nn.Module (TorchScript frontend)",
                      choices=("onnx", "torch"))


@dataclass(frozen=True)
class OvInt8Options(OvOptions):
    """NNCF post-training quantisation settings."""

    preset: str | None = opt(None, "NNCF preset (default: mixed for transformers, else performance)",
                             choices=("mixed", "performance"))
    subset_size: int | None = opt(None, "calibration samples NNCF uses (default: all of --num-calib)")
    bias_correction: str = opt("fast", "NNCF bias correction", choices=("fast", "full"))
    smooth_quant: float | None = opt(None, "SmoothQuant alpha for MatMuls (-1 off; default: NNCF's)")
    transformer: bool | None = opt(None, "NNCF transformer model type (default: from the model's family)")
    ignore: tuple[str, ...] = opt((), "OpenVINO friendly names kept in float (the accuracy fallback adds to it)")
    ignore_types: tuple[str, ...] = opt((), "OpenVINO op types kept in float")
    quantize_head: bool = opt(False, "also quantise the classifier head (default float: see models.family)")
    float_precision: str = opt("f32", "precision of the layers left in float (bf16: only on CPUs with native bf16)",
                               choices=("f32", "bf16"))
    accuracy_control: bool = opt(False, "use NNCF's quantize_with_accuracy_control (needs --max-drop)")
    act_range: str | None = opt(None, "activation ranges: minmax (global, as ONNX Runtime's) or NNCF's mean of "
                                      "per-image min/max (default: minmax for CNNs, NNCF's for transformers)",
                                choices=("minmax", "nncf"))
    act_per_channel: bool | None = opt(None, "per-channel activation scales where NNCF's CPU config allows "
                                             "(depthwise inputs; default: off for CNNs, NNCF's for transformers)")
    overflow_fix: str | None = opt(None, "7-bit weights against u8 x s8 saturation on CPUs without VNNI (default: "
                                         "disable where this CPU has VNNI, else NNCF's first_layer)",
                                   choices=("disable", "first_layer", "enable"))


def native_fp16_cpu() -> bool:
    return any(f in cpu_flags() for f in ("avx512_fp16", "amx_fp16"))


def _bf16_host() -> str | None:
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


def _save(ctx: BuildContext, model: Any, compress_to_fp16: bool) -> list[str]:
    import openvino as ov

    model.set_rt_info(ctx.loaded.card.to_json(), ["vitedge", "card"])
    ov.save_model(model, str(ctx.bundle_dir / MODEL_FILE), compress_to_fp16=compress_to_fp16)
    return [MODEL_FILE, "model.bin"]


def build_ov_fp32(ctx: BuildContext) -> Artifact:
    model, source = convert(ctx)
    files = _save(ctx, model, compress_to_fp16=False)
    return Artifact(MODEL_FILE, files, "openvino", {"inference_precision": "f32"},
                    details={"converted_from": source, "weights": "f32", "inference_precision": "f32"})


def build_ov_fp16(ctx: BuildContext) -> Artifact:
    model, source = convert(ctx)
    files = _save(ctx, model, compress_to_fp16=True)
    native = native_fp16_cpu()
    precision = "f16" if native else "f32"
    notes = [] if native else [
        "this CPU has no native fp16 arithmetic: weights are stored in fp16 and decompressed, "
        "compute runs in f32 (an 'f16' hint would silently run bf16 here)"]
    return Artifact(MODEL_FILE, files, "openvino", {"inference_precision": precision},
                    details={"converted_from": source, "weights": "f16 (compress_to_fp16)",
                             "inference_precision": precision}, notes=notes)


def build_ov_bf16(ctx: BuildContext) -> Artifact:
    """What OpenVINO does by default on CPUs with bf16, made explicit: fp32 weights in the IR
    (the plugin converts them once at compile time), every float layer computed in bf16."""
    model, source = convert(ctx)
    files = _save(ctx, model, compress_to_fp16=False)
    return Artifact(MODEL_FILE, files, "openvino", {"inference_precision": "bf16"},
                    details={"converted_from": source, "weights": "f32 (converted to bf16 when compiled)",
                             "inference_precision": "bf16"})


def nncf_quantize(model: Any, ctx: BuildContext, cfg: OvInt8Options) -> tuple[Any, dict[str, Any]]:
    import nncf
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
        OverflowFix,
        QuantizationParameters,
    )
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    transformer = _transformer(cfg, ctx)
    kwargs: dict[str, Any] = {
        "subset_size": cfg.subset_size or len(ctx.calibration),
        "fast_bias_correction": cfg.bias_correction == "fast",
        "target_device": nncf.TargetDevice.CPU,
    }
    if transformer:
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    if cfg.preset is not None:
        kwargs["preset"] = {"mixed": nncf.QuantizationPreset.MIXED,
                            "performance": nncf.QuantizationPreset.PERFORMANCE}[cfg.preset]
    recipe = cnn_recipe(cfg, transformer)
    fix = {"disable": OverflowFix.DISABLE, "first_layer": OverflowFix.FIRST_LAYER, "enable": OverflowFix.ENABLE}
    advanced: dict[str, Any] = {"overflow_fix": fix[recipe["overflow_fix"]]}
    if recipe["act_range"] == "minmax":
        advanced["activations_range_estimator_params"] = RangeEstimatorParametersSet.MINMAX
    if recipe["act_per_channel"] is False:
        advanced["activations_quantization_params"] = QuantizationParameters(per_channel=False)
    if cfg.smooth_quant is not None:
        advanced["smooth_quant_alphas"] = AdvancedSmoothQuantParameters(matmul=cfg.smooth_quant)
    kwargs["advanced_parameters"] = AdvancedQuantizationParameters(**advanced)
    head = [] if cfg.quantize_head else [n for n in openvino_head_nodes(model) if n not in cfg.ignore]
    if cfg.ignore or cfg.ignore_types or head:
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=list(cfg.ignore) + head, types=list(cfg.ignore_types))
    dataset = nncf_dataset(ctx.calibration, model.inputs[0].get_any_name())
    try:
        with quiet(), sigstack.preserved():  # NNCF compiles models internally; see runtimes.sigstack
            quantized = nncf.quantize(model, dataset, **kwargs)
    except nncf.ValidationError as e:
        raise UsageError(f"ignored scope: {str(e).splitlines()[0]}") from None
    except Exception as e:
        interrupts.check()
        raise ExportError(f"NNCF quantisation failed: {type(e).__name__}: {str(e)[:300]}") from e
    acts, weights = quantization_report(quantized)
    details = {
        "quantizer": f"nncf.quantize {nncf.__version__}",
        "model_type": "transformer" if transformer else "default",
        **{k: v for k, v in asdict(cfg).items() if k not in ("transformer", "accuracy_control")},
        **recipe,
        "subset_size": kwargs["subset_size"],
        "float_head": head,
        "int8_weight_ops": len(weights),
        "activation_quantizers": len(acts),
        "calibration": ctx.calibration.provenance(),
    }
    return quantized, details


_PASS_THROUGH = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Gather", "Concat", "Split",
                 "VariadicSplit", "StridedSlice", "Slice"}


def _consumers(output: Any) -> list[tuple[str, str, int]]:
    found = []
    for target in output.get_target_inputs():
        node = target.get_node()
        kind = node.get_type_name()
        if kind == "ShapeOf":
            continue
        if kind in _PASS_THROUGH:
            for out in node.outputs():
                found.extend(_consumers(out))
        else:
            found.append((kind, node.get_friendly_name(), target.get_index()))
    return found


def _int8_weight(node: Any) -> bool:
    while node.get_type_name() in ("Multiply", "Subtract", "Convert", "Reshape", "Transpose"):
        node = node.input_value(0).get_node()
    return node.get_type_name() == "Constant" and node.get_element_type().get_type_name() in ("i8", "u8", "i4", "u4")


def quantization_report(model: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """(activation FakeQuantizes with the ops they feed, ops whose weights are int8)."""
    acts = [{"name": op.get_friendly_name(), "levels": int(op.get_attributes()["levels"]),
             "feeds": [f"{t}:{n}:{i}" for t, n, i in _consumers(op.output(0))]}
            for op in model.get_ordered_ops() if op.get_type_name() == "FakeQuantize"]
    weights = [op.get_friendly_name() for op in model.get_ordered_ops()
               if op.get_type_name() in ("MatMul", "Convolution", "GroupConvolution")
               and _int8_weight(op.input_value(1).get_node())]
    return acts, weights


def float_ops(model: Any) -> list[str]:
    """Friendly names of the quantisable ops (MatMul / Convolution) in a float model."""
    return [op.get_friendly_name() for op in model.get_ordered_ops()
            if op.get_type_name() in ("MatMul", "Convolution", "GroupConvolution")]


def nncf_accuracy_control(model: Any, ctx: BuildContext, cfg: OvInt8Options) -> tuple[Any, dict[str, Any]]:
    """NNCF's own accuracy-aware PTQ (`quantize_with_accuracy_control`), on the search set.

    SmoothQuant is turned off: with it, NNCF 3.4 restores a reverted MatMul's original weights but
    leaves the SmoothQuant scaling on its activation, corrupting the layer (measured: mean abs
    error 0.010 -> 0.085-0.276 after one revert)."""
    import nncf
    from nncf.quantization.advanced_parameters import (
        AdvancedAccuracyRestorerParameters,
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
    )

    search, budget = ctx.search, ctx.budget
    if search is None or budget is None or budget.max_drop is None:
        raise UsageError("--ov-accuracy-control needs --max-drop (accuracy points)")
    input_name = model.inputs[0].get_any_name()
    samples = [(search.x[i : i + 1], int(search.labels[i])) for i in range(len(search.x))]

    def validate(compiled: Any, data: Any) -> tuple[float, list[float]]:
        request = compiled.create_infer_request()
        hits = [float(np.argmax(request.infer({input_name: x})[compiled.outputs[0]]) == y) for x, y in data]
        return float(np.mean(hits)), hits

    transformer = _transformer(cfg, ctx)
    kwargs: dict[str, Any] = {"subset_size": cfg.subset_size or len(ctx.calibration),
                              "fast_bias_correction": cfg.bias_correction == "fast",
                              "max_drop": budget.max_drop / 100.0, "drop_type": nncf.DropType.ABSOLUTE,
                              "advanced_quantization_parameters": AdvancedQuantizationParameters(
                                  smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=-1)),
                              "advanced_accuracy_restorer_parameters": AdvancedAccuracyRestorerParameters(
                                  num_ranking_workers=1)}
    if transformer:
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    head = [] if cfg.quantize_head else [n for n in openvino_head_nodes(model) if n not in cfg.ignore]
    if cfg.ignore or head:
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=list(cfg.ignore) + head)
    float_ops_before = set(float_ops(model))
    with quiet(), sigstack.preserved():  # NNCF compiles models internally; see runtimes.sigstack
        quantized = nncf.quantize_with_accuracy_control(
            model, nncf_dataset(ctx.calibration, input_name), nncf.Dataset(samples), validate, **kwargs)
    _, int8_ops = quantization_report(quantized)
    kept = sorted(float_ops_before - set(int8_ops))
    return quantized, {"accuracy_control": {"method": f"nncf.quantize_with_accuracy_control {nncf.__version__}",
                                            "budget_text": budget.describe(), "kept_high_precision": kept,
                                            "kept_count": len(kept), "search_data": search.description}}


def cnn_recipe(cfg: OvInt8Options, transformer: bool) -> dict[str, Any]:
    """The activation and weight settings NNCF is given, with the user's choices kept.

    Measured on the real ImageNet EfficientNet-Lite0, real photos, 42 calibration images
    (benchmarks/pretrained.py; NNCF 3.4, SQNR of the logits): NNCF's CPU defaults 12.3 dB,
    cosine mean 0.971, against ONNX Runtime's QDQ of the same model 19.4 dB. Three defaults
    cost it: per-channel activation scales on depthwise inputs and NNCF's mean of per-image
    min/max fit a few calibration images too closely and clip others (per-tensor: 16.5 dB; with
    global min/max: 17.0 dB), and the first layer's 7-bit weights (the overflow fix for CPUs
    without VNNI; off where it has VNNI: 20.6 dB, cosine mean 0.996). Transformers keep NNCF's
    own activation settings (None: NNCF's default; their outliers are what it is tuned for); the
    overflow fix follows the CPU for every model, as ort-int8's reduce_range does."""
    from vitedge.sysinfo import has_vnni

    return {
        "act_range": cfg.act_range or ("nncf" if transformer else "minmax"),
        "act_per_channel": cfg.act_per_channel if cfg.act_per_channel is not None else (None if transformer else False),
        "overflow_fix": cfg.overflow_fix or ("disable" if has_vnni() else "first_layer"),
    }


def _transformer(cfg: OvInt8Options, ctx: BuildContext) -> bool:
    """NNCF's transformer model type: as asked, else what the model's family recipe says
    (attention found in the forward pass, vitedge.models.family), not a guess from its name."""
    from vitedge.models.family import recipe_for

    return cfg.transformer if cfg.transformer is not None else recipe_for(ctx.loaded.card.family).nncf_transformer


def build_ov_int8(ctx: BuildContext) -> Artifact:
    model, source = convert(ctx)
    cfg: OvInt8Options = ctx.options
    if cfg.accuracy_control:
        quantized, ac = nncf_accuracy_control(model, ctx, cfg)
        files = _save(ctx, quantized, compress_to_fp16=False)
        return Artifact(MODEL_FILE, files, "openvino", {"inference_precision": "f32"},
                        details={"converted_from": source, **ac, "calibration": ctx.calibration.provenance()})
    quantized, details = nncf_quantize(model, ctx, cfg)
    files = _save(ctx, quantized, compress_to_fp16=False)
    return Artifact(MODEL_FILE, files, "openvino", {"inference_precision": cfg.float_precision},
                    details={"converted_from": source, **details,
                             "inference_precision": f"{cfg.float_precision} for the float parts"})


def _preflight(options: OvInt8Options, budget: Any) -> None:
    if options.accuracy_control and (budget is None or budget.max_drop is None):
        raise UsageError("--ov-accuracy-control needs --max-drop")
    if options.float_precision == "bf16" and _bf16_host():
        raise UsageError(f"--ov-float-precision bf16: {_bf16_host()}")


def _auto_variants(card: Any) -> tuple[dict[str, Any], ...]:
    """What auto-cpu also builds and times, because it is often faster and only the parity gate
    can say whether it is accurate enough:
    - on ViTs, NNCF's default model type: it also quantises the inputs of the residual Adds and
      LayerNorms (MVN), which the transformer type keeps float (vit-tiny: 69 activation
      quantisers instead of 37), so int8 flows between layers with fewer conversions, and it
      skips SmoothQuant. vit-tiny, static batch 1, 2 threads: 0.62 ms vs 0.72 ms;
    - on CPUs with native bf16, the float layers (LayerNorm, GELU, Softmax, ...) in bf16, as
      OpenVINO does by default there: at 224 px these layers are a large share of the time
      (timm convnext_tiny: see benchmarks/RESULTS.md); on vit-tiny the conversions cost more
      than they save, which the timing shows."""
    from vitedge.models.family import recipe_for

    model_types: list[dict[str, Any]] = [{}]
    if recipe_for(card.family).nncf_transformer:
        model_types.append({"transformer": False})
    floats: list[dict[str, Any]] = [{}] if _bf16_host() else [{}, {"float_precision": "bf16"}]
    return tuple({**m, **f} for m in model_types for f in floats if m or f)


def _diagnose(*args, **kwargs):  # type: ignore[no-untyped-def]
    from vitedge.diagnose.run import diagnose_ov

    return diagnose_ov(*args, **kwargs)


# onnxslim's FusionGemm rewrites a Linear on a 3-D/4-D activation (every ViT/ConvNeXt MLP) as
# Reshape -> Gemm -> Reshape. ONNX Runtime likes it (convnext-zepto static batch 1: ort-int8 0.87
# vs 0.91 ms, onnx-fp32 0.81 vs 0.84), but OpenVINO's CPU plugin cannot fuse the GELU after fc1
# across that Reshape into the FullyConnected's post-ops, so every block runs one more kernel:
# vit-tiny ov-int8 (NNCF default type) 0.79 / 0.82 ms without the Gemm rewrite vs 0.83 / 0.84
# with it, two isolated runs; its per-layer counters show the extra `gelu` Subgraph per block.
# This is the IR difference to NNCF's own pipeline (which converts the raw export).
# ConvNeXt channels-first (vitedge.export.rewrites: no Transposes, so no layout Reorders; timm
# convnext_tiny NNCF INT8 1.5x faster).
_OV = dict(runtime="openvino", extra="ov", requires=("openvino",), diagnose=_diagnose, dynamic_size=True,
           onnx_slim_skip=("FusionGemm",), export_rewrites=("convnext-channels-first",))
register_target(Target(
    name="ov-fp32", precision="fp32", build=build_ov_fp32, options=OvOptions, auto=("x86",), **_OV,
    description="OpenVINO IR, fp32 weights, inference precision pinned to f32"))
register_target(Target(
    name="ov-fp16", precision="fp16", build=build_ov_fp16, options=OvOptions, auto=("x86",), **_OV,
    description="OpenVINO IR, fp16-compressed weights (f16 compute only on CPUs with native fp16)"))
register_target(Target(
    name="ov-bf16", precision="bf16", build=build_ov_bf16, options=OvOptions, auto=("x86",), host_check=_bf16_host,
    **_OV, description="OpenVINO IR computed in bf16 (the CPU plugin's default where the CPU has native bf16)"))
register_target(Target(
    name="ov-int8", precision="int8", build=build_ov_int8, options=OvInt8Options, auto=("x86",),
    needs_calibration=True, fallback_option="ignore", preflight=_preflight, auto_variants=_auto_variants,
    **{**_OV, "requires": ("openvino", "nncf")},
    description="OpenVINO IR quantised by NNCF PTQ (transformer model type for ViTs, SmoothQuant)"))
