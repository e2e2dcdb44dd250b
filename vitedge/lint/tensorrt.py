"""TensorRT-readiness lint: a static check of an ONNX graph against TensorRT's ONNX parser.

The operator table (`data/onnx-tensorrt-ops-10.15.txt`, transcribed from onnx-tensorrt's
docs/operators.md, TensorRT 10.15 edition) gives, per op, whether the parser supports it, the
tensor types it accepts and its restrictions. The lint reports, with node names:

- errors (the parser would reject the graph, or the engine would be wrong):
  unsupported op or domain, opset outside the parser's range, an input type the op does not take,
  reduction / squeeze axes that are not constants, Q/DQ with a non-zero zero point or unsigned
  8-bit type (only DLA takes those), LayerNormalization with a consumed Mean/InvStdDev output,
  Attention with non-4-D Q/K/V;
- warnings: things TensorRT accepts but handles badly (e.g. FP16 LayerNorm / Softmax, which
  overflow in TensorRT FP16 ViTs), dynamic dimensions other than the batch;
- infos: every restriction text of the ops present, once per op type, to review by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

OPSET_RANGE = {"10": (9, 24), "11": (9, 25)}  # TensorRT major -> parser opset range
_ONNX_TO_TRT = {
    1: "FP32", 10: "FP16", 16: "BF16", 3: "INT8", 2: "UINT8", 6: "INT32", 7: "INT64", 9: "BOOL", 5: "INT16",
    17: "FP8", 18: "FP8", 19: "FP8", 20: "FP8", 21: "UINT4", 22: "INT4", 23: "FP4", 11: "FP64",
}


@dataclass(frozen=True)
class OpSupport:
    op: str
    supported: bool
    types: frozenset[str]
    restrictions: str


@dataclass(frozen=True)
class Finding:
    level: str  # error | warning | info
    node: str
    op: str
    message: str


@lru_cache(maxsize=1)
def op_table() -> dict[str, OpSupport]:
    text = (resources.files("vitedge.lint") / "data" / "onnx-tensorrt-ops-10.15.txt").read_text()
    table = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split("|")]
        op, flag, types = parts[0], parts[1], parts[2]
        restrictions = parts[3] if len(parts) > 3 else ""
        table[op] = OpSupport(op, flag == "Y",
                              frozenset(t.strip() for t in types.split(",") if t.strip() not in ("-", "")),
                              restrictions)
    return table


def _types(model: Any) -> dict[str, int]:
    """Tensor name -> ONNX element type, from inputs, outputs, value_info and initializers."""
    out = {}
    g = model.graph
    for v in list(g.input) + list(g.output) + list(g.value_info):
        if v.type.HasField("tensor_type"):
            out[v.name] = v.type.tensor_type.elem_type
    for init in g.initializer:
        out[init.name] = init.data_type
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    out[n.output[0]] = a.t.data_type
    return out


def _constants(model: Any) -> dict[str, Any]:
    from onnx import numpy_helper

    consts = {i.name: i for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = a.t
    return {k: numpy_helper.to_array(v) for k, v in consts.items()}


def lint_model(model: Any, trt_major: str = "10") -> list[Finding]:
    """Lint an onnx.ModelProto (shape-inferred for the type checks)."""
    import onnx

    if trt_major not in OPSET_RANGE:
        raise ValueError(f"trt_major must be one of {sorted(OPSET_RANGE)}")
    model = onnx.shape_inference.infer_shapes(model) if len(model.graph.value_info) == 0 else model
    table = op_table()
    findings: list[Finding] = []
    lo, hi = OPSET_RANGE[trt_major]
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx") and not lo <= imp.version <= hi:
            findings.append(Finding("error", "<model>", "", f"opset {imp.version} is outside TensorRT "
                                    f"{trt_major}'s ONNX parser range {lo}-{hi}; re-export with --opset {min(hi, 20)}"))
    types = _types(model)
    consts = _constants(model)
    consumed = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    seen_restrictions: set[str] = set()
    for node in model.graph.node:
        name = node.name or f"<{node.op_type}>"
        if node.domain not in ("", "ai.onnx"):
            findings.append(Finding("error", name, node.op_type,
                                    f"op from domain {node.domain!r} is not an ONNX standard op; "
                                    "TensorRT needs a plugin for it"))
            continue
        sup = table.get(node.op_type)
        if sup is None or not sup.supported:
            findings.append(Finding("error", name, node.op_type, "not supported by TensorRT's ONNX parser"))
            continue
        data_in = node.input[0] if node.input else None
        t = types.get(data_in) if data_in else None
        if t is not None and t in _ONNX_TO_TRT and sup.types and _ONNX_TO_TRT[t] not in sup.types:
            findings.append(Finding("error", name, node.op_type, f"input {data_in!r} is {_ONNX_TO_TRT[t]}; "
                                    f"TensorRT takes {', '.join(sorted(sup.types))} here"))
        findings += _restrictions(node, name, consts, consumed, types, model)
        if sup.restrictions and node.op_type not in seen_restrictions:
            seen_restrictions.add(node.op_type)
            findings.append(Finding("info", name, node.op_type, f"restriction to respect: {sup.restrictions}"))
    for inp in model.graph.input:
        dims = inp.type.tensor_type.shape.dim
        dynamic = [i for i, d in enumerate(dims) if not d.dim_value]
        if dynamic and dynamic != [0]:
            findings.append(Finding("warning", inp.name, "", f"dynamic dimensions {dynamic}: every one needs "
                                    "a min/opt/max in the optimisation profile"))
    return findings


def _restrictions(node: Any, name: str, consts: dict[str, Any], consumed: set[str],
                  types: dict[str, int], model: Any) -> list[Finding]:
    out: list[Finding] = []
    op = node.op_type
    if op.startswith("Reduce") or op in ("Squeeze", "Unsqueeze"):
        if len(node.input) > 1 and node.input[1] and node.input[1] not in consts:
            out.append(Finding("error", name, op, f"axes input {node.input[1]!r} is computed at run time; "
                               "TensorRT needs constant axes"))
    if op in ("QuantizeLinear", "DequantizeLinear"):
        if len(node.input) > 2 and node.input[2]:
            zp = consts.get(node.input[2])
            if zp is None:
                out.append(Finding("error", name, op, "zero point is not a constant"))
            else:
                if zp.dtype.kind == "u":
                    out.append(Finding("error", name, op, f"zero point is {zp.dtype} (asymmetric/unsigned "
                                       "quantisation); TensorRT needs symmetric int8 (DLA only takes uint8)"))
                if (zp != 0).any():
                    out.append(Finding("error", name, op, "zero point must be 0 (symmetric quantisation)"))
        scale = consts.get(node.input[1]) if len(node.input) > 1 else None
        if scale is None:
            out.append(Finding("error", name, op, "scale must be a constant (initializer)"))
        elif (scale <= 0).any():
            out.append(Finding("error", name, op, "scale must be positive"))
    if op == "LayerNormalization":
        extra = [o for o in node.output[1:] if o and o in consumed]
        if extra:
            out.append(Finding("error", name, op, f"outputs {extra} (Mean/InvStdDev) are used; TensorRT "
                               "supports only the first output"))
        x_type = types.get(node.input[0])
        if x_type == 10:
            out.append(Finding("warning", name, op, "runs in FP16: ViT LayerNorm statistics overflow in FP16; "
                               "keep it in FP32"))
    if op == "Softmax" and types.get(node.input[0]) == 10:
        out.append(Finding("warning", name, op, "runs in FP16; attention softmax is range-sensitive, "
                           "prefer FP32"))
    if op == "Attention":
        for i in range(min(3, len(node.input))):
            rank = _rank(model, node.input[i])
            if rank is not None and rank != 4:
                out.append(Finding("error", name, op, f"input {i} is {rank}-D; TensorRT needs 4-D Q, K, V"))
    return out


def _rank(model: Any, tensor: str) -> int | None:
    for v in list(model.graph.value_info) + list(model.graph.input):
        if v.name == tensor and v.type.tensor_type.HasField("shape"):
            return len(v.type.tensor_type.shape.dim)
    return None


def lint_file(path: str | Path, trt_major: str = "10") -> list[Finding]:
    import onnx

    from vitedge.errors import InputError

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such ONNX file")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as e:
        raise InputError(f"{p}: not a readable ONNX model ({str(e)[:120]})") from None
    return lint_model(model, trt_major)


def errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.level == "error"]
