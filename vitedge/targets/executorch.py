"""et-fp32 / et-int8: ExecuTorch programs (.pte) with the XNNPACK delegate, for phones and boards.

`torch.export` -> `executorch.exir.to_edge_transform_and_lower(partitioner=[XnnpackPartitioner()])`
-> `.to_executorch()` -> `model.pte`. The same file runs under ExecuTorch's C++ runtime on
Android/iOS/Linux boards and under its Python bindings here, where vitedge runs and verifies it.

- et-int8: PT2E static quantisation with ExecuTorch's `XNNPACKQuantizer` (int8 symmetric,
  per-output-channel weights, per-tensor activations from a histogram observer; Conv + ReLU6
  quantised as one op, as XNNPACK runs it: vitedge.targets.pt2e_fuse), calibrated on
  the same calibration set as every other INT8 target, then lowered like fp32. The quantiser
  covers conv/linear/add/mul/cat/pooling patterns; attention's two batched matmuls and softmax
  stay float (XNNPACK runs them in fp32).
- Attention: `nn.MultiheadAttention` exports as `scaled_dot_product_attention`, whose default
  decomposition guards fully masked rows with eq/any/logical_not/where (`_safe_softmax`). None of
  those are XNNPACK ops, so each attention block would leave ~8 nodes on the portable kernels and
  split the delegate. Without a mask, or with a finite additive bias (TinyViT, Swin), no
  row can be fully masked, so vitedge decomposes SDPA itself into scale -> matmul (+ bias) ->
  softmax -> matmul (`plain_softmax`, on by default; the report lists the rewritten nodes, and
  parity is measured on the rewritten program).
- LayerNorm is not an XNNPACK op in ExecuTorch 1.5 (its own ViT test expects it outside the
  delegate), so it runs on the portable kernels between delegate calls. The report lists every
  non-delegated op and the number of delegate calls, the usual reasons a .pte is slow on a phone.
- Batch: static (`--static-batch`, else 1), because with a symbolic batch dimension the XNNPACK
  partitioner of ExecuTorch 1.5 rejects every view_copy and the delegate falls apart (vit-tiny:
  91 view_copy nodes move to the portable kernels, 75 delegate calls instead of 44).
  `--et-dynamic-batch` exports batch 1..`max_batch` anyway (correct, slower; ExecuTorch plans
  memory for the upper bound, so keep it small).
"""

from __future__ import annotations

import copy
import math
import operator
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar

from vitedge.diagnose.readers import diagnose_pt2e
from vitedge.errors import ExportError, UsageError
from vitedge.options import opt
from vitedge.targets.context import BuildContext
from vitedge.targets.pt2e_fuse import large_depthwise, large_depthwise_note
from vitedge.targets.registry import Artifact, Hooks, Target, register_target

MODEL_FILE = "model.pte"
CALIB_BATCH = 16  # observer calls are the slow part of PT2E calibration; batch them


@dataclass(frozen=True)
class EtOptions:
    prefix: ClassVar[str] = "et"
    threads: int = opt(0, "XNNPACK threads the runner uses (0: all cores); the C++ runtime sets its own")
    dynamic_batch: bool = opt(False, "export a dynamic batch 1..max_batch instead of the static batch "
                                     "(works, but XNNPACK leaves every view_copy to the portable kernels)")
    max_batch: int = opt(16, "upper bound of the dynamic batch (ExecuTorch plans memory for it)")
    plain_softmax: bool = opt(True, "decompose attention without torch's fully-masked-row guard "
                                    "(keeps softmax in the XNNPACK delegate; exact without a mask or with a finite additive one)")
    per_channel: bool = opt(True, "int8: per-output-channel weight scales (else per tensor)")
    quantize_head: bool = opt(False, "int8: also quantise the classifier head (default float: see models.family)")
    keep_float: tuple[str, ...] = opt(
        (), "int8: module names (e.g. blocks.0.mlp.0, head) left in float; the accuracy-aware "
            "fallback extends this", hidden=True)
    float_depthwise: bool = opt(True, "int8: keep depthwise convs larger than 5x5 float (XNNPACK's int8 "
                                      "kernel for them is slower than its fp32 one: targets.pt2e_fuse)")


# -- export ----------------------------------------------------------------------------------------


def _example(ctx: BuildContext, batch: int) -> Any:
    import torch

    h, w = ctx.loaded.card.preprocess.input_size
    return torch.zeros(batch, 3, h, w)


