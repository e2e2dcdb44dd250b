"""inductor-int8 / inductor-fp32: PyTorch's own x86 path, compiled ahead of time by AOTInductor.

inductor-int8 is PT2E static quantisation with torchao's `X86InductorQuantizer` (uint8
per-tensor activations from a histogram observer, int8 per-channel symmetric weights), calibrated
on the shared calibration set, then compiled by `torch._inductor.aoti_compile_and_package` with
`freezing=True`. Freezing is what makes it fast: the int8 weights become constants, Inductor's
freezing patterns (registered by importing the quantiser module) fuse dq -> linear/conv -> q into
oneDNN `qlinear_pointwise` / `qconv_pointwise` calls with prepacked weights and fused post-ops
(GELU, residual add). Without freezing the graph runs as float linears on dequantised weights.

The artifact is one `.pt2` (a zip holding the compiled shared library, weights baked in). It
loads with `torch._inductor.aoti_load_package` without the model's Python code; its runtime is
libtorch, so the device needs the same torch version (recorded by the runner's packages).
Loading it dlopens native code: a `.pt2` is as trusted as the bundle it came in.

Two things torchao's quantiser does not do on its own, handled here:
- `nn.MultiheadAttention` calls `F.linear` on its packed in_proj / out_proj weights inside the
  module, so the quantiser (which finds linears by source module nn.Linear / F.linear) skips
  them and a third of a ViT's matmul work stays float. `quantize_attention` (default on) tags
  those aten.linear nodes as F.linear before annotation, so they are quantised like any Linear.
- Layers kept in float (`keep_float`, module names such as `head` or `blocks.0.attn`, prefix
  match on the module path) use `set_module_name_qconfig(name, None)`.

Compile time is 0.5-3 minutes of g++ on 2 cores depending on load (the report records it).
Inductor's cache directory is pointed at the build's work_dir, so nothing is reused across builds
or left behind. Side effect: importing torchao's quantiser module registers its int8 fusion
passes in Inductor and sets `torch._inductor.config.pre_grad_custom_pass` for the process.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from vitedge import interrupts
from vitedge.diagnose.readers import diagnose_pt2e
from vitedge.errors import ExportError, Interrupted, UsageError
from vitedge.options import opt
from vitedge.targets.context import BuildContext
from vitedge.targets.registry import Artifact, Hooks, Target, register_target

MODEL_FILE = "model.pt2"
# AOTI's own metadata (the package keeps str -> str); the runner reads the input shape from it.
META_FORMAT = "vitedge-aoti"


@dataclass(frozen=True)
class InductorOptions:
    prefix: ClassVar[str] = "inductor"
    freezing: bool = opt(True, "constant-fold and prepack weights at compile time (int8 needs it for oneDNN "
                               "qlinear/qconv kernels)")
    max_autotune: bool = opt(False, "let Inductor benchmark GEMM templates while compiling (much longer build)")
    calib_batch: int = opt(32, "calibration batch size (the histogram observers cost per call)")
    quantize_attention: bool = opt(True, "also quantise nn.MultiheadAttention's in/out projections, which "
                                         "torchao's quantiser otherwise leaves float")
    reduce_range: bool = opt(False, "7-bit activations (torchao's advice for CPUs without VNNI)")
    quantize_head: bool = opt(False, "int8: also quantise the classifier head (default float: see models.family)")
    keep_float: tuple[str, ...] = opt((), "module names kept in float (prefix match on the module path; the "
                                          "accuracy-aware fallback extends this)", hidden=True)


@contextlib.contextmanager
def _inductor_cache_in(path: Path) -> Iterator[None]:
    """Point Inductor's on-disk caches (compiled kernels, FX graph cache) at the build's work_dir.
    The variable is read on every cache access; restored afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    old = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
        else:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = old


def _dynamic_shapes(ctx: BuildContext, static: bool = True) -> tuple[Any, Any]:
    """(example input, dynamic_shapes) for torch.export: a symbolic batch unless a static one is
    asked (and `static` allows it). The example batch is 2: export specialises a size-1 dimension
    to the constant 1."""
    import torch

    if ctx.export.static_batch and static:
        return ctx.example_input(), None
    batch = torch.export.Dim("batch", min=1, max=max(2, ctx.export.max_batch))
    return ctx.example_input(2), ({0: batch},)


def _export(module: Any, x: Any, dynamic: Any, stage: str) -> Any:
    import torch

    from vitedge.quiet import quiet

    try:
        with quiet(), interrupts.deferred():
            return torch.export.export(module, (x,), dynamic_shapes=dynamic)
    except Exception as e:
        interrupts.check()
        raise ExportError(f"inductor: torch.export ({stage}) failed: {type(e).__name__}: {str(e)[:300]}; "
                          "try --static-batch 1, or another target (ort-int8, ov-int8)") from e


