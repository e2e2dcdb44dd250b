"""OpenVINO targets: ov-fp32, ov-fp16 (FP16-compressed weights) and ov-int8 (NNCF PTQ).

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
from typing import Any

import numpy as np

from vitedge import interrupts
from vitedge.calib.source import nncf_dataset
from vitedge.errors import ExportError, UsageError
from vitedge.quiet import quiet
from vitedge.runtimes import sigstack
from vitedge.sysinfo import cpu_flags
from vitedge.targets.context import BuildContext
from vitedge.targets.registry import Artifact

MODEL_FILE = "model.xml"


def native_fp16_cpu() -> bool:
    return any(f in cpu_flags() for f in ("avx512_fp16", "amx_fp16"))


def convert(ctx: BuildContext) -> tuple[Any, str]:
    """The float ov.Model, from the ONNX export or directly from the PyTorch module."""
    import openvino as ov

    source = ctx.option("ov_source", "onnx")
    if source == "onnx":
        assert ctx.onnx is not None
        return ov.convert_model(str(ctx.onnx.path)), "onnx"
    if source == "torch":
        import torch

        h, w = ctx.loaded.card.preprocess.input_size
        with quiet():
            model = ov.convert_model(ctx.loaded.module, example_input=torch.zeros(1, 3, h, w),
                                     input=[-1, 3, h, w])
        # The torch frontend names the input after forward()'s argument; use the shared name.
        model.inputs[0].get_tensor().set_names({"input"})
        model.outputs[0].get_tensor().set_names({"logits"})
        return model, "torch (TorchScript frontend)"
    raise UsageError(f"--ov-source must be onnx or torch, got {source!r}")


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


@dataclass(frozen=True)
class NncfConfig:
    preset: str | None = None  # mixed | performance; None: mixed for transformers, else performance
    subset_size: int | None = None  # default: every calibration sample
    fast_bias_correction: bool = True
    smooth_quant: float | None = None  # SmoothQuant alpha for MatMuls; -1 off; None NNCF default
    transformer: bool | None = None  # None: True for ViT/DeiT, False for ConvNeXt
    ignore: tuple[str, ...] = ()  # OpenVINO friendly names kept in float
    ignore_types: tuple[str, ...] = ()  # OpenVINO op types kept in float

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> NncfConfig:
        return cls(
            preset=options.get("ov_preset"), subset_size=options.get("ov_subset_size"),
            fast_bias_correction=options.get("ov_fast_bias_correction", True),
            smooth_quant=options.get("ov_smooth_quant"), transformer=options.get("ov_transformer"),
            ignore=tuple(options.get("ignore", ())), ignore_types=tuple(options.get("ov_ignore_types", ())),
        )


def nncf_quantize(model: Any, ctx: BuildContext, cfg: NncfConfig) -> tuple[Any, dict[str, Any]]:
    import nncf
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
    )

    transformer = cfg.transformer if cfg.transformer is not None else ctx.loaded.card.family == "vit"
    kwargs: dict[str, Any] = {
        "subset_size": cfg.subset_size or len(ctx.calibration),
        "fast_bias_correction": cfg.fast_bias_correction,
        "target_device": nncf.TargetDevice.CPU,
    }
    if transformer:
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    if cfg.preset is not None:
        if cfg.preset not in ("mixed", "performance"):
            raise UsageError("--ov-preset must be mixed or performance")
        kwargs["preset"] = {"mixed": nncf.QuantizationPreset.MIXED,
                            "performance": nncf.QuantizationPreset.PERFORMANCE}[cfg.preset]
    if cfg.smooth_quant is not None:
        kwargs["advanced_parameters"] = AdvancedQuantizationParameters(
            smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=cfg.smooth_quant))
    if cfg.ignore or cfg.ignore_types:
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=list(cfg.ignore), types=list(cfg.ignore_types))
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
        **{k: v for k, v in asdict(cfg).items() if k != "transformer"},
        "subset_size": kwargs["subset_size"],
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


def nncf_accuracy_control(model: Any, ctx: BuildContext, cfg: NncfConfig) -> tuple[Any, dict[str, Any]]:
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

    transformer = cfg.transformer if cfg.transformer is not None else ctx.loaded.card.family == "vit"
    kwargs: dict[str, Any] = {"subset_size": cfg.subset_size or len(ctx.calibration),
                              "fast_bias_correction": cfg.fast_bias_correction,
                              "max_drop": budget.max_drop / 100.0, "drop_type": nncf.DropType.ABSOLUTE,
                              "advanced_quantization_parameters": AdvancedQuantizationParameters(
                                  smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=-1)),
                              "advanced_accuracy_restorer_parameters": AdvancedAccuracyRestorerParameters(
                                  num_ranking_workers=1)}
    if transformer:
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    if cfg.ignore:
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=list(cfg.ignore))
    float_ops_before = set(float_ops(model))
    with quiet(), sigstack.preserved():  # NNCF compiles models internally; see runtimes.sigstack
        quantized = nncf.quantize_with_accuracy_control(
            model, nncf_dataset(ctx.calibration, input_name), nncf.Dataset(samples), validate, **kwargs)
    _, int8_ops = quantization_report(quantized)
    kept = sorted(float_ops_before - set(int8_ops))
    return quantized, {"accuracy_control": {"method": f"nncf.quantize_with_accuracy_control {nncf.__version__}",
                                            "budget_text": budget.describe(), "kept_high_precision": kept,
                                            "kept_count": len(kept), "search_data": search.description}}


def build_ov_int8(ctx: BuildContext) -> Artifact:
    model, source = convert(ctx)
    cfg = NncfConfig.from_options(ctx.options)
    if ctx.option("ov_accuracy_control", False):
        quantized, ac = nncf_accuracy_control(model, ctx, cfg)
        files = _save(ctx, quantized, compress_to_fp16=False)
        return Artifact(MODEL_FILE, files, "openvino", {"inference_precision": "f32"},
                        details={"converted_from": source, **ac, "calibration": ctx.calibration.provenance()})
    quantized, details = nncf_quantize(model, ctx, cfg)
    files = _save(ctx, quantized, compress_to_fp16=False)
    return Artifact(MODEL_FILE, files, "openvino", {"inference_precision": "f32"},
                    details={"converted_from": source, **details,
                             "inference_precision": "f32 for the float parts"})
