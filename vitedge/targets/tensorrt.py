"""trt-fp32 / trt-fp16 / trt-int8: a TensorRT-ready ONNX, a lint, a build kit, and an engine
where TensorRT and a GPU exist.

TensorRT 11 networks are always strongly typed (and vitedge asks TensorRT 10 for the same), so
precision lives in the ONNX graph:
- trt-fp16: FP16 weights and tensors, with LayerNorm, Softmax, reductions and the other
  range-sensitive ops kept in FP32 (FP16 LayerNorm/Softmax overflow is the known TensorRT ViT
  failure) and FP32 inputs/outputs; converted by onnxconverter-common (the converter NVIDIA
  ModelOpt's own AutoCast builds on). ModelOpt itself was not used: its ONNX extra pins
  onnx~=1.21, onnxruntime-gpu~=1.24 and cupy-cuda12x, which cannot sit beside this CPU stack.
- trt-int8: explicit Q/DQ from ONNX Runtime's quantiser configured for TensorRT: symmetric int8
  (zero point 0), weights per output channel, activations per tensor, Q/DQ only on the inputs of
  Conv / MatMul / Gemm (TensorRT fuses them), attention's Q.K^T / attn.V MatMuls and LayerNorm
  left in float, calibrated on the same calibration set as the CPU targets.

Without TensorRT and a GPU (as on this project's machines) the bundle is a *build kit*: the
ONNX, `kit.json`, `build_engine.py` + `engine.py` (tensorrt + numpy only), `trtexec.sh`,
`verify_engine.py` and the reference outputs, and parity is *predicted* on CPU by ONNX Runtime
with graph optimisations off (so Q/DQ math is computed exactly, not swapped for ORT's own int8
kernels). The report says so. With `require_engine` that situation is an error instead.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

from vitedge.errors import ExportError, MissingDependencyError, UsageError
from vitedge.kit_common import PROFILE_FILE, ship_profile
from vitedge.options import opt
from vitedge.targets.context import BuildContext
from vitedge.targets.ort_int8 import (
    CALIB_METHOD,
    CALIB_PERCENTILE,
    METHODS,
    OrtInt8Options,
    QdqRecipe,
    check_percentile,
    diagnose_qdq,
    quantize_qdq,
)
from vitedge.targets.registry import Artifact, Hooks, Target, register_target
from vitedge.trt_kit.engine import BuildConfig, TensorRTUnavailable
from vitedge.verify.tolerances import tolerance_for

_BUILD = BuildConfig  # the build kit's defaults, written once in trt_kit.engine


@dataclass(frozen=True)
class TrtOptions:
    """TensorRT engine-build settings (written into the kit) and the INT8 Q/DQ calibration."""

    prefix: ClassVar[str] = "trt"
    min_batch: int = opt(_BUILD.min_batch, "optimisation profile: smallest batch")
    opt_batch: int = opt(_BUILD.opt_batch, "optimisation profile: batch to optimise for")
    max_batch: int = opt(_BUILD.max_batch, "optimisation profile: largest batch")
    workspace_mb: int = opt(_BUILD.workspace_mb, "builder workspace limit (MiB)")
    opt_level: int = opt(_BUILD.optimization_level, "builder optimisation level 0-5")
    version_compatible: bool = opt(_BUILD.version_compatible, "version-compatible engine")
    hardware_compatible: bool = opt(_BUILD.hardware_compatible, "Ampere+ hardware-compatible engine")
    major: str = opt("10", "TensorRT major version the lint checks against", choices=("10", "11"))
    require_engine: bool = opt(False, "fail (exit 5) when no engine can be built here instead of writing a kit")
    calib_method: str = opt(CALIB_METHOD, "trt-int8 activation calibration", choices=METHODS)
    calib_percentile: float = opt(CALIB_PERCENTILE, "percentile for --trt-calib-method percentile (90-100)")
    exclude: tuple[str, ...] = opt((), "trt-int8: ONNX node names kept in float (the accuracy fallback adds to it)")
    fp32_nodes: tuple[str, ...] = opt((), "trt-fp16: ONNX node names kept in FP32 (the accuracy fallback adds to it)")

    def __post_init__(self) -> None:
        # Checked here, under this target's flag: left to OrtInt8Options, a bad value failed
        # mid-build naming --ort-calib-percentile.
        check_percentile(self.calib_percentile, "--trt-calib-percentile")


KIT_FILES = ("engine.py", "build_engine.py", "verify_engine.py")
DEVICE_PROFILE_COMMAND = "python verify_engine.py"  # run in the kit on the GPU machine
PREDICTED_BY = "ONNX Runtime with graph optimisations off"


def to_fp16(src: Path, dst: Path, ctx: BuildContext) -> dict[str, Any]:
    import onnx
    from onnxconverter_common import float16

    from vitedge.export.metadata import set_metadata
    from vitedge.export.onnx_export import save_onnx
    from vitedge.models.family import recipe_for
    from vitedge.quiet import quiet

    # Ops kept in FP32 in the FP16 graph (normalisation statistics, softmax, reductions and the
    # pointwise ops that compute them): the model family's recipe.
    fp32_ops = list(recipe_for(ctx.loaded.card.family).fp16_fp32_op_types)
    model = onnx.load(str(src))
    # The export's value_info (shapes/types of intermediate tensors) is stale for the converter:
    # it re-types a blocked op's output from it and leaves a float tensor declared float16 (ORT
    # refuses the graph: ResNet's global-pool ReduceMean, found by benchmarks/zoo.py). Without it
    # the converter derives the types itself; the graph is re-checked when it is loaded.
    del model.graph.value_info[:]
    fp32_nodes = list(ctx.options.fp32_nodes)  # accuracy-aware fallback keeps these FP32
    with quiet():  # one warning per weight below fp16's normal range
        fp16 = float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=fp32_ops,
                                                node_block_list=fp32_nodes or None,
                                                min_positive_val=1e-7, max_finite_val=65504.0)
    set_metadata(fp16, ctx.loaded.card, {"vitedge.target": "trt-fp16", "vitedge.precision": "fp16"})
    save_onnx(fp16, dst)
    kept = sorted({n.op_type for n in fp16.graph.node if n.op_type in fp32_ops})
    casts = sum(1 for n in fp16.graph.node if n.op_type == "Cast")
    return {"converter": "onnxconverter-common float16 (keep_io_types)", "fp32_ops": kept, "casts": casts,
            "fp32_nodes": fp32_nodes}


def _feed_float_to_other_consumers(model: Any, compute_ops: tuple[str, ...]) -> int:
    """Q/DQ only on the inputs of compute ops: any other consumer of a DequantizeLinear output
    (ORT rewires them all, e.g. the Shape reading the network input for the dynamic batch) gets
    the float tensor the matching QuantizeLinear read. Returns the number of rewired inputs."""
    q_input = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    dq_float = {n.output[0]: q_input[n.input[0]] for n in model.graph.node
                if n.op_type == "DequantizeLinear" and n.input[0] in q_input}
    rewired = 0
    for node in model.graph.node:
        if node.op_type in compute_ops or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for i, name in enumerate(node.input):
            if name in dq_float:
                node.input[i] = dq_float[name]
                rewired += 1
    return rewired


def to_qdq(src: Path, dst: Path, ctx: BuildContext) -> dict[str, Any]:
    import onnx

    from vitedge.export.metadata import update_onnx_metadata

    o: TrtOptions = ctx.options
    # TensorRT's placement: symmetric int8 (zero point 0), full-range per-channel weights.
    cfg = OrtInt8Options(calib_method=o.calib_method, calib_percentile=o.calib_percentile, activations="int8",
                         symmetric_activations=True, reduce_range=False, per_channel=True, exclude=o.exclude,
                         weights="int8")  # TensorRT takes symmetric int8 weights only
    details = quantize_qdq(src, dst, ctx, cfg, QdqRecipe(quantize_outputs=False, target="trt-int8"))
    model = onnx.load(str(dst))
    details["rewired_to_float"] = _feed_float_to_other_consumers(model, cfg.op_types)
    model.metadata_props.add(key="vitedge.qdq_placement", value="inputs of Conv/MatMul/Gemm only")
    onnx.save(model, str(dst))
    update_onnx_metadata(dst, {"vitedge.target": "trt-int8"})
    details["quantizer"] = "onnxruntime quantize_static, QDQ for TensorRT (symmetric int8, Q/DQ on op inputs)"
    return details


def _write_kit(ctx: BuildContext, onnx_file: str, cfg: BuildConfig, precision: str) -> list[str]:
    kit_src = resources.files("vitedge.trt_kit")
    for name in KIT_FILES:
        (ctx.bundle_dir / name).write_text((kit_src / name).read_text())
    ship_profile(ctx.bundle_dir)
    tol = tolerance_for(precision, untrained=ctx.loaded.card.untrained)
    kit = {
        "onnx": onnx_file, "precision": precision, "input_name": "input", "output_name": "logits",
        "build": {**asdict(cfg), "input_shape": list(cfg.input_shape)},
        # The kit checks a handful of fixed inputs: per-sample limits only (no agreement rate).
        "tolerance": {"max_abs": tol.max_abs, "cosine_min": tol.cosine_min, "top1_agreement": None},
        "model": {"arch": ctx.loaded.card.arch, "classes": list(ctx.loaded.card.classes),
                  "preprocess": ctx.loaded.card.preprocess.to_dict()},
        "calibration": ctx.calibration.provenance() if ctx.calibration is not None and precision == "int8" else None,
    }
    (ctx.bundle_dir / "kit.json").write_text(json.dumps(kit, indent=2) + "\n")
    (ctx.bundle_dir / "trtexec.sh").write_text(
        "#!/bin/sh\n# The same engine build with NVIDIA's trtexec (TensorRT 10.12+ / 11.x).\n"
        "cd \"$(dirname \"$0\")\"\nexec " + cfg.trtexec_command(onnx_file, "model.engine") + " \"$@\"\n")
    (ctx.bundle_dir / "trtexec.sh").chmod(0o755)
    (ctx.bundle_dir / "KIT.md").write_text(_kit_readme(onnx_file, cfg, precision))
    return [*KIT_FILES, PROFILE_FILE, "kit.json", "trtexec.sh", "KIT.md"]


def _kit_readme(onnx_file: str, cfg: BuildConfig, precision: str) -> str:
    return f"""# TensorRT build kit ({precision})