def _tag_attention_linears(gm: Any) -> list[str]:
    """Mark aten.linear nodes that do not come from an nn.Linear (MultiheadAttention's packed
    in_proj / out_proj) as F.linear calls, so the quantiser's source-partition search finds them."""
    import itertools

    import torch
    import torch.nn.functional as F
    from torch.fx.passes.utils.source_matcher_utils import get_source_partitions

    # The quantiser's own search (same function, same sources): whatever it already finds is left
    # alone, so nn.Linear + GELU / + add fusion annotations are unchanged.
    found = {n for p in itertools.chain.from_iterable(
        get_source_partitions(gm.graph, [torch.nn.Linear, F.linear]).values()) for n in p.nodes}
    tagged = []
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target != torch.ops.aten.linear.default or node in found:
            continue
        stack = node.meta.get("nn_module_stack") or {}
        fqn = list(stack.values())[-1][0] if stack else ""
        node.meta["source_fn_stack"] = [(node.name, F.linear)]
        tagged.append(f"{fqn}:{node.name}")
        _make_input_contiguous(gm, node)
    gm.recompile()
    return tagged


def _make_input_contiguous(gm: Any, linear: Any) -> None:
    """MHA (batch_first) feeds in_proj a transposed activation. Inductor lowers a linear on a
    non-contiguous 3-D input as expand + bmm, and torchao's int8 pattern check for that form
    compares a symbolic batch size with torch.Size and raises TypeError (torchao 0.18, dynamic
    batch). A contiguous copy first (17 x dim floats per image) takes the plain view/addmm
    route, which the int8 fusion handles for dynamic and static batch alike."""
    import torch

    inp = linear.args[0]
    val = getattr(inp, "meta", {}).get("val")
    if not isinstance(val, torch.Tensor) or val.is_contiguous():
        return
    with gm.graph.inserting_before(linear):
        copy = gm.graph.call_function(torch.ops.aten.clone.default, (inp,),
                                      {"memory_format": torch.contiguous_format})
    copy.meta = {k: v for k, v in linear.meta.items() if k in ("nn_module_stack", "stack_trace")}
    copy.meta["val"] = val.clone(memory_format=torch.contiguous_format)
    linear.replace_input_with(inp, copy)


def _quantize(ctx: BuildContext, ep: Any, x: Any, dynamic: Any) -> tuple[Any, dict[str, Any]]:
    """PT2E: annotate with the x86 Inductor quantiser, calibrate, convert; re-export the result."""
    import torch

    from vitedge.quiet import quiet

    opts: InductorOptions = ctx.options
    if ctx.calibration is None:
        raise UsageError("inductor-int8 needs calibration data (--calib)")
    ctx.check_module_names(opts.keep_float, "--inductor-keep-float")
    keep = ctx.float_modules(opts.keep_float, opts.quantize_head)
    try:
        with quiet():
            import torchao

            # Importing the quantiser module also registers torchao's Inductor int8 fusion passes.
            import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
            from torchao.quantization.pt2e import move_exported_model_to_eval
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

            config = xiq.get_default_x86_inductor_quantization_config(reduce_range=opts.reduce_range)
            quantizer = xiq.X86InductorQuantizer().set_global(config)
            for name in keep:
                quantizer.set_module_name_qconfig(name, None)
            gm = ep.module()
            tagged = _tag_attention_linears(gm) if opts.quantize_attention else []
            prepared = prepare_pt2e(gm, quantizer)
        t0 = time.perf_counter()
        with torch.no_grad(), quiet():
            for batch in ctx.calibration.batches(opts.calib_batch):
                interrupts.check()
                prepared(torch.from_numpy(batch))
        calib_s = time.perf_counter() - t0
        with quiet():
            converted = convert_pt2e(prepared)
            move_exported_model_to_eval(converted)
    except (UsageError, Interrupted):
        raise
    except Exception as e:
        interrupts.check()
        raise ExportError(f"inductor-int8: PT2E quantisation failed: {type(e).__name__}: {str(e)[:300]}; "
                          "try --inductor-quantize-attention false, or ort-int8 / ov-int8") from e
    qep = _export(converted, x, dynamic, "quantised graph")
    details = {
        "quantizer": f"torchao {torchao.__version__} X86InductorQuantizer (PT2E static)",
        "activations": "uint8 per-tensor affine, HistogramObserver" + (" (reduce_range)" if opts.reduce_range else ""),
        "weights": "int8 per-channel symmetric",
        "attention_linears_tagged": len(tagged),
        "kept_float": list(keep),
        "calibration_s": round(calib_s, 1),
    }
    return qep, details


def _kernel_census(pt2: Path) -> dict[str, int]:
    """Which compute kernels the compiled wrapper calls (int8 vs float), read from the .pt2's
    generated C++: the fact that says whether quantisation actually reached the kernels."""
    counts: dict[str, int] = {}
    keys = {
        "qlinear": ("_qlinear_pointwise",),
        "qconv": ("_qconv_pointwise", "_qconv2d_pointwise"),
        "float_linear": ("_linear_pointwise", "addmm", "_mkl_linear", "mm_out"),
        "float_conv": ("_convolution_pointwise", "convolution"),
        "sdpa": ("scaled_dot_product",),
    }
    with zipfile.ZipFile(pt2) as z:
        for name in z.namelist():
            if not name.endswith("wrapper.cpp"):
                continue
            text = z.read(name).decode("utf-8", "replace")
            for call in re.findall(r"aoti_torch_cpu_(\w+)\(", text):
                for kind, pats in keys.items():
                    if any(p in call for p in pats):
                        counts[kind] = counts.get(kind, 0) + 1
                        break
    return counts


