"""ort-int8: ONNX Runtime static quantisation to a QDQ graph, calibrated on the calibration set.

Recipe (ViT-aware):
- ORT's own pre-processing step first (`quant_pre_process`: symbolic shape inference + basic
  optimisation), as ORT recommends before `quantize_static`.
- Only MatMul / Gemm / Conv are quantised, weights per output channel (int8, symmetric),
  activations per tensor. Relu and Clip are handed to the quantiser too (REMOVABLE), so that it
  folds a Conv's ReLU/ReLU6 into the Conv's output quantiser (ORT's QDQRemovableActivation)
  instead of quantising the Conv output over its pre-activation range: measured on the real
  ImageNet EfficientNet-Lite0 (benchmarks/pretrained.py), SQNR 4.2 -> 19.4 dB, cosine mean
  0.844 -> 0.995 on real photos. LayerNorm, Softmax and GELU stay float. The two activation x activation
  MatMuls inside attention (Q.K^T and attn.V) also stay float unless asked otherwise: ORT's
  `MatMulConstBOnly` option is ignored for QDQ, so vitedge excludes them by name.
- The CPU trap: a QDQ graph runs as fused int8 kernels at ORT's default optimisation level.
  On x86 CPUs without VNNI those kernels multiply u8 x s8 with `vpmaddubsw`, whose int16
  pair sums saturate, silently losing accuracy (a measured 0.94 vs 0.998 cosine on a tiny ViT).
  Signed activations do not help (x86 converts S8S8 to U8S8 internally). `reduce_range` (7-bit
  weights) is ORT's documented fix for per-channel models on CPUs without VNNI, but it costs
  accuracy where VNNI does the products exactly (measured, EfficientNet-Lite0 on real photos:
  13.6 dB with it, 19.4 dB without). So by default it follows the CPU the artifact is built and
  judged on: on where it lacks VNNI, off where it has it; the report and manifest record which.
  Build with `--ort-reduce-range` for a fleet that mixes VNNI and older x86 CPUs (and `vitedge
  verify` on the device re-checks parity either way). `--ort-weights uint8` (U8U8 kernels, ORT's
  other documented fix, which does not saturate) can do better on such CPUs: measured on an
  AVX2-only CPU, EfficientNet-Lite0 cosine mean 0.994 (U8U8) vs 0.974 (7-bit int8) vs 0.934 (int8). Parity is always measured with the fully
  optimised session that users run.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from vitedge import interrupts
from vitedge.errors import ExportError, UsageError
from vitedge.models.family import INT8_OP_TYPES
from vitedge.options import opt
from vitedge.targets.context import BuildContext
from vitedge.targets.onnx import embed_pixels
from vitedge.targets.registry import Artifact, Hooks, Target, register_target

METHODS = ("minmax", "percentile", "entropy")
# Activation calibration defaults, shared with trt-int8 (whose Q/DQ graph this target's code builds).
CALIB_METHOD, CALIB_PERCENTILE = "minmax", 99.999


def check_percentile(value: float, flag: str) -> None:
    if not 90.0 <= value <= 100.0:
        raise UsageError(f"{flag} {value:g} must be in [90, 100] (the percentile of activation magnitudes kept: {CALIB_PERCENTILE:g} clips the top {100 - CALIB_PERCENTILE:.3g}%)")


@dataclass(frozen=True)
class OrtInt8Options:
    """ONNX Runtime static quantisation settings (also the Q/DQ half of trt-int8)."""

    prefix: ClassVar[str] = "ort"
    calib_method: str = opt(CALIB_METHOD, "calibration method", choices=METHODS)
    calib_percentile: float = opt(CALIB_PERCENTILE, "percentile for --ort-calib-method percentile (90-100)")
    per_channel: bool = opt(True, "int8 weights per output channel")
    weights: str | None = opt(None, "weight type: int8 (U8S8 kernels; default) or uint8 (U8U8: no saturation "
                                    "on x86 without VNNI, where it can beat --ort-reduce-range)",
                              choices=("int8", "uint8"))
    reduce_range: bool | None = opt(None, "7-bit weights, for x86 CPUs without VNNI (u8s8 saturation; "
                                          "default: on only for int8 weights where this CPU lacks VNNI)")
    activations: str = opt("uint8", "activation type (x86 runs int8 as uint8 anyway)", choices=("uint8", "int8"))
    symmetric_activations: bool = opt(False, "symmetric activation ranges (zero point 0)")
    quantize_attention: bool = opt(False, "also quantise attention's Q.K^T and attn.V MatMuls")
    op_types: tuple[str, ...] = opt(INT8_OP_TYPES, "ONNX op types to quantise")
    exclude: tuple[str, ...] = opt((), "ONNX node names kept in float (ignored scope; the accuracy fallback adds to it)")
    quantize_head: bool = opt(False, "also quantise the classifier head (default float: see models.family)")

    def __post_init__(self) -> None:
        check_percentile(self.calib_percentile, "--ort-calib-percentile")


@dataclass(frozen=True)
class QdqRecipe:
    """How `quantize_qdq` places Q/DQ: ONNX Runtime's CPU kernels vs TensorRT's placement."""

    quantize_outputs: bool = True  # Q/DQ on op outputs too (ORT fuses QLinear*); False for TensorRT
    target: str = "ort-int8"  # written into the artifact's metadata


def activation_matmuls(model: Any) -> list[str]:
    """MatMul nodes whose inputs are both activations (attention's Q.K^T and attn.V)."""
    consts = {i.name for i in model.graph.initializer}
    consts |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in model.graph.node
            if n.op_type == "MatMul" and n.input[0] not in consts and n.input[1] not in consts]


