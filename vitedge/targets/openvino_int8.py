"""ov-int8: an OpenVINO IR quantised by NNCF (the IR is converted as the float OpenVINO targets
convert theirs: vitedge.targets.openvino).

`nncf.quantize` is NNCF's post-training quantisation: per-channel int8 weights, per-tensor
activations, fast or full bias correction. ViTs use `ModelType.TRANSFORMER`, which keeps
LayerNorm (MVN), Softmax, GELU and residual Adds in float and applies SmoothQuant to the
MatMuls (alpha 0.95 by default; `smooth_quant=-1` turns it off). CNNs get the recipe measured
on real weights and photos (`cnn_recipe`); `--ov-accuracy-control` runs NNCF's own
accuracy-aware PTQ instead.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from vitedge import interrupts
from vitedge.calib.source import nncf_dataset
from vitedge.errors import ExportError, UsageError
from vitedge.models.family import openvino_head_nodes
from vitedge.options import opt
from vitedge.quiet import quiet
from vitedge.runtimes import sigstack
from vitedge.targets.context import BuildContext
from vitedge.targets.openvino import (
    MODEL_FILE,
    OV_HOOKS,
    OV_TARGET,
    OvOptions,
    bf16_host,
    convert,
    runner_options,
    save_ir,
)
from vitedge.targets.registry import Artifact, Hooks, Target, register_target


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
        files = save_ir(ctx, quantized, compress_to_fp16=False)
        return Artifact(MODEL_FILE, files, "openvino", runner_options(ctx, "f32"),
                        details={"converted_from": source, **ac, "calibration": ctx.calibration.provenance()})
    quantized, details = nncf_quantize(model, ctx, cfg)
    files = save_ir(ctx, quantized, compress_to_fp16=False)
    return Artifact(MODEL_FILE, files, "openvino", runner_options(ctx, cfg.float_precision),
                    details={"converted_from": source, **details,
                             "inference_precision": f"{cfg.float_precision} for the float parts"})


def _preflight(options: OvInt8Options, budget: Any) -> None:
    if options.accuracy_control and (budget is None or budget.max_drop is None):
        raise UsageError("--ov-accuracy-control needs --max-drop")
    if options.float_precision == "bf16" and bf16_host():
        raise UsageError(f"--ov-float-precision bf16: {bf16_host()}")


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
    floats: list[dict[str, Any]] = [{}] if bf16_host() else [{}, {"float_precision": "bf16"}]
    return tuple({**m, **f} for m in model_types for f in floats if m or f)


register_target(Target(
    name="ov-int8", precision="int8", hooks=Hooks(build=build_ov_int8, preflight=_preflight, auto_variants=_auto_variants, **OV_HOOKS), options=OvInt8Options, auto=("x86",),
    needs_calibration=True, fallback_option="ignore",
    **{**OV_TARGET, "requires": ("openvino", "nncf")},
    description="OpenVINO IR quantised by NNCF PTQ (transformer model type for ViTs, SmoothQuant)"))