def _compile(ctx: BuildContext, ep: Any, precision: str) -> tuple[Path, float, bool, list[str]]:
    import torch

    from vitedge.quiet import quiet

    opts: InductorOptions = ctx.options
    h, w = ctx.loaded.card.preprocess.input_size
    metadata = {
        "format": META_FORMAT, "precision": precision, "input": "input", "output": "logits",
        "input_shape": f"{ctx.export.static_batch or -1},3,{h},{w}",
        "num_classes": str(len(ctx.loaded.card.classes)), "torch": torch.__version__,
        "card": ctx.loaded.card.to_json(),
    }
    out = ctx.bundle_dir / MODEL_FILE
    t0 = time.perf_counter()
    notes: list[str] = []
    for freezing in dict.fromkeys((opts.freezing, False)):
        configs = {"freezing": freezing, "max_autotune": opts.max_autotune, "aot_inductor.metadata": metadata}
        try:
            with _inductor_cache_in(ctx.work_dir / "inductor-cache"), quiet(), torch.no_grad():
                torch._inductor.aoti_compile_and_package(ep, package_path=str(out), inductor_configs=configs)
            return out, time.perf_counter() - t0, freezing, notes
        except Exception as e:
            interrupts.check()
            msg = str(e)
            # Only a compiler failure is about g++; a graph the compiler rejects is not.
            compiler = any(k in msg for k in ("g++", "CppCompileError", "compiler", "cc1plus"))
            if freezing and not compiler:
                # Freezing folds the weights into the graph as constants; on some graphs it leaves
                # a symbolic size behind that the AOT compile then rejects (transformers' LeViT
                # INT8: "torch.Size() takes an iterable of 'int' (item 0 is 'Node')", torch 2.14).
                # Compiled again without it: an artifact, but measured on LeViT/XCiT/Mixer no
                # int8 kernel then reaches the code (the census note below says so per build).
                notes.append(f"compiled with freezing off: with freezing, AOTInductor failed "
                             f"({type(e).__name__}: {msg.splitlines()[0][:160] if msg else ''})")
                continue
            hint = "it needs a working g++ (check `g++ --version`); " if compiler else ""
            raise ExportError(f"inductor-{precision}: AOTInductor compile failed: {type(e).__name__}: "
                              f"{msg[:300]}; {hint}try another target") from e
    raise AssertionError("unreachable: the loop returns or raises")


def _build(ctx: BuildContext, precision: str) -> Artifact:
    import torch

    opts: InductorOptions = ctx.options
    x, dynamic = _dynamic_shapes(ctx)
    module = ctx.network()
    details: dict[str, Any] = {}
    if precision == "int8":
        # Calibrate on a dynamic-batch graph (calibration batches need not match a static batch);
        # the converted graph is re-exported with the batch the user asked for.
        qx, qdynamic = _dynamic_shapes(ctx, static=False)
        ep = _export(module, qx, qdynamic, "float graph")
        ep, details = _quantize(ctx, ep, x, dynamic)
    else:
        ep = _export(module, x, dynamic, "float graph")
    path, compile_s, frozen, notes = _compile(ctx, ep, precision)
    census = _kernel_census(path)
    if precision == "int8" and not census.get("qlinear") and not census.get("qconv"):
        notes.append("no int8 kernel reached the compiled code (every layer runs float)")
    details.update({
        "compiler": f"AOTInductor (torch {torch.__version__})",
        "freezing": frozen, "max_autotune": opts.max_autotune,
        "batch": ctx.export.static_batch or "dynamic",
        "compile_s": round(compile_s, 1), "kernels": census,
        "device_needs": f"torch=={torch.__version__.split('+')[0]} (libtorch runs the .pt2)",
    })
    return Artifact(MODEL_FILE, [MODEL_FILE], "aoti", {}, details=details, notes=notes)


def build_inductor_int8(ctx: BuildContext) -> Artifact:
    return _build(ctx, "int8")


_COMMON = dict(runtime="aoti", options=InductorOptions, extra="torchao", source="module")

register_target(Target(
    name="inductor-int8", precision="int8", hooks=Hooks(build=build_inductor_int8, diagnose=diagnose_pt2e), requires=("torch", "torchao"),
    # In the default matrix and an auto-cpu candidate although its AOTInductor compile costs
    # 30-170 s on 2 cores: it is PyTorch's own fast INT8 path and, at 224 px, the fastest
    # artifact for some models (issue 14: ConvNeXt-T); auto measures whether it wins here.
    needs_calibration=True, fallback_option="keep_float", auto=("x86",),
    **_COMMON,  # type: ignore[arg-type]
    description="PT2E static int8 (torchao X86InductorQuantizer), AOTInductor .pt2 with frozen, "
                "prepacked oneDNN int8 kernels"))
