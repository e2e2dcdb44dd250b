"""The classifier head stays float in every INT8 recipe: found on ONNX and OpenVINO graphs, both
heads of a two-head model, through a transposed weight, and never deeper than the head."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from vitedge.models.family import onnx_head_nodes, openvino_head_nodes


def _two_head_graph() -> onnx.ModelProto:
    """x -> body MatMul -> Relu -> {head_a MatMul (weight via Transpose), head_b Gemm} -> Add -> logits."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n) for n, s in
             [("w_body", (8, 16)), ("w_a_t", (10, 16)), ("w_b", (16, 10)), ("b_b", (10,))]]
    nodes = [
        helper.make_node("MatMul", ["x", "w_body"], ["h"], name="body"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Transpose", ["w_a_t"], ["w_a"], name="weight_t", perm=[1, 0]),
        helper.make_node("MatMul", ["r", "w_a"], ["a"], name="head_a"),
        helper.make_node("Gemm", ["r", "w_b", "b_b"], ["b"], name="head_b"),
        helper.make_node("Add", ["a", "b"], ["logits"], name="average"),
    ]
    graph = helper.make_graph(nodes, "two_heads", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_both_heads_are_found_and_nothing_deeper():
    model = _two_head_graph()
    onnx.checker.check_model(model)
    assert sorted(onnx_head_nodes(model)) == ["head_a", "head_b"]  # not "body", not the Transpose


def test_openvino_finds_the_same_heads(tmp_path):
    import openvino as ov

    path = tmp_path / "m.onnx"
    onnx.save(_two_head_graph(), str(path))
    heads = openvino_head_nodes(ov.convert_model(str(path)))
    assert len(heads) == 2 and not any("body" in h for h in heads), heads


def test_builtin_vit_head_is_its_last_gemm(tmp_path):
    from vitedge.export.onnx_export import ExportConfig, export_onnx
    from vitedge.models.resolve import load_model

    loaded = load_model("vit-tiny")
    info = export_onnx(loaded.module, loaded.card, tmp_path / "m.onnx", ExportConfig())
    model = onnx.load(str(info.path))
    heads = onnx_head_nodes(model)
    assert len(heads) == 1
    node = next(n for n in model.graph.node if n.name == heads[0])
    assert node.op_type in ("Gemm", "MatMul")
    w = next(i for i in model.graph.initializer if i.name in node.input)
    assert 10 in tuple(w.dims)  # the 10-class classifier's weight
