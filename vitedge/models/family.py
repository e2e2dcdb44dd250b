"""Which kind of network a model is, read from what its forward pass computes, and the recipe
(INT8/FP16 placement, NNCF model type) that kind needs.

The family used to be guessed from the name ("convnext*" or else "vit"), which switched NNCF's
transformer mode on for every ResNet or MobileNet that happened to load. Here it is observed:
one forward pass on a zero input under a `TorchFunctionMode` that follows the data flow from
the input (a tensor is an *activation* if it was computed from the input; weights, buffers,
position tables are not) and records
- attention: `scaled_dot_product_attention`, `multi_head_attention_forward`, or a MatMul /
  BMM / einsum whose operands are two activations (Q.K^T, attn.V, linear attention), which is
  exactly what the quantisers must keep in float;
- convolutions (and depthwise ones), LayerNorm/GroupNorm/RMSNorm and BatchNorm calls.

Then: attention + at most one convolution (the patch embedding) -> "vit" (ViT, DeiT, EVA,
BEiT, CaiT, Swin...); attention + more convolutions -> "hybrid" (LeViT, MobileViT, EfficientViT,
FastViT-SA...); no attention, depthwise convolutions + LayerNorm and no BatchNorm -> "convnext"
(ConvNeXt, ConvNeXt-V2 and lookalikes); other convolutional networks -> "cnn"; anything else
(MLP-Mixer, a forward that fails) -> "unknown", which gets the generic recipe and says so.
Pure function of the module: the family is stored in the model card so the device side never
needs torch to know it.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

FAMILIES = ("vit", "convnext", "cnn", "hybrid", "unknown")

# ONNX op types kept in FP32 inside an FP16 graph: range-sensitive ops (LayerNorm and Softmax
# overflow, reductions such as ConvNeXt-V2's GRN L2 norm over H*W positions exceed 65504).
FP16_FP32_OPS = ("LayerNormalization", "Softmax", "ReduceMean", "ReduceSum", "ReduceL2", "ReduceSumSquare",
                 "ReduceMax", "Pow", "Sqrt", "Reciprocal", "Div", "Exp", "Log", "Erf")
# ONNX op types vitedge quantises; everything else (norms, softmax, activations, residual adds)
# stays float in INT8 graphs for every family.
INT8_OP_TYPES = ("MatMul", "Gemm", "Conv")


@dataclass(frozen=True)
class Recipe:
    family: str
    nncf_transformer: bool  # nncf.ModelType.TRANSFORMER (SmoothQuant, float LN/Softmax/GELU/Add)
    fp16_fp32_op_types: tuple[str, ...] = FP16_FP32_OPS
    notes: tuple[str, ...] = ()


_RECIPES = {
    "vit": Recipe("vit", nncf_transformer=True),
    "hybrid": Recipe("hybrid", nncf_transformer=True, notes=(
        "convolution + attention hybrid: transformer recipe (attention MatMuls, LayerNorm, Softmax "
        "float), convolutions quantised per channel",)),
    "convnext": Recipe("convnext", nncf_transformer=False),
    "cnn": Recipe("cnn", nncf_transformer=False),
    "unknown": Recipe("unknown", nncf_transformer=False, notes=(
        "model family not recognised: generic recipe (NNCF default model type; only "
        "MatMul/Gemm/Conv quantised; activation x activation MatMuls and range-sensitive ops float)",)),
}


def recipe_for(family: str) -> Recipe:
    """The recipe for a family name; anything unrecognised gets the generic one (with its note)."""
    return _RECIPES.get(family, _RECIPES["unknown"])


@dataclass(frozen=True)
class FamilyReport:
    family: str
    reason: str  # one line: why this family
    evidence: dict[str, int] = field(default_factory=dict)
    attention_modules: tuple[str, ...] = ()  # class names, for the report
    output_shape: tuple[int, ...] | None = None  # of the probe forward (batch 1)
    error: str | None = None  # the probe forward failed

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"family": self.family, "reason": self.reason, "evidence": dict(self.evidence)}
        if self.attention_modules:
            d["attention_modules"] = list(self.attention_modules)
        if self.error:
            d["error"] = self.error
        return d


def _attention_class_names(module: Any) -> tuple[str, ...]:
    import torch

    names = set()
    for m in module.modules():
        cls = type(m).__name__
        if isinstance(m, torch.nn.MultiheadAttention) or "attention" in cls.lower() or cls.endswith(("Attn", "MLA")):
            names.add(cls)
    return tuple(sorted(names))


def probe(module: Any, input_size: tuple[int, int] = (224, 224)) -> FamilyReport:
    """Run one forward pass (batch 1, zeros) recording what is computed; see the module docstring."""
    import torch
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode
    from torch.utils._pytree import tree_flatten

    live: dict[int, weakref.ref] = {}

    def is_act(t: Any) -> bool:
        if not isinstance(t, torch.Tensor):
            return False
        r = live.get(id(t))
        return r is not None and r() is t

    def mark(t: Any) -> None:
        if isinstance(t, torch.Tensor):
            live[id(t)] = weakref.ref(t)

    counts = {"attention": 0, "softmax": 0, "conv": 0, "depthwise_conv": 0, "conv_after_attention": 0,
              "layer_norm": 0, "batch_norm": 0}
    matmuls = {torch.matmul, torch.bmm, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.Tensor.__rmatmul__,
               torch.Tensor.bmm, torch.einsum, torch.baddbmm}
    attention = {F.scaled_dot_product_attention, F.multi_head_attention_forward}
    convs = {F.conv1d, F.conv2d, F.conv3d, torch.conv2d}
    softmaxes = {F.softmax, torch.softmax, torch.Tensor.softmax, F.log_softmax}
    lns = {F.layer_norm, F.group_norm, getattr(F, "rms_norm", None)}

    class Probe(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            kwargs = kwargs or {}
            flat, _ = tree_flatten((args, kwargs))
            acts = [a for a in flat if is_act(a)]
            if func in attention and acts:
                counts["attention"] += 1
            elif func in matmuls and len(acts) >= 2:
                counts["attention"] += 1
            elif func in convs and acts:
                counts["conv"] += 1
                if counts["attention"]:
                    counts["conv_after_attention"] += 1
                weight = args[1] if len(args) > 1 else kwargs.get("weight")
                groups = args[6] if len(args) > 6 else kwargs.get("groups", 1)
                if isinstance(weight, torch.Tensor) and groups > 1 and weight.shape[1] == 1:
                    counts["depthwise_conv"] += 1
            elif func in softmaxes and acts:
                counts["softmax"] += 1
            elif func in lns and acts:
                counts["layer_norm"] += 1
            elif func is F.batch_norm and acts:
                counts["batch_norm"] += 1
            out = func(*args, **kwargs)
            if acts:
                for t in tree_flatten(out)[0]:
                    mark(t)
            return out

    attn_modules = _attention_class_names(module)
    was_training = module.training
    module.eval()
    h, w = input_size
    x = torch.zeros(1, 3, int(h), int(w))
    mark(x)
    try:
        with torch.no_grad(), Probe():
            out = module(x)
    except Exception as e:  # any model code can fail here; the caller decides what that means
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        return FamilyReport("unknown", f"the probe forward at {h}x{w} failed ({type(e).__name__}: {msg})",
                            counts, attn_modules, None, f"{type(e).__name__}: {msg}")
    finally:
        module.train(was_training)
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
    family, reason = classify(counts)
    return FamilyReport(family, reason, counts, attn_modules, shape)


def classify(c: dict[str, int]) -> tuple[str, str]:
    """(family, reason) from the counts recorded by `probe`."""
    attn, conv = c.get("attention", 0), c.get("conv", 0)
    if attn:
        if conv <= 1:
            return "vit", f"{attn} attention op(s), convolution only in the patch embedding"
        return "hybrid", f"{attn} attention op(s) and {conv} convolutions"
    if conv > 1:
        if c.get("depthwise_conv", 0) and c.get("layer_norm", 0) and not c.get("batch_norm", 0):
            return "convnext", (f"convolutional ({c['depthwise_conv']} depthwise) with LayerNorm, no "
                                "attention (ConvNeXt-style blocks)")
        return "cnn", f"convolutional ({conv} convolutions), no attention"
    return "unknown", f"neither attention nor a convolutional body ({conv} convolution(s)): generic recipe"


def onnx_counts(model: Any) -> dict[str, int]:
    """The `probe` counts read from an ONNX graph (for models that arrive as ONNX): a tensor is
    constant when it is an initializer or computed from constants only (weights transposed or
    reshaped by the exporter stay constant), so a MatMul/Einsum of two non-constant tensors is
    attention."""
    g = model.graph
    shapes = {i.name: tuple(i.dims) for i in g.initializer}
    const = set(shapes)
    counts = {"attention": 0, "softmax": 0, "conv": 0, "depthwise_conv": 0, "conv_after_attention": 0,
              "layer_norm": 0, "batch_norm": 0}
    for n in g.node:
        inputs = [i for i in n.input if i]
        if all(i in const for i in inputs):
            const.update(n.output)
            continue
        if n.op_type in ("MatMul", "Einsum") and sum(i not in const for i in inputs) >= 2:
            counts["attention"] += 1
        elif n.op_type == "Conv":
            counts["conv"] += 1
            if counts["attention"]:
                counts["conv_after_attention"] += 1
            group = next((a.i for a in n.attribute if a.name == "group"), 1)
            w = shapes.get(n.input[1]) if len(n.input) > 1 else None
            if group > 1 and w is not None and len(w) > 1 and w[1] == 1:
                counts["depthwise_conv"] += 1
        elif n.op_type == "Softmax":
            counts["softmax"] += 1
        elif n.op_type in ("LayerNormalization", "GroupNormalization", "RMSNormalization"):
            counts["layer_norm"] += 1
        elif n.op_type == "BatchNormalization":
            counts["batch_norm"] += 1
    return counts


def detect_family_onnx(model: Any) -> str:
    """One of FAMILIES for an onnx.ModelProto (same rules as `detect_family`)."""
    return classify(onnx_counts(model))[0]


def detect_family(module: Any, input_size: tuple[int, int] = (224, 224)) -> str:
    """One of FAMILIES for `module` (an nn.Module taking (N, 3, H, W) at `input_size`)."""
    return probe(module, input_size).family


# -- the classifier head ---------------------------------------------------------------------------
# The INT8 recipes keep the classifier head (the last weighted op(s) before the logits) in float
# (all but litert-int8, a full-integer model for NPU delegates; see its options).
# Its input is a pooled feature vector whose few large channels set a per-tensor scale that wipes
# out the rest, and the head is < 1% of a classifier's compute. Measured on swin_tiny (random init,
# 224 px) with ov-int8: logits SQNR 6.7 dB with the head quantised, 31.7 dB with it float. Two
# heads (DeiT's distillation head) are both kept.

HEAD_SEARCH_LIMIT = 64  # nodes walked back from the outputs before giving up (no head near the end)


Node = tuple[str, bool, list[str], list[str]]  # (name, weighted op?, input tensors, output tensors)


def head_nodes(nodes: list[Node], outputs: list[str]) -> list[str]:
    """Names of the weighted nodes nearest to the graph outputs on every path back from them
    (the ONNX and OpenVINO readers below describe their graphs as `Node`s)."""
    producer = {out: n for n in nodes for out in n[3]}
    found: list[str] = []
    seen: set[str] = set()
    stack = [producer[o] for o in outputs if o in producer]
    while stack and len(seen) < HEAD_SEARCH_LIMIT:
        n = stack.pop()
        if n[0] in seen:
            continue
        seen.add(n[0])
        if n[1]:
            found.append(n[0])
            continue
        stack += [producer[i] for i in n[2] if i in producer]
    return found


def onnx_head_nodes(model: Any, op_types: tuple[str, ...] = INT8_OP_TYPES) -> list[str]:
    """The classifier head's node names in an ONNX graph: MatMul/Gemm/Conv with a constant weight."""
    consts = {i.name for i in model.graph.initializer}
    for n in model.graph.node:  # topological order: weight transforms (Transpose of an initializer) fold in
        if n.op_type == "Constant" or (n.input and all(i in consts for i in n.input if i)):
            consts.update(n.output)
    nodes = [(n.name, n.op_type in op_types and any(i in consts for i in n.input[1:2]),
              [i for i in n.input if i and i not in consts], list(n.output)) for n in model.graph.node]
    return head_nodes(nodes, [o.name for o in model.graph.output])


