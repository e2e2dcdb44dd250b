"""Localisation for ONNX artifacts (ort-int8, trt-int8, trt-fp16, onnx-fp32) with ONNX Runtime.

From ONNX Runtime's own quantisation debugger (`onnxruntime.quantization.qdq_loss_debug`), which
gives the same numbers as vitedge's former code did (checked on vit-tiny, plain and with planted
outliers: identical tensors, SQNR within 1e-14 dB):
- every intermediate tensor of the reference and of QDQ / fp32 artifacts
  (`modify_model_output_intermediate_tensors` + `collect_activations`: float tensors exposed as
  outputs, graph optimisations off, so tensor names survive and Q/DQ math is computed exactly).
  Tensors are matched by name: ORT's quantiser and the FP16 converter keep the names of the float
  tensors they wrap;
- each quantised weight (and bias) matched with its fp32 original and dequantised
  (`create_weight_matching`), and its error (`compute_weight_error`): `weight_sqnr_db`;
- the SQNR formula (`compute_signal_to_quantization_noice_ratio`), with one vitedge convention on
  top (identical tensors are `inf`, see `_sqnr`).

Kept in vitedge, because the debugger has no equivalent or answers a different question:
- the accumulated error of each compute layer vs the fp32 reference (plus cosine and relative
  error), in depth order, for the "first jump";
- the layer-alone isolation (`isolate_qdq_layer`): the layer run on the *reference's* inputs,
  float vs with the artifact's Q/DQ on its activation input, weights and output. The accuracy-aware
  fallback ranks by it: upstream error never enters, so the layer whose own quantisers hurt most
  ranks first, not the layer that happens to sit after it. `act_sqnr_db` is measured the same way
  (the artifact's activation quantiser applied to the reference's tensor). The debugger's
  `create_activation_matching`/`compute_activation_error` measure that quantiser on the artifact's
  own, upstream-corrupted activations instead: on vit-tiny with planted outliers that figure is
  11.4 dB where the layer's quantiser costs 34.3 dB on correct inputs (blocks.1.mlp.2), so it
  would misdescribe every layer after a broken one;
- FP16 graphs (trt-fp16): see `run_fp16_tensors` for why their tensors are read without the
  debugger, and their local error is the SQNR lost across each layer (there are no Q/DQ pairs);
- the PyTorch module that produced each node (`_modules`), so reports say `blocks.3.mlp.0`.
"""

from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path

import numpy as np
import onnx

from vitedge.diagnose.metrics import cosine, rel_err
from vitedge.diagnose.result import Diagnosis, LayerRow
from vitedge.export.onnx_export import MODULE_KEY

COMPUTE_OPS = ("Conv", "MatMul", "Gemm")


def _session_options():  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # qdq_loss_debug's default (optimisations off: names survive, Q/DQ computed exactly), plus
    # ORT's own log kept to errors: its warnings about an unoptimised graph are not the user's problem.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    return opts


def run_all_tensors(model: onnx.ModelProto, feeds: dict[str, np.ndarray], work: Path) -> dict[str, np.ndarray]:
    """Every float tensor of `model` for `feeds` (graph inputs included), flattened: the debugger
    reshapes each saved tensor to 1-D; `_unflatten` restores the shapes the isolation needs."""
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        modify_model_output_intermediate_tensors,
    )

    src, augmented = work / "model.onnx", work / "model.augmented.onnx"
    onnx.save(model, str(src))  # the debugger works on files
    modify_model_output_intermediate_tensors(str(src), str(augmented))
    acts = collect_activations(str(augmented), [feeds], session_options=_session_options())
    return {name: runs[0] for name, runs in acts.items()}