def _batch_plan(ctx: BuildContext) -> tuple[int | None, int]:
    """(static batch or None, example batch for tracing)."""
    o: EtOptions = ctx.options
    static = ctx.export.static_batch
    if static is not None or not o.dynamic_batch:
        # Static by default: with a symbolic batch XNNPACK 1.5 rejects every view_copy (measured on
        # vit-tiny: 91 of them leave the delegate, 75 delegate calls instead of 44).
        return static or 1, static or 1
    if o.max_batch < 2:
        raise UsageError("--et-max-batch must be >= 2 for a dynamic batch (or give --static-batch 1)")
    return None, 2  # torch.export specialises a size-1 dimension to the constant 1


def _export(module: Any, x: Any, dynamic_max: int | None) -> Any:
    import torch

    shapes = None
    if dynamic_max is not None:
        shapes = ({0: torch.export.Dim("batch", min=1, max=dynamic_max)},)
    return torch.export.export(module, (x,), dynamic_shapes=shapes, strict=False)


def _plain_call(node: Any) -> bool:
    """No mask, or an additive float one (a learned position bias: TinyViT, Swin); not a
    boolean mask, causal or dropout call."""
    names = ("attn_mask", "dropout_p", "is_causal")
    given = dict(zip(names, node.args[3:], strict=False)) | {k: node.kwargs[k] for k in names if k in node.kwargs}
    mask = given.get("attn_mask")
    val = getattr(mask, "meta", {}).get("val") if mask is not None else None
    additive = mask is None or (val is not None and val.dtype.is_floating_point)
    return additive and not given.get("dropout_p") and not given.get("is_causal") and not node.kwargs.get("enable_gqa")


