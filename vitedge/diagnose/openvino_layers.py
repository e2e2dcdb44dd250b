"""Localisation for OpenVINO artifacts (ov-int8, and the float IRs).

Layers are matched by friendly name between the artifact IR and an fp32 IR converted from the
same ONNX (NNCF keeps the names of the ops it quantises). Accumulated error: each compute op's
output in the artifact vs the reference. Local error of a quantised op: leave-one-out on the
artifact itself - bypass the FakeQuantize nodes that feed this op (its activation quantisers)
and measure how much SQNR the final logits regain; NNCF's int8 weights are per-channel and not
bypassed. Compiled with the f32 inference-precision hint so bf16 does not blur the picture.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vitedge.diagnose.metrics import cosine, rel_err, sqnr_db
from vitedge.diagnose.result import Diagnosis, LayerRow
from vitedge.runtimes import sigstack

COMPUTE_TYPES = ("MatMul", "Convolution", "GroupConvolution", "ScaledDotProductAttention")
_PASS = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Gather", "Concat", "Split", "VariadicSplit",
         "StridedSlice", "Slice", "Convert"}
_CFG = {"INFERENCE_PRECISION_HINT": "f32", "NUM_STREAMS": "1"}


def _compute_ops(model: Any) -> list[Any]:
    return [op for op in model.get_ordered_ops() if op.get_type_name() in COMPUTE_TYPES]


def _run(model: Any, x: np.ndarray, extra: list[Any]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Logits and the values of `extra` outputs (added to a copy of the model)."""
    import openvino as ov

    m = model.clone()
    by_name = {op.get_friendly_name(): op for op in m.get_ordered_ops()}
    added = m.add_outputs([by_name[op.get_friendly_name()].output(0) for op in extra]) if extra else []
    with sigstack.preserved():  # see vitedge.runtimes.sigstack
        compiled = ov.Core().compile_model(m, "CPU", _CFG)
        res = compiled.create_infer_request().infer({m.inputs[0].get_any_name(): x})
        logits = np.array(res[compiled.outputs[0]])
        # Look each added output up by port: asking for a port that already is an output (the
        # head MatMul of a model whose logits come straight from it) adds no new one.
        ports = [(o.get_node().get_friendly_name(), o.get_index()) for o in m.outputs]
        values = [np.array(res[compiled.outputs[ports.index((o.get_node().get_friendly_name(), o.get_index()))]])
                  for o in added]
        del compiled, res
    return logits, values


def _feeding_fqs(op: Any) -> list[Any]:
    """FakeQuantize nodes whose output reaches `op`'s inputs through pass-through ops."""
    found = []
    for inp in op.inputs():
        node = inp.get_source_output().get_node()
        while node.get_type_name() in _PASS:
            node = node.input_value(0).get_node()
        if node.get_type_name() == "FakeQuantize":
            found.append(node)
    return found


def diagnose_openvino(reference: Any, artifact: Any, x: np.ndarray, name: str,
                      modules: dict[str, str] | None = None) -> Diagnosis:
    modules = modules or {}
    ref_ops = {op.get_friendly_name(): op for op in _compute_ops(reference)}
    art_ops = _compute_ops(artifact)
    shared = [op for op in art_ops if op.get_friendly_name() in ref_ops]
    ref_logits, ref_vals = _run(reference, x, [ref_ops[op.get_friendly_name()] for op in shared])
    art_logits, art_vals = _run(artifact, x, shared)
    base_db = sqnr_db(ref_logits, art_logits)
    rows = []
    for depth, op in enumerate(shared):
        n = op.get_friendly_name()
        r, a = ref_vals[depth], art_vals[depth]
        onnx_name = n.split("/")[0]
        row = LayerRow(node=n, op=op.get_type_name(), module=modules.get(onnx_name, ""), depth=depth,
                       sqnr_db=sqnr_db(r, a), cosine=cosine(r, a), rel_err=rel_err(r, a))
        fqs = _feeding_fqs(op)
        if fqs:
            row.quantized = True
            # Leave-one-out: bypass this op's activation quantisers, see what the logits regain.
            m = artifact.clone()
            by_name = {o.get_friendly_name(): o for o in m.get_ordered_ops()}
            for fq in fqs:
                node = by_name[fq.get_friendly_name()]
                for target in list(node.output(0).get_target_inputs()):
                    target.replace_source_output(node.input_value(0))
            logits, _ = _run(m, x, [])
            row.local_drop_db = max(0.0, sqnr_db(ref_logits, logits) - base_db)
        rows.append(row)
    return Diagnosis(
        artifact=name, samples=len(x), rows=rows,
        method="OpenVINO CPU (f32 hint); ops matched by friendly name against an fp32 IR of the same ONNX; "
               "local = logits SQNR regained when only this op's activation quantisers are bypassed",
        notes=[f"logits SQNR of the artifact vs fp32: {base_db:.1f} dB"])