def run_fp16_tensors(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every float node output of an FP16 graph, each exposed directly as a graph output.

    Kept instead of the debugger for FP16 graphs: ORT's CPU kernels are mostly float32, so ORT
    wraps fp16 ops in Casts, and removes back-to-back Casts when the tensor between them is not a
    graph output. The debugger exposes tensors through added Reshape nodes, which lets that
    removal skip fp16 roundings: on vit-tiny trt-fp16 the layers then measure up to 2.5 dB better
    and the ranking changes. Exposing every tensor as an output keeps every fp16 rounding the
    artifact's graph specifies (what a real fp16 engine does)."""
    import onnxruntime as ort

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    existing = {o.name for o in model.graph.output}
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    for node in model.graph.node:
        for out in node.output:
            if out and out not in existing and types.get(out) in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
                exposed.graph.output.append(onnx.helper.make_tensor_value_info(out, types[out], None))
                existing.add(out)
    session = ort.InferenceSession(exposed.SerializeToString(), _session_options(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def _is_fp16(model: onnx.ModelProto) -> bool:
    return (any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
            or any(n.op_type == "Cast" and any(a.name == "to" and a.i == onnx.TensorProto.FLOAT16 for a in n.attribute)
                   for n in model.graph.node))


def _sqnr(reference: np.ndarray, other: np.ndarray) -> float:
    """ORT's SQNR, in float64. ORT clamps a zero noise to machine epsilon (~300 dB for identical
    tensors); vitedge reports and ranks identical tensors as `inf`, as its other diagnosers do."""
    from onnxruntime.quantization.qdq_loss_debug import compute_signal_to_quantization_noice_ratio

    r = np.asarray(reference, np.float64).ravel()
    o = np.asarray(other, np.float64).ravel()
    if np.array_equal(r, o):
        return math.inf
    return compute_signal_to_quantization_noice_ratio(r, o)


def _modules(model: onnx.ModelProto) -> dict[str, str]:
    """ONNX node name -> PyTorch module (tagged at export; ORT knows nothing of torch)."""
    return {n.name: p.value for n in model.graph.node for p in n.metadata_props if p.key == MODULE_KEY}


def _shapes(model: onnx.ModelProto, batch: int) -> dict[str, list[int | None]]:
    """Tensor name -> dims (None where symbolic), the input's batch symbol resolved to `batch`."""
    inferred = onnx.shape_inference.infer_shapes(model)
    in_dims = inferred.graph.input[0].type.tensor_type.shape.dim
    batch_sym = in_dims[0].dim_param if in_dims and in_dims[0].HasField("dim_param") else None
    out: dict[str, list[int | None]] = {}
    for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output):
        out[v.name] = [d.dim_value if d.HasField("dim_value")
                       else (batch if batch_sym and d.dim_param == batch_sym else None)
                       for d in v.type.tensor_type.shape.dim]
    return out


def _unflatten(flat: np.ndarray, dims: list[int | None] | None) -> np.ndarray | None:
    """A flattened tensor in its inferred shape (at most one dim left unknown, e.g. `17*batch`)."""
    if dims is None or sum(d is None for d in dims) > 1:
        return None
    known = math.prod(d for d in dims if d is not None)
    if known == 0 or flat.size % known:
        return None
    shape = [flat.size // known if d is None else d for d in dims]
    return flat.reshape(shape)


class _Unmatched(logging.Filter):
    """Drops and counts qdq_loss_debug.create_weight_matching's "Model Error in ..." records."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("Model Error in "):
            self.count += 1
            return False
        return True


def diagnose_onnx(reference: onnx.ModelProto, artifact: onnx.ModelProto, x: np.ndarray, name: str) -> Diagnosis:
    from onnxruntime.quantization.qdq_loss_debug import compute_weight_error, create_weight_matching

    in_ref = reference.graph.input[0].name
    in_art = artifact.graph.input[0].name
    has_qdq = any(n.op_type == "DequantizeLinear" for n in artifact.graph.node)
    weights: dict[str, dict[str, np.ndarray]] = {}
    with tempfile.TemporaryDirectory(prefix="vitedge-diagnose-") as tmp:
        ref_dir, art_dir = Path(tmp) / "ref", Path(tmp) / "art"
        ref_dir.mkdir()
        art_dir.mkdir()
        ref = run_all_tensors(reference, {in_ref: x}, ref_dir)
        if _is_fp16(artifact):
            art = run_fp16_tensors(artifact, {in_art: x})
        else:
            art = run_all_tensors(artifact, {in_art: x}, art_dir)
        unmatched = _Unmatched()
        if has_qdq:
            # ORT's matcher logs one root-logger ERROR per quantised weight without a same-named
            # float weight (a weight the INT8 build folded, e.g. BatchNorm into its Linear in
            # transformers' LeViT): counted into one note below instead of a screenful of lines.
            logging.getLogger().addFilter(unmatched)
            try:
                weights = create_weight_matching(str(ref_dir / "model.onnx"), str(art_dir / "model.onnx"))
            finally:
                logging.getLogger().removeFilter(unmatched)
    weight_err = compute_weight_error(weights, err_func=_sqnr)
    shapes = _shapes(reference, len(x)) if has_qdq else {}
    modules = _modules(reference) | _modules(artifact)
    ref_inits = {i.name: onnx.numpy_helper.to_array(i) for i in reference.graph.initializer}
    producer = {o: n for n in artifact.graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in artifact.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    art_nodes = {n.name: n for n in artifact.graph.node}
    opset = next(o.version for o in reference.opset_import if o.domain in ("", "ai.onnx"))

    rows: list[LayerRow] = []
    unranked: list[str] = []
    ref_compute = [n for n in reference.graph.node if n.op_type in COMPUTE_OPS]
    for depth, rnode in enumerate(ref_compute):
        out = rnode.output[0]
        row = LayerRow(node=rnode.name, op=rnode.op_type, module=modules.get(rnode.name, ""), depth=depth)
        if out in ref and out in art:
            r, a = ref[out].ravel(), art[out].astype(np.float32).ravel()  # the debugger's tensors are 1-D
            row.sqnr_db, row.cosine, row.rel_err = _sqnr(r, a), cosine(r, a), rel_err(r, a)
        anode = art_nodes.get(rnode.name)
        if anode is not None and has_qdq and any(
                (producer.get(i) is not None and producer[i].op_type == "DequantizeLinear") for i in anode.input):
            row.quantized = True
            row.weight_sqnr_db = next((weight_err[i] for i in rnode.input
                                       if i in weight_err and weights[i]["float"].ndim > 1), None)
            # The isolation runs the layer on shaped tensors; the debugger hands them back flattened.
            inputs = {i: ref_inits[i] if i in ref_inits else _unflatten(ref[i], shapes.get(i))
                      for i in rnode.input if i in ref_inits or i in ref}
            row.act_sqnr_db, row.local_sqnr_db = isolate_qdq_layer(
                rnode, anode, artifact, inputs, weights, producer, consumers, opset)
            if row.local_sqnr_db is None:
                unranked.append(row.label)
        elif anode is not None and out in art and art[out].dtype == np.float16:
            row.quantized = True  # reduced precision: a candidate for FP32 fallback
            ins = [t for t in rnode.input if t in ref and t in art]
            if ins and row.sqnr_db is not None:
                # SQNR lost across the layer (inputs exact, e.g. the first layer: counted from 200 dB).
                before = min(min(_sqnr(ref[t], art[t].astype(np.float32)) for t in ins), 200.0)
                row.local_drop_db = max(0.0, before - row.sqnr_db)
        rows.append(row)
    method = ("ONNX Runtime (tensors via onnxruntime.quantization.qdq_loss_debug), optimisations off; tensors "
              "matched by name against the fp32 reference ONNX; "
              + ("local = the layer run in isolation on the reference's own input, float vs with its "
                 "Q/DQ (activation in, weights, output), so upstream error does not count" if has_qdq
                 else "local = SQNR lost across the layer"))
    notes = [f"{len(unranked)} quantised layer(s) could not be run alone (a tensor or weight not matched by "
             f"name), so they are not ranked: {', '.join(unranked[:5])}"] if unranked else []
    if unmatched.count:
        notes.append(f"{unmatched.count} quantised weight(s) have no same-named fp32 weight in the reference (the "
                     "INT8 build folded or renamed them), so their weight SQNR is not computed")
    return Diagnosis(artifact=name, method=method, rows=rows, samples=len(x), notes=notes)


def _init_array(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    for i in model.graph.initializer:
        if i.name == name:
            return onnx.numpy_helper.to_array(i)
    return None


def fake_quant(x: np.ndarray, q_node: onnx.NodeProto, model: onnx.ModelProto) -> np.ndarray:
    """x through QuantizeLinear -> DequantizeLinear with q_node's (per-tensor) parameters.
    Kept: the debugger only reads the Q/DQ outputs of the artifact's own run; the isolation
    applies the artifact's quantiser to the *reference's* tensor."""
    scale = _init_array(model, q_node.input[1])
    zp = _init_array(model, q_node.input[2]) if len(q_node.input) > 2 and q_node.input[2] else np.zeros((), np.uint8)
    if scale is None or zp is None:
        return x
    info = np.iinfo(zp.dtype)
    s, z = scale.astype(np.float64), zp.astype(np.float64)
    q = np.clip(np.rint(x.astype(np.float64) / s) + z, info.min, info.max)
    return ((q - z) * s).astype(np.float32)


def _run_node(node: onnx.NodeProto, values: list[np.ndarray | None], opset: int) -> np.ndarray:
    """Run one node alone with ONNX Runtime on the given input values (the debugger runs only
    whole graphs)."""
    import onnxruntime as ort

    names = [f"in{i}" if v is not None else "" for i, v in enumerate(values)]
    single = onnx.helper.make_node(node.op_type, names, ["out"], domain=node.domain)
    single.attribute.extend(node.attribute)
    inputs = [onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
              for n, v in zip(names, values, strict=True) if v is not None]
    out = onnx.helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, None)
    model = onnx.helper.make_model(onnx.helper.make_graph([single], "layer", inputs, [out]),
                                   opset_imports=[onnx.helper.make_opsetid("", opset)])
    sess = ort.InferenceSession(model.SerializeToString(), _session_options(), providers=["CPUExecutionProvider"])
    return sess.run(None, {n: v for n, v in zip(names, values, strict=True) if v is not None})[0]


def isolate_qdq_layer(rnode: onnx.NodeProto, anode: onnx.NodeProto, artifact: onnx.ModelProto,
                      inputs: dict[str, np.ndarray | None], weights: dict[str, dict[str, np.ndarray]],
                      producer: dict[str, onnx.NodeProto], consumers: dict[str, list[onnx.NodeProto]],
                      opset: int) -> tuple[float | None, float | None]:
    """(activation, whole-layer) local SQNR of one quantised layer, run in isolation on the
    reference's own inputs: float vs with the artifact's Q/DQ on its activation input, its weights
    and biases (as dequantised by ORT's `create_weight_matching`) and, if quantised, its output.
    Upstream error never enters."""
    float_in: list[np.ndarray | None] = []
    quant_in: list[np.ndarray | None] = []
    act_db = None
    for i, name in enumerate(rnode.input):
        if not name:
            float_in.append(None)
            quant_in.append(None)
            continue
        x = inputs.get(name)
        if x is None:
            return None, None
        x = np.asarray(x, np.float32)
        float_in.append(x)
        xq = x
        art_in = anode.input[i] if i < len(anode.input) else ""
        dq = producer.get(art_in)
        if dq is not None and dq.op_type == "DequantizeLinear":
            q = producer.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                xq = fake_quant(x, q, artifact)
                act_db = _sqnr(x, xq) if act_db is None else min(act_db, _sqnr(x, xq))
            elif name in weights and weights[name]["dequantized"].shape == x.shape:
                xq = np.asarray(weights[name]["dequantized"], np.float32)
            else:
                return act_db, None  # a quantised constant we cannot match: run in float it would hide its error
        quant_in.append(xq)
    out_f = _run_node(rnode, float_in, opset)
    out_q = _run_node(rnode, quant_in, opset)
    out_q_nodes = [c for c in consumers.get(anode.output[0], []) if c.op_type == "QuantizeLinear"]
    if out_q_nodes:  # the layer's output is quantised too (ORT's default QDQ): include it
        out_q = fake_quant(out_q, out_q_nodes[0], artifact)
    return act_db, _sqnr(out_f, out_q)