def _plain_sdpa(ep: Any) -> tuple[Any, int]:
    """Decompose non-causal SDPA without a mask or with an additive float mask into scale ->
    q@k^T (+ mask) -> softmax -> @v (see module doc). torch's own decomposition also guards rows
    masked entirely with -inf (eq/any/where/full_like, and the mask expanded to the scores' shape:
    on random-init TinyViT 161 nodes on the portable kernels, et-int8 3.5x ort-int8); a finite
    bias never masks a row, and a -inf one would show as NaN in the parity gate, not pass
    silently. Boolean-mask, causal and dropout calls keep torch's decomposition. Returns
    (program, rewritten)."""
    import torch

    sdpa = torch.ops.aten.scaled_dot_product_attention.default
    nodes = [n for n in ep.graph.nodes if n.op == "call_function" and n.target is sdpa]
    if not nodes or not all(_plain_call(n) for n in nodes):
        return ep, 0  # a mask, causal or dropout call needs torch's own decomposition
    # The scale is a constant tensor created here, outside tracing, so it is lifted as a weight
    # (an XNNPACK static input) instead of a `full` node the delegate does not take.
    scales: dict[float, torch.Tensor] = {}
    for n in nodes:
        q = n.args[0].meta["val"]
        s = n.kwargs.get("scale") or 1.0 / math.sqrt(q.shape[-1])
        scales.setdefault(float(s), torch.tensor(float(s), dtype=q.dtype))

    def decompose(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        s = float(scale or 1.0 / math.sqrt(q.shape[-1]))
        scores = (q * scales[s]) @ k.transpose(-2, -1)
        attn = torch.softmax(scores if attn_mask is None else scores + attn_mask, dim=-1)
        return attn @ v

    return ep.run_decompositions({sdpa: decompose}), len(nodes)


def _quantize(ctx: BuildContext, dynamic_max: int | None, x: Any) -> tuple[Any, dict[str, Any]]:
    """PT2E: export, annotate with the XNNPACK quantiser, calibrate, convert. Returns the
    converted module (a GraphModule) and facts for the report."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import get_module_name_filter

    o: EtOptions = ctx.options
    if ctx.calibration is None:
        raise ExportError("et-int8 needs calibration data (stage: quantise); pass --calib")
    module = ctx.network()
    ctx.check_module_names(o.keep_float, "--et-keep-float")
    keep = ctx.float_modules(o.keep_float, o.quantize_head)
    large = large_depthwise(ctx.loaded.module)  # the names; the network has them as bands
    if o.float_depthwise:
        keep += tuple(n for n in large if n not in keep)
    from torchao.quantization.pt2e.quantizer import (
        get_bias_qspec,
        get_input_act_qspec,
        get_output_act_qspec,
        get_weight_qspec,
    )

    from vitedge.targets.pt2e_fuse import annotate_conv_clamp

    # set_module_name(name, None) is not supported by this quantiser; a filter that refuses every
    # node traced from a kept module leaves those modules unannotated (float).
    kept = [get_module_name_filter(n) for n in keep]
    quantize_node = (lambda node: not any(f(node) for f in kept)) if keep else None
    fused: list[int] = []

    class ConvClampXNNPACKQuantizer(XNNPACKQuantizer):  # Conv + ReLU6 as one op: see targets.pt2e_fuse
        def annotate(self, model: Any) -> Any:
            fused.append(annotate_conv_clamp(model, self.global_config, (
                get_input_act_qspec, get_weight_qspec, get_bias_qspec, get_output_act_qspec), quantize_node))
            return super().annotate(model)

    quantizer = ConvClampXNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=o.per_channel))
    if quantize_node is not None:
        quantizer.set_filter_function(quantize_node)
    # Calibrate through a dynamic-batch graph even for a static target: one observer call per
    # CALIB_BATCH samples instead of per sample; the converted module is re-exported below.
    calib_max = max(CALIB_BATCH, dynamic_max or 0)
    graph = _export(copy.deepcopy(module).eval(), _example(ctx, 2), calib_max).module()
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for batch in ctx.calibration.batches(CALIB_BATCH):
            prepared(torch.from_numpy(batch))
    converted = convert_pt2e(prepared)
    nodes = list(converted.graph.nodes)
    n_q = sum(1 for n in nodes if n.op == "call_function" and "quantize_per" in str(n.target)
              and "dequantize" not in str(n.target))
    facts = {
        "quantizer": "executorch XNNPACKQuantizer (PT2E, torchao prepare_pt2e/convert_pt2e)",
        "scheme": {"weights": "int8 symmetric " + ("per-channel" if o.per_channel else "per-tensor"),
                   "activations": "int8 per-tensor affine (HistogramObserver), static"},
        "quantize_nodes": n_q,
        "conv_clamp_fused": sum(fused),  # Conv + ReLU6 pairs quantised as one op (targets.pt2e_fuse)
        "kept_float": list(keep),
        "calibration": ctx.calibration.provenance(),
        "large_depthwise": {"names": list(large), "kept_float": o.float_depthwise},
    }
    return converted, facts


# -- lowering and delegation report ------------------------------------------------------------------

_BOOKKEEPING = {"getitem", "sym_size.int", "sym_size"}


def _op_name(target: Any) -> str:
    name = getattr(target, "__name__", str(target))
    if target is operator.getitem:
        return "getitem"
    text = str(target)
    # edge ops print as e.g. "aten.native_layer_norm.default"
    return text if "." in text and not text.startswith("<") else name


def delegation_report(graph_module: Any) -> dict[str, Any]:
    """Which ops the XNNPACK delegate took and which run on ExecuTorch's portable kernels.
    Tuple unpacking of delegate outputs (getitem) and shape reads (sym_size) are not ops."""
    delegated: Counter[str] = Counter()
    portable: Counter[str] = Counter()
    calls = 0
    for node in graph_module.graph.nodes:
        if node.op == "call_function":
            name = _op_name(node.target)
            if "executorch_call_delegate" in name:
                calls += 1
                continue
            if name.split(".")[0] in _BOOKKEEPING or name in _BOOKKEEPING:
                continue
            portable[name] += 1
        elif node.op == "get_attr" and node.name.startswith("lowered_module"):
            lowered = getattr(graph_module, node.target)
            for inner in lowered.original_module.graph.nodes:
                if inner.op == "call_function":
                    name = _op_name(inner.target)
                    if name.split(".")[0] not in _BOOKKEEPING:
                        delegated[name] += 1
    return {
        "delegate": "XnnpackBackend",
        "delegate_calls": calls,
        "delegated_nodes": sum(delegated.values()),
        "non_delegated_nodes": sum(portable.values()),
        "delegated_ops": dict(sorted(delegated.items())),
        "non_delegated_ops": dict(sorted(portable.items())),
    }


def _lower(ep: Any) -> tuple[bytes, dict[str, Any]]:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])
    report = delegation_report(edge.exported_program().graph_module)
    program = edge.to_executorch()
    return program.buffer, report


def _smoke_run(buffer: bytes, x: Any) -> None:
    """Run the program once on the example input: XNNPACK checks some shapes only at execution
    (e.g. a float/int8 boundary it cannot reshape), and a .pte that cannot run must not ship."""
    from executorch.runtime import Runtime

    from vitedge.runtimes.executorch_runner import native_errors, native_stderr

    logged: list[str] = []
    try:
        with native_stderr(logged):
            method = Runtime.get().load_program(buffer).load_method("forward")
            method.execute([x])
    except Exception as e:
        native = native_errors(logged)
        raise RuntimeError(f"{str(e).strip()}" + (f" ({native})" if native else "")) from e


def _build(ctx: BuildContext, precision: str) -> Artifact:
    import executorch
    import torch

    from vitedge.quiet import quiet

    o: EtOptions = ctx.options
    static, example_batch = _batch_plan(ctx)
    dynamic_max = None if static is not None else o.max_batch
    x = _example(ctx, example_batch)
    timings: dict[str, float] = {}
    details: dict[str, Any] = {}
    t0 = time.perf_counter()
    stage = "quantise" if precision == "int8" else "torch.export"
    try:
        with quiet():
            if precision == "int8":
                module, details = _quantize(ctx, dynamic_max, x)
                timings["quantise_s"] = round(time.perf_counter() - t0, 2)
                stage = "torch.export (quantised)"
            else:
                module = ctx.network()
            t1 = time.perf_counter()
            with torch.no_grad():
                ep = _export(module, x, dynamic_max)
            rewritten = 0
            if o.plain_softmax:
                stage = "attention decomposition"
                ep, rewritten = _plain_sdpa(ep)
            timings["export_s"] = round(time.perf_counter() - t1, 2)
            stage = "XNNPACK lowering"
            t2 = time.perf_counter()
            buffer, report = _lower(ep)
            timings["lower_s"] = round(time.perf_counter() - t2, 2)
            stage = "smoke run"
            _smoke_run(buffer, x)
    except (UsageError, ExportError):
        raise
    except Exception as e:  # exporter/lowering errors come from many libraries
        msg = str(e).strip().splitlines()[0][:240] if str(e).strip() else type(e).__name__
        hint = {"torch.export": "the model must be torch.export-able (no data-dependent control flow)",
                "quantise": "try et-fp32, or keep the failing module in float (--et-keep-float)",
                "attention decomposition": "retry with --no-et-plain-softmax",
                "XNNPACK lowering": "try --static-batch 1, or et-fp32",
                "smoke run": "the lowered program does not execute; try et-fp32 or fewer --et-keep-float modules"}.get(stage.split(" (")[0], "")
        raise ExportError(f"ExecuTorch {stage} failed: {msg}" + (f"; {hint}" if hint else "")) from e
    (ctx.bundle_dir / MODEL_FILE).write_bytes(buffer)
    details.update({
        "executorch": executorch.version.__version__ if hasattr(executorch, "version") else "?",
        "batch": {"static": static} if static is not None else {"dynamic": [1, dynamic_max]},
        "attention": (f"{rewritten} SDPA call(s) decomposed without the masked-row guard (plain softmax)"
                      if rewritten else "torch's default SDPA decomposition"),
        **report,
        "build_seconds": timings,
    })
    notes = []
    large = (details.get("large_depthwise") or {}).get("names")
    if large:
        notes.append(large_depthwise_note(tuple(large), details["large_depthwise"]["kept_float"], "et-float-depthwise",
                                          split=bool(ctx.module_rewrites.get("split-large-depthwise"))))
    if report["non_delegated_ops"]:
        top = ", ".join(f"{k} x{v}" for k, v in list(report["non_delegated_ops"].items())[:6])
        notes.append(f"{report['non_delegated_nodes']} node(s) run on ExecuTorch's portable kernels "
                     f"outside XNNPACK ({top}); {report['delegate_calls']} delegate call(s) per inference")
    runner_options: dict[str, Any] = {"dynamic_batch": static is None}
    if o.threads:
        runner_options["device_threads"] = o.threads
    return Artifact(MODEL_FILE, [MODEL_FILE], "executorch", runner_options, details=details, notes=notes)


def build_et_fp32(ctx: BuildContext) -> Artifact:
    return _build(ctx, "fp32")


def build_et_int8(ctx: BuildContext) -> Artifact:
    return _build(ctx, "int8")


# split-large-depthwise: XNNPACK runs a 7x7 depthwise conv as a grouped IGEMM; as column bands it
# gets XNNPACK's depthwise kernels (vitedge.export.rewrites.SplitDepthwise, measured there).
_ET: dict[str, Any] = dict(runtime="executorch", options=EtOptions, extra="executorch", requires=("executorch", "torch"),
           source="module", auto=("mobile",), export_rewrites=("split-large-depthwise",))
register_target(Target(
    name="et-fp32", precision="fp32", hooks=Hooks(build=build_et_fp32), **_ET,
    description="ExecuTorch .pte, XNNPACK delegate, fp32 (Android/iOS/Linux boards; verified here)"))
register_target(Target(
    name="et-int8", precision="int8", hooks=Hooks(build=build_et_int8, diagnose=diagnose_pt2e), needs_calibration=True,
    fallback_option="keep_float", **_ET,
    description="ExecuTorch .pte, XNNPACK delegate, int8 static PT2E quantisation (per-channel weights)"))
