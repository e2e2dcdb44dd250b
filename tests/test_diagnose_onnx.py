"""Per-layer localisation of ONNX artifacts (vitedge.diagnose.onnx_layers) on real graphs.

The case: the built-in vit-tiny with function-preserving activation outliers planted in four
layers (as in test_fallback.py), exported with the dynamo exporter and quantised by ONNX Runtime's
`quantize_static` to QDQ with vitedge's recipe (per-channel symmetric int8 weights, reduce_range,
uint8 activations, attention's activation x activation MatMuls left float). Its layers are read
through ORT's `qdq_loss_debug`; the layer-alone ranking is vitedge's own.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import warnings

import numpy as np
import onnx
import pytest

from vitedge.calib.source import load_calibration
from vitedge.diagnose.onnx_layers import _modules, diagnose_onnx
from vitedge.export.onnx_export import export_onnx
from vitedge.models.outliers import inject_outliers
from vitedge.models.resolve import load_model

pytestmark = pytest.mark.slow  # one dynamo export + ORT calibration + two diagnoses: ~1 min on 2 cores

OUTLIERS = [("mlp", 1, [5, 77, 150], 500.0), ("mlp", 3, [12, 99], 500.0),
            ("qk", 2, [3, 40], 300.0), ("qk", 4, [7, 100], 300.0)]
# The quantised layer each outlier hits: the MLP's first Linear reads the scaled LayerNorm
# channels; the fused q/k/v input projection carries the scaled query rows.
INJECTED = {"blocks.1.mlp.0", "blocks.3.mlp.0", "blocks.2.attn", "blocks.4.attn"}


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    tmp = tmp_path_factory.mktemp("diag")
    base = load_model("vit-tiny")
    module = copy.deepcopy(base.module)
    inject_outliers(module, OUTLIERS)
    export_onnx(module.eval(), base.card, tmp / "model.onnx")
    with contextlib.redirect_stdout(io.StringIO()):
        quant_pre_process(str(tmp / "model.onnx"), str(tmp / "model.pre.onnx"))
    pre = onnx.load(str(tmp / "model.pre.onnx"))
    consts = {i.name for i in pre.graph.initializer}
    float_matmuls = [n.name for n in pre.graph.node
                     if n.op_type == "MatMul" and n.input[0] not in consts and n.input[1] not in consts]
    calib = load_calibration("synthetic", base.card.preprocess, 32).inputs
    name = pre.graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter([{name: calib[i : i + 1]} for i in range(len(calib))])

        def get_next(self):  # type: ignore[no-untyped-def]
            return next(self.feeds, None)

    with contextlib.redirect_stdout(io.StringIO()):
        quantize_static(str(tmp / "model.pre.onnx"), str(tmp / "model.int8.onnx"), Reader(),
                        quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul", "Gemm", "Conv"],
                        per_channel=True, reduce_range=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, nodes_to_exclude=float_matmuls,
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    x = load_calibration("synthetic", base.card.preprocess, 8, seed=7).inputs
    return tmp, x


def test_qdq_ranking_pinpoints_the_injected_layers(case):
    tmp, x = case
    reference, artifact = onnx.load(str(tmp / "model.pre.onnx")), onnx.load(str(tmp / "model.int8.onnx"))
    diag = diagnose_onnx(reference, artifact, x, "ort-int8: model.int8.onnx")
    ranking = diag.ranking()

    # The four layers fed by planted outliers, and only they, lead the layer-alone ranking; the
    # two MLP ones lose everything on their own (SQNR near 0 dB), every other layer keeps > 28 dB.
    assert {r.module for r in ranking[:4]} == INJECTED, [r.label for r in ranking[:6]]
    assert {r.module for r in ranking[:2]} == {"blocks.1.mlp.0", "blocks.3.mlp.0"}
    assert all(r.local_sqnr_db is not None and r.local_sqnr_db < 5 for r in ranking[:2])
    assert all(r.local_sqnr_db is not None and r.local_sqnr_db > 28 for r in ranking[4:])
    # Accumulated error: the first layer where output SQNR collapses is the first injected one.
    jump = diag.first_jump()
    assert jump is not None and jump.module == "blocks.1.mlp.0"

    # Every quantised layer is measured alone, including the patch embedding that reads the
    # graph input (ORT's debugger exposes graph inputs; vitedge's former reader did not).
    quantized = [r for r in diag.rows if r.quantized]
    assert len(quantized) == 1 + 6 * 4 + 1 and not diag.notes  # patch conv, 6 x (qkv, out, fc1, fc2), head
    assert all(r.local_sqnr_db is not None and r.weight_sqnr_db is not None for r in quantized)
    conv = next(r for r in quantized if r.op == "Conv")
    assert conv.module == "patch_embed.proj" and 25 < conv.local_sqnr_db < 60

    # act_sqnr_db is the layer's input quantiser on the *reference's* activation: for the layer
    # right after a broken one it stays high (ORT's in-run pre/post-QDQ figure would read ~11 dB,
    # measuring upstream damage, not this quantiser).
    after_broken = next(r for r in quantized if r.module == "blocks.1.mlp.2")
    assert after_broken.sqnr_db is not None and after_broken.sqnr_db < 5  # its input is wrecked upstream
    assert after_broken.act_sqnr_db is not None and after_broken.act_sqnr_db > 25

    # Weight SQNR from ORT's create_weight_matching agrees with an independent dequantisation.
    r = next(r for r in quantized if r.module == "blocks.0.mlp.0")
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in artifact.graph.initializer}
    ref_inits = {i.name: onnx.numpy_helper.to_array(i) for i in reference.graph.initializer}
    node = next(n for n in reference.graph.node if n.name == r.node)
    wname = next(i for i in node.input if i in ref_inits and ref_inits[i].ndim == 2)
    w = ref_inits[wname].astype(np.float64)
    q = inits[wname + "_quantized"].astype(np.float64)
    scale = inits[wname + "_scale"].astype(np.float64)
    deq = q * scale.reshape(1, -1)  # per output channel (axis 1 of a MatMul weight), zero point 0
    expect = 10 * math.log10(float((w**2).sum() / ((w - deq) ** 2).sum()))
    assert r.weight_sqnr_db == pytest.approx(expect, abs=1e-3)

    # Layers are named after the PyTorch modules that produced them.
    assert _modules(reference)[r.node] == "blocks.0.mlp.0"
    md = diag.to_markdown()
    assert "blocks.1.mlp.0" in md and "qdq_loss_debug" in diag.method


def test_fp16_keeps_every_rounding_and_ranks_attention(case):
    from onnxconverter_common import float16

    tmp, x = case
    fp32 = onnx.load(str(tmp / "model.onnx"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one warning per weight below fp16's normal range
        fp16 = float16.convert_float_to_float16(
            fp32, keep_io_types=True, min_positive_val=1e-7, max_finite_val=65504.0,
            op_block_list=["LayerNormalization", "Softmax", "ReduceMean", "Pow", "Sqrt", "Div", "Exp", "Erf"])
    diag = diagnose_onnx(fp32, fp16, x, "trt-fp16: model.fp16.onnx")
    measured = [r for r in diag.rows if r.local_drop_db is not None]
    assert len(measured) >= 30
    # fp16 noise is small everywhere (accumulated SQNR stays > 45 dB) ...
    assert all(r.sqnr_db is not None and r.sqnr_db > 45 for r in diag.rows)
    # ... and no layer's local drop is an artefact: a layer reading the exact graph input has no
    # fp16 input to compare against (reading tensors through the debugger would count the patch
    # embedding's drop from 200 dB, ~130 dB, and rank it first).
    assert all(r.local_drop_db < 10 for r in measured), max(measured, key=lambda r: r.local_drop_db).label
    top = diag.ranking()[0]
    assert top.local_drop_db is not None and top.local_drop_db > 0


def test_unmatched_weight_errors_become_one_count(caplog):
    """ONNX Runtime's weight matcher logs a root ERROR per quantised weight with no same-named fp32
    weight (transformers' LeViT: 21 lines when its BatchNorms fold into the Linears); diagnose turns
    them into one note. Other errors still reach their handlers."""
    import logging

    from vitedge.diagnose.onnx_layers import _Unmatched

    flt = _Unmatched()
    logging.getLogger().addFilter(flt)
    try:
        with caplog.at_level(logging.ERROR):
            logging.error("Model Error in 'a.onnx': weight tensor 'val_460' not found!")
            logging.error("Model Error in 'a.onnx': weight tensor 'val_476' not found!")
            logging.error("something else broke")
    finally:
        logging.getLogger().removeFilter(flt)
    assert flt.count == 2
    assert [r.getMessage() for r in caplog.records] == ["something else broke"]
