"""litert-fp32 / litert-fp16 / litert-int8: LiteRT (TensorFlow Lite's successor) `.tflite` files
converted from the nn.Module by litert-torch (the renamed ai-edge-torch), run by the LiteRT
interpreter with the XNNPACK delegate (vitedge.runtimes.litert_runner; numpy + ai-edge-litert
on the device, no torch, no TensorFlow).

- fp32: `litert_torch.convert(module, (x,))`, which exports with torch.export and lowers through
  StableHLO to TFLite ops. Inputs stay NCHW (as the module takes them).
- int8: the converter's documented static path for non-generative models, PT2E: litert-torch's
  `PT2EQuantizer` with `get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)`
  (int8 symmetric per-channel weights, int8 per-tensor activations from HistogramObserver),
  `prepare_pt2e` -> calibration on ctx.calibration (the calibration source every INT8 target
  uses) -> `convert_pt2e(fold_quantize=False)` -> `convert(..., quant_config=QuantConfig(
  pt2e_quantizer=...))`, which turns the Q/DQ pairs into TFLite int8 kernels. The result is a
  full-integer model: its interface is int8 too (the runner quantises/dequantises with the
  tensors' own scale and zero point).
- fp16: the fp32 model with fp16 weights, made by ai-edge-quantizer's documented weight-only
  FLOAT_CASTING recipe (16-bit float weights of FULLY_CONNECTED / CONV_2D behind DEQUANTIZE ops).
  XNNPACK folds those into its kernels: half the file size; compute stays fp32 on x86 and is fp16
  only where the device's XNNPACK runs fp16 inference.

Batch is static (ctx.export.static_batch or 1): litert-torch 0.10 cannot lower either built-in
with a symbolic batch (its JAX bridge needs concrete `view` / `linear` shapes; `use_v2` fails the
same way), and the interpreter cannot resize the converted graph (XNNPACK's reshape fails). Calibration itself runs
on a dynamic-batch export so the observers see `calib_batch` images per call.

Op coverage (which ops XNNPACK takes vs which stay on TFLite's own kernels) is measured with the
interpreter on the written file and reported in `details["ops"]`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from vitedge import interrupts
from vitedge.diagnose.readers import diagnose_pt2e
from vitedge.errors import ExportError, UsageError
from vitedge.options import opt
from vitedge.targets.context import BuildContext
from vitedge.targets.pt2e_fuse import large_depthwise, large_depthwise_note
from vitedge.targets.registry import Artifact, Hooks, Target, register_target

MODEL_FILE = "model.tflite"
DELEGATES = ("xnnpack", "none")


@dataclass(frozen=True)
class LiteRTOptions:
    """litert-torch conversion and PT2E quantisation settings."""

    prefix: ClassVar[str] = "litert"
    delegate: str = opt("xnnpack", "delegate the runner applies (none: TFLite's builtin kernels only)",
                        choices=DELEGATES)
    per_channel: bool = opt(True, "litert-int8: int8 weights per output channel (per tensor otherwise)")
    calib_batch: int = opt(16, "litert-int8: images per calibration step (observer cost is per call)")
    # True here, unlike the other INT8 recipes: litert-int8 is a *full-integer* model (int8 in,
    # int8 out), the form NPU delegates (Edge TPU, Hexagon, NNAPI) take whole; a float head would
    # fall back to the CPU and make the output float. --no-litert-quantize-head keeps it float.
    quantize_head: bool = opt(True, "int8: quantise the classifier head too (full-integer model)")
    keep_float: tuple[str, ...] = opt(
        (), "litert-int8: PyTorch module names (e.g. blocks.5.mlp) whose ops stay float, submodules included",
        hidden=True)
    # Off here, on for et-int8: litert-int8 stays full-integer by default (see quantize_head).
    float_depthwise: bool = opt(False, "litert-int8: keep depthwise convs larger than 5x5 float (XNNPACK's "
                                       "int8 kernel for them is slower; the model is then not full-integer)")

    def __post_init__(self) -> None:
        if self.calib_batch < 1:
            raise UsageError("--litert-calib-batch must be >= 1")


@contextlib.contextmanager
def _converter_quiet() -> Iterator[None]:
    """litert-torch prints a progress tree through rich unless LITERT_TORCH_SHOW_PROGRESS is off,
    and ai-edge-quantizer prints tqdm bars and a size summary; silence both for this call only."""
    from vitedge.quiet import native_stderr, quiet

    old = os.environ.get("LITERT_TORCH_SHOW_PROGRESS")
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "n"  # read at every task() call
    root = logging.getLogger()
    level = root.level
    # The converter warns on the root logger that a PT2E-converted model "is in training mode"
    # (it cannot see move_exported_model_to_eval); nothing for the user to act on.
    root.setLevel(logging.ERROR)
    try:
        with quiet(), contextlib.redirect_stderr(io.StringIO()), native_stderr():
            yield
    finally:
        root.setLevel(level)
        if old is None:
            os.environ.pop("LITERT_TORCH_SHOW_PROGRESS", None)
        else:
            os.environ["LITERT_TORCH_SHOW_PROGRESS"] = old


def _fail(stage: str, e: Exception, hint: str) -> ExportError:
    interrupts.check()
    first = (str(e).strip().splitlines() or [""])[0][:300]
    return ExportError(f"litert: {stage} failed: {type(e).__name__}: {first}; {hint}")


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("litert-torch", "ai-edge-litert", "ai-edge-quantizer", "torchao"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


def _convert(module: Any, x: Any, out: Path, quant_config: Any = None) -> float:
    t0 = time.perf_counter()
    try:
        with _converter_quiet():
            import litert_torch

            edge = litert_torch.convert(module, (x,), quant_config=quant_config)
            edge.export(str(out))
    except interrupts.Interrupted:
        raise
    except Exception as e:
        raise _fail("litert_torch.convert", e, "try another target (onnx-fp32, ort-int8) or report the op "
                    "named above to litert-torch") from e
    return time.perf_counter() - t0


def _finish(ctx: BuildContext, precision: str, details: dict[str, Any], notes: list[str]) -> Artifact:
    from vitedge.runtimes.litert_runner import op_counts, op_coverage

    path = ctx.bundle_dir / MODEL_FILE
    opts: LiteRTOptions = ctx.options
    try:
        coverage = op_coverage(path, threads=max(1, ctx.threads))
        counts = op_counts(path)
    except Exception as e:
        raise _fail("loading the .tflite in the LiteRT interpreter", e, "the converter wrote a file the "
                    "interpreter rejects; try another target") from e
    if coverage["ops_not_delegated"]:
        left = ", ".join(f"{k} x{v}" for k, v in coverage["not_delegated"].items())
        notes.append(f"XNNPACK does not take {coverage['ops_not_delegated']} of {coverage['ops_total']} ops "
                     f"({left}); they run on TFLite's builtin kernels, splitting the graph into "
                     f"{coverage['xnnpack_partitions']} XNNPACK partitions")
    batch = ctx.export.static_batch or 1
    details = {"converter": "litert_torch.convert", "precision": precision, "static_batch": batch,
               "input_layout": "NHWC uint8 pixels" if ctx.pixels else "NCHW", "ops": coverage, "op_counts": counts, **details,
               "versions": _versions()}
    notes.append(f"static batch {batch}: litert-torch 0.10 does not lower a symbolic batch dimension (its JAX "
                 f"bridge needs concrete view/linear shapes); callers pad to {batch}")
    return Artifact(MODEL_FILE, ctx.files_of(path), "litert", {"delegate": opts.delegate}, details=details,
                    notes=notes)


def build_litert_fp32(ctx: BuildContext) -> Artifact:
    secs = _convert(ctx.module(), ctx.example_input(), ctx.bundle_dir / MODEL_FILE)
    return _finish(ctx, "fp32", {"convert_s": round(secs, 1)}, [])


def _fp16_recipe() -> Any:
    from ai_edge_quantizer import qtyping, recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    rm = recipe_manager.RecipeManager()
    rm.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
                              algorithm_key=AlgorithmName.FLOAT_CASTING)
    return rm.get_quantization_recipe()


def build_litert_fp16(ctx: BuildContext) -> Artifact:
    fp32 = ctx.work_dir / "fp32.tflite"
    secs = _convert(ctx.module(), ctx.example_input(), fp32)
    try:
        with _converter_quiet():
            from ai_edge_quantizer import quantizer

            result = quantizer.Quantizer(fp32.read_bytes(), _fp16_recipe()).quantize()
            (ctx.bundle_dir / MODEL_FILE).write_bytes(bytes(result.quantized_model))
    except interrupts.Interrupted:
        raise
    except Exception as e:
        raise _fail("ai-edge-quantizer fp16 weight casting", e, "use litert-fp32") from e
    details = {"convert_s": round(secs, 1), "quantizer": "ai-edge-quantizer weight-only FLOAT_CASTING (fp16)",
               "weights": "fp16 (FULLY_CONNECTED / CONV_2D), dequantised to fp32 at load by XNNPACK",
               "compute": "fp32 on x86; fp16 only where the device's XNNPACK enables fp16 inference"}
    return _finish(ctx, "fp16", details, [])


def _module_fqns(node: Any) -> list[str]:
    # torch.export's nn_module_stack: {key: (fully qualified name, type name)}, outermost first.
    return [v[0] for v in (node.meta.get("nn_module_stack") or {}).values()]


def _float_only(node: Any) -> bool:
    """Whether an op and its node inputs are all float tensors. The quantiser's add/mul patterns
    otherwise also annotate integer arithmetic (BEiT's relative-position index: its histogram
    observer fails with "histogram_cpu not implemented for 'Long'") and ops fed a symbolic
    size (Swin's window partition: "'int' object has no attribute 'numel'"), and ops reading an
    integer constant (SwinV2's relative-position index: "histogram_cpu ... 'Long'" again)."""
    import torch

    inputs: list[Any] = []
    torch.fx.node.map_arg((node.args, node.kwargs), inputs.append)  # nested lists too (cat, index)
    for n in (node, *inputs):
        val = n.meta.get("val")
        if val is None and n.op == "get_attr":  # a constant torch.export lifted (SwinV2's int64
            val = _attr(n)                      # relative-position index): no "val" in its meta
        if val is not None and not (isinstance(val, torch.Tensor) and val.is_floating_point()):
            return False
    return True


def _attr(node: Any) -> Any:
    obj = node.graph.owning_module
    for part in str(node.target).split("."):
        obj = getattr(obj, part, None)
    return obj


def make_quantizer(per_channel: bool, keep_float: tuple[str, ...]) -> Any:
    """litert-torch's PT2EQuantizer, global static int8 config, ops of `keep_float` modules left
    unannotated (float). Its own `set_module_name(name, None)` asserts "not supported yet", and
    its name filter expects the `L__self___a_b` stack keys of older torch versions (torch 2.14
    writes `L__self__a.b`), so the kept modules are matched here on the stack's FQNs instead."""
    from litert_torch.quantize.pt2e_quantizer import (
        PT2EQuantizer,
        get_symmetric_quantization_config,
    )

    keep = tuple(keep_float)

    def quantize_node(node: Any) -> bool:
        if not _float_only(node):
            return False
        return not any(f == k or f.startswith(k + ".") for f in _module_fqns(node) for k in keep)

    from litert_torch.quantize.pt2e_quantizer_utils import (
        get_bias_qspec,
        get_input_act_qspec,
        get_output_act_qspec,
        get_weight_qspec,
    )

    from vitedge.targets.pt2e_fuse import annotate_conv_clamp

    class KeepFloatPT2EQuantizer(PT2EQuantizer):
        def _annotate_for_static_quantization_config(self, model: Any) -> Any:
            # Conv + ReLU6 as one op first (the quantiser fuses only Conv + ReLU): targets.pt2e_fuse
            annotate_conv_clamp(model, self.global_config, (get_input_act_qspec, get_weight_qspec, get_bias_qspec,
                                                            get_output_act_qspec), quantize_node)
            self._annotate_all_static_patterns(model, self.global_config, quantize_node)
            return model

    config = get_symmetric_quantization_config(is_per_channel=per_channel, is_qat=False, is_dynamic=False)
    return KeepFloatPT2EQuantizer().set_global(config)


def build_litert_int8(ctx: BuildContext) -> Artifact:
    import torch

    opts: LiteRTOptions = ctx.options
    if ctx.calibration is None:
        raise UsageError("litert-int8 needs calibration data (--calib)")
    module = ctx.network()
    ctx.check_module_names(opts.keep_float, "--litert-keep-float")
    keep = ctx.float_modules(opts.keep_float, opts.quantize_head)
    large = large_depthwise(module)
    if opts.float_depthwise:
        keep += tuple(n for n in large if n not in keep)
    x = ctx.example_input()
    t0 = time.perf_counter()
    try:
        with _converter_quiet():
            from litert_torch.quantize.quant_config import QuantConfig
            from torchao.quantization.pt2e import move_exported_model_to_eval
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

            quantizer = make_quantizer(opts.per_channel, keep)
            # A dynamic batch for calibration only: the observers' cost is per call, not per image.
            batch = torch.export.Dim("batch", min=1, max=max(opts.calib_batch, 2))
            ep = torch.export.export(module, (torch.zeros(2, *x.shape[1:]),), dynamic_shapes=({0: batch},))
            prepared = prepare_pt2e(ep.module(), quantizer)
            move_exported_model_to_eval(prepared)
    except (UsageError, interrupts.Interrupted):
        raise
    except Exception as e:
        raise _fail("PT2E prepare (torch.export + PT2EQuantizer)", e, "try ort-int8 or ov-int8") from e
    t1 = time.perf_counter()
    try:
        with torch.no_grad(), _converter_quiet():
            n = 0
            for chunk in ctx.calibration.batches(opts.calib_batch):
                interrupts.check()
                prepared(torch.from_numpy(chunk))
                n += len(chunk)
            converted = convert_pt2e(prepared, fold_quantize=False)
            move_exported_model_to_eval(converted)
    except interrupts.Interrupted:
        raise
    except Exception as e:
        raise _fail("PT2E calibration/convert", e, "try ort-int8 or ov-int8") from e
    calib_s = time.perf_counter() - t1
    secs = _convert(converted, x, ctx.bundle_dir / MODEL_FILE, QuantConfig(pt2e_quantizer=quantizer))
    import litert_torch

    details = {
        "quantizer": f"litert-torch {litert_torch.__version__} PT2EQuantizer (PT2E static, via torchao "
                     "prepare_pt2e/convert_pt2e)",
        "weights": "int8 symmetric " + ("per-channel" if opts.per_channel else "per-tensor"),
        "activations": "int8 per-tensor affine, HistogramObserver",
        "io": "int8 (model interface quantised; the runner converts with the tensors' scale/zero point)",
        "kept_float": list(keep),
        "calibration": {"images": n, "batch": opts.calib_batch, "seconds": round(calib_s, 1),
                        **(ctx.calibration.provenance() if hasattr(ctx.calibration, "provenance") else {})},
        "prepare_s": round(t1 - t0, 1),
        "convert_s": round(secs, 1),
    }
    notes = [large_depthwise_note(large, opts.float_depthwise, "litert-float-depthwise")] if large else []
    return _finish(ctx, "int8", details, notes)


def _pixels(ctx: BuildContext, artifact: Artifact) -> Artifact:
    """--embed-preprocessing: the build converted ctx.module(), the network behind a fixed-size
    pixel input (vitedge.export.pixels: why fixed)."""
    from vitedge.export.pixels import input_info

    artifact.details["input"] = input_info(ctx.loaded.card.preprocess, any_size=False,
                                           interpolation="none inside (the app resizes to the fixed input)",
                                           batch=ctx.export.static_batch or 1)
    return artifact


_COMMON = dict(runtime="litert", options=LiteRTOptions, extra="litert", requires=("litert_torch", "ai_edge_litert"),
               source="module", auto=("mobile",))
# Large depthwise convolutions as bands on the float targets, as for ExecuTorch (the same XNNPACK
# underneath), in the padded-input layout LiteRT makes fast (vitedge.export.rewrites.SplitDepthwise).
# Not litert-int8: litert-torch's converter rejected the quantised bands ("Attempting to broadcast
# a dimension of length 4", transformers' ConvNeXt).
SPLIT = ("split-large-depthwise-padded",)

register_target(Target(
    name="litert-fp32", precision="fp32", hooks=Hooks(build=build_litert_fp32, embed=_pixels), export_rewrites=SPLIT,
    description="LiteRT .tflite (litert-torch), XNNPACK delegate; Android / embedded Linux",
    **_COMMON))  # type: ignore[arg-type]
register_target(Target(
    name="litert-fp16", precision="fp16", hooks=Hooks(build=build_litert_fp16, embed=_pixels), export_rewrites=SPLIT,
    description="LiteRT .tflite with fp16 weights (ai-edge-quantizer float casting), XNNPACK delegate",
    requires=("litert_torch", "ai_edge_litert", "ai_edge_quantizer"),
    **{k: v for k, v in _COMMON.items() if k != "requires"}))  # type: ignore[arg-type]
register_target(Target(
    name="litert-int8", precision="int8", hooks=Hooks(build=build_litert_int8, diagnose=diagnose_pt2e),
    description="LiteRT full-int8 .tflite: litert-torch PT2E static quantisation, per-channel weights",
    needs_calibration=True, fallback_option="keep_float",
    **_COMMON))  # type: ignore[arg-type]