def openvino_head_nodes(model: Any) -> list[str]:
    """The classifier head's friendly names in an ov.Model (MatMul/Convolution on a constant)."""
    def weighted(op: Any) -> bool:
        if op.get_type_name() not in ("MatMul", "Convolution"):
            return False
        src = op.input_value(1).get_node()
        while src.get_type_name() in ("Convert", "Reshape", "Transpose", "Multiply", "Subtract"):
            src = src.input_value(0).get_node()  # decompression subgraphs of stored weights
        return src.get_type_name() == "Constant"

    def port(out: Any) -> str:
        return f"{out.get_node().get_friendly_name()}:{out.get_index()}"

    nodes: list[Node] = []
    for op in model.get_ordered_ops():
        if op.get_type_name() in ("Constant", "Parameter", "Result"):
            continue
        nodes.append((op.get_friendly_name(), weighted(op), [port(i.get_source_output()) for i in op.inputs()],
                      [port(o) for o in op.outputs()]))
    results = [port(r.input_value(0)) for r in model.get_results()]
    return head_nodes(nodes, results)


def module_head_names(module: Any) -> list[str]:
    """The classifier head's module names in a PyTorch model: timm's `get_classifier()` (a tuple
    for DeiT's two heads), else the last weighted module registered (vitedge's built-ins: `head`)."""
    names = {id(m): n for n, m in module.named_modules() if n}
    get = getattr(module, "get_classifier", None)
    if callable(get):
        found = get()
        heads = found if isinstance(found, (tuple, list)) else (found,)
        named = [names[id(h)] for h in heads if id(h) in names and any(p.ndim >= 2 for p in h.parameters())]
        if named:
            return named
    weighted = [n for n, m in module.named_modules() if n and any(p.ndim >= 2 for p in m.parameters(recurse=False))]
    return weighted[-1:]