def _entropy_cache(pre: Path, work: Path, reader: Any, op_types: list[str]) -> Path:
    """Entropy calibration with a useful histogram.

    `quantize_static` cannot set the histogram sizes, and its defaults (128 bins, 128
    quantised bins) leave the KL search a single candidate, i.e. exactly MinMax. Run ORT's
    calibrator with 2048 bins / 255 levels and hand the ranges over as a calibration cache.
    """
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator
    from onnxruntime.quantization.quantize import save_tensors_data  # type: ignore[attr-defined]

    calibrator = create_calibrator(
        str(pre), op_types, augmented_model_path=str(work / "augmented.onnx"),
        calibrate_method=CalibrationMethod.Entropy,
        extra_options={"num_bins": 2048, "num_quantized_bins": 255},
    )
    calibrator.collect_data(reader)
    cache = work / "entropy-ranges.json"
    save_tensors_data(calibrator.compute_data(), str(cache))
    return cache


def quantize_qdq(src: Path, dst: Path, ctx: BuildContext, cfg: OrtInt8Options,
                 recipe: QdqRecipe = QdqRecipe()) -> dict[str, Any]:
    """fp32 ONNX -> QDQ ONNX at `dst`. Returns facts for the report."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from vitedge.calib.source import ort_calibration_reader
    from vitedge.export.metadata import set_metadata
    from vitedge.models.family import onnx_head_nodes
    from vitedge.targets.ort_preprocess import pre_process

    pre = ctx.work_dir / PREPROCESSED
    pre_facts = pre_process(src, pre)  # with fallbacks when ORT's symbolic shape inference fails
    model = onnx.load(str(pre))
    excluded = [] if cfg.quantize_attention else activation_matmuls(model)
    unknown = [n for n in cfg.exclude if n not in {node.name for node in model.graph.node}]
    if unknown:
        raise UsageError(f"--ignore names unknown ONNX node(s) {unknown[:3]}; see `vitedge diagnose` for names")
    excluded += list(cfg.exclude)
    head = [] if cfg.quantize_head else [n for n in onnx_head_nodes(model) if n not in excluded]
    excluded += head
    reader = ort_calibration_reader(ctx.calibration, model.graph.input[0].name)
    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[cfg.calib_method]
    extra: dict[str, Any] = {"ActivationSymmetric": cfg.symmetric_activations, "WeightSymmetric": True}
    if not recipe.quantize_outputs:
        # TensorRT: Q/DQ on op inputs only, and biases stay float (its DequantizeLinear takes
        # int8/fp8/int4 inputs, not the int32 biases ORT would write).
        extra["OpTypesToExcludeOutputQuantization"] = list(cfg.op_types)
        extra["QuantizeBias"] = False
    cache = None
    reduce_range = reduce_range_for(cfg)
    op_types = list(cfg.op_types) + [t for t in REMOVABLE if recipe.quantize_outputs and t not in cfg.op_types]
    if cfg.calib_method == "percentile":
        # Two-sided percentile: ORT's default clips to a symmetric range of |x|.
        extra.update(CalibPercentile=cfg.calib_percentile, CalibTensorRangeSymmetric=cfg.symmetric_activations)
    elif cfg.calib_method == "entropy":
        with contextlib.redirect_stdout(io.StringIO()):
            cache = _entropy_cache(pre, ctx.work_dir, reader, list(cfg.op_types))
        reader = None
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # calibrators print progress to stdout
            quantize_static(
                str(pre), str(dst), reader, quant_format=QuantFormat.QDQ,
                op_types_to_quantize=op_types, per_channel=cfg.per_channel,
                reduce_range=reduce_range,
                activation_type=QuantType.QUInt8 if cfg.activations == "uint8" else QuantType.QInt8,
                weight_type=QuantType.QUInt8 if weight_type_for(cfg) == "uint8" else QuantType.QInt8,
                nodes_to_exclude=excluded, calibrate_method=method,
                extra_options=extra, calibration_cache_path=str(cache) if cache else None,
            )
    except Exception as e:
        interrupts.check()
        raise ExportError(f"ONNX Runtime quantisation failed: {type(e).__name__}: {str(e)[:300]}") from e
    qmodel = onnx.load(str(dst))
    targets = {n.name for n in model.graph.node if n.op_type in cfg.op_types}
    quantized = sorted(targets - set(excluded))
    set_metadata(qmodel, ctx.loaded.card, {"vitedge.target": recipe.target, "vitedge.precision": "int8",
                                           "vitedge.quantization": json.dumps(asdict(cfg), sort_keys=True)})
    onnx.save(qmodel, str(dst))
    return {"quantizer": "onnxruntime.quantization.quantize_static (QDQ)", **asdict(cfg),
            "reduce_range": reduce_range, "weights": weight_type_for(cfg), "folded_activations": [t for t in op_types if t in REMOVABLE],
            "quantize_outputs": recipe.quantize_outputs, "pre_process": pre_facts,
            "float_nodes": sorted(excluded), "float_head": head, "quantized_nodes": len(quantized),
            "calibration": ctx.calibration.provenance()}


# Activations the quantiser may fold into the preceding op's output quantiser (see the docstring).
REMOVABLE = ("Relu", "Clip")


def weight_type_for(cfg: OrtInt8Options) -> str:
    """The user's weight type, else int8. uint8 (U8U8, ORT's documented saturation-free format)
    is the better choice for some models on CPUs without VNNI (measured on an AVX2-only CPU,
    EfficientNet-Lite0 on real photos: cosine mean 0.994 with U8U8 vs 0.974 with 7-bit int8
    weights) but not for all: the outlier ViT of tests/test_fallback.py then misses its budget
    even after the fallback. Making it the default needs that understood first."""
    return cfg.weights or "int8"


def reduce_range_for(cfg: OrtInt8Options) -> bool:
    """The 7-bit-weight decision: the user's, else on only for int8 weights on a CPU without VNNI."""
    from vitedge.sysinfo import has_vnni

    if cfg.reduce_range is not None:
        return cfg.reduce_range
    return weight_type_for(cfg) == "int8" and not has_vnni()