Engines are specific to the GPU and TensorRT version they are built with, so build on the device.

1. Copy this directory to the GPU machine (Jetson, workstation, server).
2. `pip install tensorrt cuda-python numpy` (or use JetPack / an NVIDIA container).
3. `python build_engine.py` (or `./trtexec.sh`) -> `model.engine`, `model.json`, `timing.cache`.
   Dynamic batch {cfg.min_batch}..{cfg.max_batch} (optimised for {cfg.opt_batch}); change with
   `--min-batch/--opt-batch/--max-batch`. Strongly typed: the precision is in `{onnx_file}`.
4. `python verify_engine.py` compares the engine with the PyTorch reference outputs in
   `reference.npz` (exit 4 on mismatch) and prints host latency and GPU compute time.
   With vitedge installed, `vitedge verify .` and `vitedge bench model.engine` work too.
   It also measures what the report could not here: `device_profile` (vitedge's memory / load /
   first-inference / p50-p90-p99 fields, plus the GPU memory the load took) and `throughput`
   (images/s, batch 1/4/8 x 1-2 execution contexts; `--no-throughput` skips it).
"""


def build_config(ctx: BuildContext, precision: str) -> BuildConfig:
    h, w = ctx.loaded.card.preprocess.input_size
    o: TrtOptions = ctx.options
    static = ctx.export.static_batch
    cfg = BuildConfig(
        input_shape=(3, h, w), min_batch=static or o.min_batch, opt_batch=static or o.opt_batch,
        max_batch=static or o.max_batch, workspace_mb=o.workspace_mb, optimization_level=o.opt_level,
        version_compatible=o.version_compatible, hardware_compatible=o.hardware_compatible,
        tf32=precision != "fp32",  # an fp32 engine must not silently compute matmuls in TF32
    )
    try:
        cfg.validate()
    except ValueError as e:
        raise UsageError(f"TensorRT build settings: {e}") from None
    return cfg


def _build(ctx: BuildContext, precision: str) -> Artifact:
    from vitedge.export.metadata import update_onnx_metadata
    from vitedge.lint.tensorrt import errors, lint_file
    from vitedge.trt_kit.engine import build_engine

    src = ctx.require_onnx()
    o: TrtOptions = ctx.options
    cfg = build_config(ctx, precision)
    names = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.qdq.onnx"}
    onnx_file = ctx.bundle_dir / names[precision]
    if precision == "fp32":
        shutil.copy2(src.path, onnx_file)
        data = src.path.with_name(src.path.name + ".data")
        if data.exists():
            shutil.copy2(data, ctx.bundle_dir / data.name)
        update_onnx_metadata(onnx_file, {"vitedge.target": "trt-fp32", "vitedge.precision": "fp32"})
        details: dict[str, Any] = {}
    elif precision == "fp16":
        details = to_fp16(src.path, onnx_file, ctx)
    else:
        details = to_qdq(src.path, onnx_file, ctx)

    findings = lint_file(onnx_file, o.major)
    bad = errors(findings)
    if bad:
        raise ExportError(f"the TensorRT-ready ONNX fails the TensorRT lint ({len(bad)} error(s)); first: "
                          f"{bad[0].node} ({bad[0].op}): {bad[0].message}")
    details["lint"] = {"tensorrt": o.major, "errors": 0,
                       "warnings": [f"{f.node} ({f.op}): {f.message}" for f in findings if f.level == "warning"]}
    details["trtexec"] = cfg.trtexec_command(onnx_file.name, "model.engine")
    files = ctx.files_of(onnx_file)
    kit_files = _write_kit(ctx, onnx_file.name, cfg, precision)

    why_not = why_no_engine()
    if why_not is None:
        facts = build_engine(onnx_file, ctx.bundle_dir / "model.engine", cfg)
        details["engine"] = facts
        return Artifact("model.engine", ["model.engine", "model.json", *files], "tensorrt", {},
                        details=details | {"kit_files": kit_files})
    if o.require_engine:
        raise MissingDependencyError(f"--require-engine: the TensorRT engine cannot be built here ({why_not}); "
                                     "the build kit is ready but was not kept")
    details["engine"] = None
    details["kit_files"] = kit_files
    details["device_profile_command"] = DEVICE_PROFILE_COMMAND  # report.json/md name it (no engine here)
    return Artifact(
        onnx_file.name, files, "onnxruntime", {"graph_optimization": "disable"}, details=details,
        predicted_by=PREDICTED_BY,
        notes=[f"engine not built here ({why_not}); copy the bundle to the GPU machine and run "
               "build_engine.py then verify_engine.py (see KIT.md), which also measures the device "
               "profile (memory, load, first inference) and throughput that were NOT measured here"],
    )


def why_no_engine() -> str | None:
    """None when an engine can be built and run here, else the reason."""
    from vitedge.trt_kit.engine import gpu_available

    try:
        from vitedge.trt_kit.engine import require_tensorrt

        require_tensorrt()
    except TensorRTUnavailable as e:
        return str(e).split(";")[0]
    return gpu_available()


def build_trt_fp32(ctx: BuildContext) -> Artifact:
    return _build(ctx, "fp32")


def build_trt_fp16(ctx: BuildContext) -> Artifact:
    return _build(ctx, "fp16")


def build_trt_int8(ctx: BuildContext) -> Artifact:
    return _build(ctx, "int8")


def preflight(options: TrtOptions, budget: Any) -> None:
    """--trt-require-engine fails before any work: CI jobs asking for an engine want to know at once."""
    if options.require_engine:
        reason = why_no_engine()
        if reason:
            raise MissingDependencyError(f"--trt-require-engine: no TensorRT engine can be built here ({reason})")




def _diagnose_graph(*args, **kwargs):  # type: ignore[no-untyped-def]
    from vitedge.diagnose.readers import diagnose_onnx_graph

    return diagnose_onnx_graph(*args, **kwargs)


_DESC = {"fp32": "fp32 ONNX for a strongly typed engine (TF32 off)",
         "fp16": "mixed FP16 ONNX (LayerNorm/Softmax/reductions and I/O kept FP32)",
         "int8": "explicit symmetric Q/DQ ONNX (TensorRT placement), calibrated"}
for _precision, _build_fn, _fallback, _diag in (
        ("fp32", build_trt_fp32, None, _diagnose_graph),
        ("fp16", build_trt_fp16, "fp32_nodes", _diagnose_graph),
        ("int8", build_trt_int8, "exclude", diagnose_qdq)):
    register_target(Target(
        name=f"trt-{_precision}", runtime="onnxruntime", precision=_precision, kit=True,
        needs_calibration=_precision == "int8", hooks=Hooks(build=_build_fn, diagnose=_diag, preflight=preflight), options=TrtOptions, extra="ort",
        requires=("onnxruntime",), fallback_option=_fallback,
        description=f"TensorRT: {_DESC[_precision]}; engine built where TensorRT + GPU exist, else a build kit "
                    "with parity predicted on CPU"))
