"""Localisation for ONNX artifacts (ort-int8, trt-int8, trt-fp16, onnx-fp32) with ONNX Runtime.

Both graphs are run with every intermediate tensor exposed as an output and graph optimisations
off (so tensor names survive and Q/DQ math is computed exactly). Tensors are matched by name:
ORT's quantiser and the FP16 converter keep the names of the float tensors they wrap.

- accumulated error: each compute layer's output in the artifact vs the same tensor in the fp32
  reference (SQNR, cosine, relative error);
- local error of a quantised layer: its activation input before vs after Q/DQ *in the same
  artifact run* (the noise this layer's own quantiser adds, independent of upstream error, as in
  ONNX Runtime's `qdq_loss_debug`), and its dequantised weights vs the fp32 weights;
- local error of an FP16 layer: how much SQNR is lost across it.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from vitedge.diagnose.metrics import cosine, rel_err, sqnr_db
from vitedge.diagnose.result import Diagnosis, LayerRow
from vitedge.export.onnx_export import MODULE_KEY

COMPUTE_OPS = ("Conv", "MatMul", "Gemm")
_FLOATS = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)


def run_all_tensors(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every float intermediate tensor of `model` for `feeds` (ORT, optimisations off)."""
    import onnxruntime as ort

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    existing = {o.name for o in model.graph.output}
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    for node in model.graph.node:
        for out in node.output:
            if out and out not in existing and types.get(out) in _FLOATS:
                exposed.graph.output.append(onnx.helper.make_tensor_value_info(out, types[out], None))
                existing.add(out)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    session = ort.InferenceSession(exposed.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def _modules(model: onnx.ModelProto) -> dict[str, str]:
    return {n.name: p.value for n in model.graph.node for p in n.metadata_props if p.key == MODULE_KEY}


def _dequantize(model: onnx.ModelProto, dq: onnx.NodeProto) -> np.ndarray | None:
    inits = {i.name: i for i in model.graph.initializer}
    if dq.input[0] not in inits:
        return None
    q = numpy_helper.to_array(inits[dq.input[0]]).astype(np.float64)
    scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float64)
    zp = numpy_helper.to_array(inits[dq.input[2]]).astype(np.float64) if len(dq.input) > 2 and dq.input[2] else 0.0
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    if np.ndim(scale) == 1 and scale.size > 1:
        shape = [1] * q.ndim
        shape[axis] = -1
        scale = scale.reshape(shape)
        zp = zp.reshape(shape) if np.ndim(zp) == 1 else zp
    return (q - zp) * scale