PREPROCESSED = "model.pre.onnx"  # in the work dir: the fp32 graph exactly as the quantiser saw it


def build_ort_int8(ctx: BuildContext) -> Artifact:
    from vitedge.targets.ort_preprocess import describe

    dst = ctx.bundle_dir / "model.int8.onnx"
    details = quantize_qdq(ctx.require_onnx().path, dst, ctx, ctx.options)
    notes = ["parity measured with ONNX Runtime's default (fully optimised, fused int8) session"]
    if not details["reduce_range"] and details["weights"] == "int8":
        notes.append("8-bit weights for x86 CPUs with VNNI (as this one): for older x86 CPUs rebuild with "
                     "--ort-weights uint8 or --ort-reduce-range (their u8 x s8 kernels saturate otherwise)")
    notes += [n for n in [describe(details["pre_process"])] if n]
    return Artifact(
        main_file=dst.name, files=[dst.name], runtime="onnxruntime",
        runner_options={"graph_optimization": "all"}, details=details, notes=notes,
    )


def diagnose_qdq(fp32_onnx: Path, artifact_file: Path, x: Any, work: Path) -> Any:
    """A Q/DQ ONNX artifact vs the fp32 graph exactly as ORT's quantiser saw it (same tensor
    names): the pre-processed graph the build left in `work`, or a fresh one."""
    import onnx

    from vitedge.diagnose.onnx_layers import diagnose_onnx
    from vitedge.targets.ort_preprocess import pre_process

    ref_path = work / PREPROCESSED
    if not ref_path.exists():
        pre_process(fp32_onnx, ref_path)
    return diagnose_onnx(onnx.load(str(ref_path)), onnx.load(str(artifact_file)), x, artifact_file.name)


register_target(Target(
    name="ort-int8", runtime="onnxruntime", precision="int8", needs_calibration=True,
    description="QDQ ONNX by ONNX Runtime static quantisation (per-channel, ViT-aware op selection)",
    hooks=Hooks(build=build_ort_int8, diagnose=diagnose_qdq, embed=embed_pixels), options=OrtInt8Options, extra="ort", requires=("onnxruntime",),
    fallback_option="exclude", auto=("x86",), dynamic_size=True))