def diagnose_onnx(reference: onnx.ModelProto, artifact: onnx.ModelProto, x: np.ndarray, name: str) -> Diagnosis:
    in_ref = reference.graph.input[0].name
    in_art = artifact.graph.input[0].name
    ref = run_all_tensors(reference, {in_ref: x})
    art = run_all_tensors(artifact, {in_art: x})
    modules = _modules(reference) | _modules(artifact)
    ref_inits = {i.name: numpy_helper.to_array(i) for i in reference.graph.initializer}
    producer = {o: n for n in artifact.graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in artifact.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    art_nodes = {n.name: n for n in artifact.graph.node}
    has_qdq = any(n.op_type == "DequantizeLinear" for n in artifact.graph.node)
    art_types = {} if has_qdq else {
        v.name: v.type.tensor_type.elem_type for v in onnx.shape_inference.infer_shapes(artifact).graph.value_info}

    rows: list[LayerRow] = []
    ref_compute = [n for n in reference.graph.node if n.op_type in COMPUTE_OPS]
    for depth, rnode in enumerate(ref_compute):
        out = rnode.output[0]
        row = LayerRow(node=rnode.name, op=rnode.op_type, module=modules.get(rnode.name, ""), depth=depth)
        if out in ref and out in art:
            a = art[out].astype(np.float32)
            row.sqnr_db, row.cosine, row.rel_err = sqnr_db(ref[out], a), cosine(ref[out], a), rel_err(ref[out], a)
        anode = art_nodes.get(rnode.name)
        if anode is not None and has_qdq and any(
                (producer.get(i) is not None and producer[i].op_type == "DequantizeLinear") for i in anode.input):
            row.quantized = True
            row.act_sqnr_db, row.weight_sqnr_db, row.local_sqnr_db = isolate_qdq_layer(
                rnode, anode, reference, artifact, ref, ref_inits, producer, consumers)
        elif anode is not None and art_types.get(out) == onnx.TensorProto.FLOAT16:
            row.quantized = True  # reduced precision: a candidate for FP32 fallback
            ins = [t for t in rnode.input if t in ref and t in art]
            if ins and row.sqnr_db is not None:
                # SQNR lost across the layer (inputs exact, e.g. the first layer: counted from 200 dB).
                before = min(min(sqnr_db(ref[t], art[t].astype(np.float32)) for t in ins), 200.0)
                row.local_drop_db = max(0.0, before - row.sqnr_db)
        rows.append(row)
    method = ("ONNX Runtime, optimisations off; tensors matched by name against the fp32 reference ONNX; "
              + ("local = the layer run in isolation on the reference's own input, float vs with its "
                 "Q/DQ (activation in, weights, output), so upstream error does not count" if has_qdq
                 else "local = SQNR lost across the layer"))
    return Diagnosis(artifact=name, method=method, rows=rows, samples=len(x))




def _init_array(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    for i in model.graph.initializer:
        if i.name == name:
            return numpy_helper.to_array(i)
    return None


def fake_quant(x: np.ndarray, q_node: onnx.NodeProto, model: onnx.ModelProto) -> np.ndarray:
    """x through QuantizeLinear -> DequantizeLinear with q_node's (per-tensor) parameters."""
    scale = _init_array(model, q_node.input[1])
    zp = _init_array(model, q_node.input[2]) if len(q_node.input) > 2 and q_node.input[2] else np.zeros((), np.uint8)
    if scale is None or zp is None:
        return x
    info = np.iinfo(zp.dtype)
    s, z = scale.astype(np.float64), zp.astype(np.float64)
    q = np.clip(np.rint(x.astype(np.float64) / s) + z, info.min, info.max)
    return ((q - z) * s).astype(np.float32)


def _run_node(node: onnx.NodeProto, values: list[np.ndarray | None], opset: int) -> np.ndarray:
    """Run one node alone with ONNX Runtime on the given input values."""
    import onnxruntime as ort

    names = [f"in{i}" if v is not None else "" for i, v in enumerate(values)]
    single = onnx.helper.make_node(node.op_type, names, ["out"], domain=node.domain)
    single.attribute.extend(node.attribute)
    inputs = [onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
              for n, v in zip(names, values, strict=True) if v is not None]
    out = onnx.helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, None)
    model = onnx.helper.make_model(onnx.helper.make_graph([single], "layer", inputs, [out]),
                                   opset_imports=[onnx.helper.make_opsetid("", opset)])
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {n: v for n, v in zip(names, values, strict=True) if v is not None})[0]


def isolate_qdq_layer(rnode, anode, reference, artifact, ref, ref_inits, producer, consumers):  # type: ignore[no-untyped-def]
    """(activation, weight, whole-layer) local SQNR of one quantised layer, run in isolation on
    the reference's own inputs: float vs with the artifact's Q/DQ on its activation input,
    weights and (if quantised) output. Upstream error never enters."""
    opset = next(o.version for o in reference.opset_import if o.domain in ("", "ai.onnx"))
    float_in: list[np.ndarray | None] = []
    quant_in: list[np.ndarray | None] = []
    act_db = weight_db = None
    for i, name in enumerate(rnode.input):
        if not name:
            float_in.append(None)
            quant_in.append(None)
            continue
        x = ref.get(name) if name not in ref_inits else ref_inits[name]
        if x is None:
            return None, None, None
        x = np.asarray(x, np.float32)
        float_in.append(x)
        xq = x
        art_in = anode.input[i] if i < len(anode.input) else ""
        dq = producer.get(art_in)
        if dq is not None and dq.op_type == "DequantizeLinear":
            q = producer.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                xq = fake_quant(x, q, artifact)
                act_db = sqnr_db(x, xq) if act_db is None else min(act_db, sqnr_db(x, xq))
            else:
                w = _dequantize(artifact, dq)
                if w is not None and w.shape == x.shape:
                    xq = w.astype(np.float32)
                    if name in ref_inits and x.ndim > 1:
                        weight_db = sqnr_db(x, xq)
        quant_in.append(xq)
    out_f = _run_node(rnode, float_in, opset)
    out_q = _run_node(rnode, quant_in, opset)
    out_q_nodes = [c for c in consumers.get(anode.output[0], []) if c.op_type == "QuantizeLinear"]
    if out_q_nodes:  # the layer's output is quantised too (ORT's default QDQ): include it
        out_q = fake_quant(out_q, out_q_nodes[0], artifact)
    return act_db, weight_db, sqnr_db(out_f, out_q)
