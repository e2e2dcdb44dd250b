"""et-fp32 / et-int8: real ExecuTorch programs built from the built-in models, run by the real
ExecuTorch runtime (XNNPACK) through vitedge's runner, compared with the PyTorch module.

Builds are slow on 2 shared cores (torch.export + XNNPACK lowering, PT2E calibration), so each
(model, precision) is built once per module and shared by the tests that read it."""

from __future__ import annotations

import numpy as np
import pytest
from cores import THREADS

pytest.importorskip("executorch.runtime", reason="needs the executorch extra")
pytest.importorskip("executorch.backends.xnnpack.partition.xnnpack_partitioner")

import torch  # noqa: E402
from shared_bundles import shared_bundle  # noqa: E402

from vitedge.calib.datasets import synthetic_split  # noqa: E402
from vitedge.calib.source import load_calibration  # noqa: E402
from vitedge.errors import InputError, UsageError  # noqa: E402
from vitedge.export.config import ExportConfig  # noqa: E402
from vitedge.models.resolve import load_model  # noqa: E402
from vitedge.runtimes.executorch_runner import RUNTIME, ExecuTorchRunner  # noqa: E402
from vitedge.targets.context import BuildContext  # noqa: E402
from vitedge.targets.executorch import EtOptions, build_et_fp32, build_et_int8, delegation_report  # noqa: E402

MODELS = ("vit-tiny", "convnext-zepto")
N_TEST = 64


def _ctx(tmp, name, options=EtOptions(), static_batch=1, calib=True):
    loaded = load_model(name)
    (tmp / "bundle").mkdir(parents=True)
    (tmp / "work").mkdir()
    cal = load_calibration("synthetic", loaded.card.preprocess, 64, 0) if calib else None
    return BuildContext(loaded=loaded, bundle_dir=tmp / "bundle", work_dir=tmp / "work", onnx=None,
                        options=options, export=ExportConfig(static_batch=static_batch), calibration=cal,
                        threads=THREADS)


def _run(path, x, threads=THREADS, **opts):
    with ExecuTorchRunner(path, threads=threads, **opts) as r:
        b = r.max_batch()
        outs = [r.infer({"input": x[i:i + b]})["logits"] for i in range(0, len(x), b)]
        return np.concatenate(outs), r


def _data(loaded):
    spec = loaded.card.preprocess
    x = synthetic_split("test", spec, N_TEST, 0).as_inputs(spec)
    torch.set_num_threads(THREADS)
    with torch.no_grad():
        ref = loaded.module.eval()(torch.from_numpy(x)).numpy()
    return x, ref


@pytest.fixture(scope="module")
def built():
    """(ctx, artifact, .pte) of `vitedge export NAME --target et-PRECISION`, the bundle the contract
    test also reads (tests/shared_bundles.py: built once per run, 64 calibration images)."""
    def get(name, precision):
        b = shared_bundle(f"et-{precision}", name)
        return b.ctx, b.artifact, b.main_file
    return get


@pytest.mark.slow
def test_et_fp32_matches_pytorch(built):
    # the ViT's fp32 program is held to the same 1e-4 in test_et_dynamic_batch_opt_in (built there
    # with a dynamic batch: one vit-tiny fp32 lowering instead of two, about 45 s of the suite)
    ctx, art, pte = built("convnext-zepto", "fp32")
    assert art.runtime == "executorch" and art.main_file == "model.pte" and pte.stat().st_size > 1e5
    assert pte.read_bytes()[4:8] == b"ET12"  # the ExecuTorch flatbuffer identifier
    x, ref = _data(ctx.loaded)
    out, runner = _run(pte, x)
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() < 1e-4
    assert (out.argmax(1) == ref.argmax(1)).all()
    d = art.details
    # the heavy ops are in the delegate; what is left is reported by op name
    assert d["delegated_nodes"] > 0 and d["delegate_calls"] >= 1
    assert any("linear" in k or "convolution" in k or "addmm" in k for k in d["delegated_ops"])
    assert d["non_delegated_nodes"] == sum(d["non_delegated_ops"].values())
    assert "getitem" not in d["non_delegated_ops"]
    assert d["batch"] == {"static": 1}


def _attention_stays_in_the_delegate(d):
    """The plain-softmax SDPA decomposition keeps softmax and both matmuls in XNNPACK and leaves
    none of torch's masked-row guard (eq/any/where/logical_not) on the portable kernels."""
    assert d["attention"].startswith("6 SDPA")
    assert any("softmax" in k for k in d["delegated_ops"])
    guard = ("eq", "any", "where", "logical_not", "full_like")
    # keys are "aten.eq.Tensor"-like; a dynamic batch adds symbolic-size ones with fewer dots
    assert not [k for k in d["non_delegated_ops"] if set(k.split(".")[1:2]) & set(guard)], d["non_delegated_ops"]


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_et_int8_within_int8_tolerance(built, name):
    ctx, art, pte = built(name, "int8")
    x, ref = _data(ctx.loaded)
    out, _ = _run(pte, x)
    cos = (out * ref).sum(1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1))
    assert np.isfinite(out).all()
    assert cos.mean() >= 0.998, cos.mean()
    assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.98
    assert np.abs(out - ref).max() > 1e-6  # really quantised, not the fp32 program
    d = art.details
    assert d["quantize_nodes"] > 0 and d["calibration"]["samples"] == 64
    assert "per-channel" in d["scheme"]["weights"]
    # int8 weights: clearly smaller than the fp32 weights alone (4 bytes a parameter)
    fp32_weights = 4 * sum(p.numel() for p in ctx.loaded.module.parameters())
    assert pte.stat().st_size < 0.5 * fp32_weights
    if name == "vit-tiny":
        _attention_stays_in_the_delegate(d)  # quantised too


@pytest.mark.slow
def test_et_runner_specs_threads_and_info(built):
    _, _, pte = built("convnext-zepto", "fp32")
    with ExecuTorchRunner(pte, threads=1) as r:
        (spec,) = r.inputs()
        assert (spec.name, spec.dtype, spec.shape) == ("input", "float32", (1, 3, 64, 64))
        assert r.outputs()[0].shape == (1, 10)
        info = r.info()
        assert info["threads"] == 1 and info["threadpool"] == 1
        assert "XnnpackBackend" in info["backends"]
        with pytest.raises(InputError):
            r.infer({"input": np.zeros((2, 3, 64, 64), np.float32)})  # static batch 1
    with ExecuTorchRunner(pte, threads=2) as r:
        assert r.info()["threadpool"] == 2


@pytest.mark.slow
def test_et_int8_keep_float_leaves_modules_unquantised(built, tmp_path):
    _, base, _ = built("convnext-zepto", "int8")
    # by default the classifier head stays float, and the 7x7 depthwise convs (XNNPACK's int8
    # kernel for them is slower than its fp32 one: targets.pt2e_fuse), with a note saying so
    large = base.details["large_depthwise"]["names"]
    assert len(large) == 10 and all(n.endswith(".dwconv") for n in large)
    assert base.details["kept_float"] == ["head", *large]
    assert any("larger than 5x5 kept float" in n and "--no-et-float-depthwise" in n and "column bands" in n
               for n in base.notes)  # and converted as bands XNNPACK's depthwise kernels take
    # keep_float names what stays float, whatever else asks for it quantised (quantize_head);
    # the ten depthwise convs now quantised: more quantize nodes than the default build, whose
    # kept modules (head and depthwise convs) have none
    ctx = _ctx(tmp_path / "keep", "convnext-zepto", EtOptions(keep_float=("head",), quantize_head=True,
                                                              float_depthwise=False))
    art = build_et_int8(ctx)
    assert art.details["kept_float"] == ["head"]
    assert art.details["quantize_nodes"] > base.details["quantize_nodes"]
    x, ref = _data(ctx.loaded)
    out, _ = _run(ctx.bundle_dir / art.main_file, x)
    cos = (out * ref).sum(1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.mean() >= 0.998


@pytest.mark.slow
def test_et_program_that_cannot_run_is_an_export_error(tmp_path):
    """Keeping ConvNeXt's last stage in float lowers fine but XNNPACK cannot propagate shapes at
    execution (ExecuTorch 1.5.1: xnn_status_invalid_parameter); the build's smoke run turns that
    into an ExportError naming the stage instead of shipping a .pte that fails on the device."""
    from vitedge.errors import ExportError

    ctx = _ctx(tmp_path, "convnext-zepto", EtOptions(keep_float=("head", "stages.3")))
    with pytest.raises(ExportError, match="smoke run"):
        build_et_int8(ctx)


def test_et_keep_float_unknown_module_is_a_usage_error(tmp_path):
    ctx = _ctx(tmp_path, "vit-tiny", EtOptions(keep_float=("blocks.99",)))
    with pytest.raises(UsageError, match="blocks.99"):
        build_et_int8(ctx)


def test_et_runner_rejects_a_corrupt_program(tmp_path):
    bad = tmp_path / "bad.pte"
    bad.write_bytes(b"\0" * 64 + b"not a program")
    with pytest.raises(InputError, match="ExecuTorch cannot load"):
        ExecuTorchRunner(bad).activate()
    with pytest.raises(InputError, match="no such"):
        ExecuTorchRunner(tmp_path / "missing.pte").activate()


def test_runtime_declaration():
    assert RUNTIME.opens == (".pte",) and RUNTIME.needs_torch and not RUNTIME.thread_safe
    assert RUNTIME.available()


def test_delegation_report_counts_a_real_lowered_graph():
    """A tiny module with one XNNPACK op (linear) and one op XNNPACK does not take (layer_norm)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    m = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8)).eval()
    ep = torch.export.export(m, (torch.zeros(1, 8),))
    edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])
    rep = delegation_report(edge.exported_program().graph_module)
    assert rep["delegate_calls"] == 1
    assert any("linear" in k or "addmm" in k for k in rep["delegated_ops"])
    assert list(rep["non_delegated_ops"]) == ["aten.native_layer_norm.default"]


@pytest.mark.slow
def test_et_dynamic_batch_opt_in(tmp_path):
    ctx = _ctx(tmp_path, "vit-tiny", EtOptions(dynamic_batch=True, max_batch=8), static_batch=None, calib=False)
    art = build_et_fp32(ctx)
    assert art.details["batch"] == {"dynamic": [1, 8]} and art.runner_options["dynamic_batch"]
    _attention_stays_in_the_delegate(art.details)
    x, ref = _data(ctx.loaded)
    with ExecuTorchRunner(ctx.bundle_dir / art.main_file, threads=THREADS, **art.runner_options) as r:
        assert r.inputs()[0].shape[0] == "batch" and r.max_batch() == 8
        for n in (1, 5, 8):
            out = r.infer({"input": x[:n]})["logits"]
            assert out.shape == (n, 10) and np.abs(out - ref[:n]).max() < 1e-4


def test_attention_with_an_additive_bias_is_decomposed_without_the_masked_row_guard():
    """A learned position bias passed as SDPA's float attn_mask (timm's TinyViT, Swin) takes
    the plain decomposition too: no eq/any/where/full_like guard for the portable kernels, the same
    numbers. A boolean mask keeps torch's own decomposition (a row can be fully masked there)."""
    from vitedge.targets.executorch import _plain_sdpa

    class Biased(torch.nn.Module):
        def __init__(self, mask):
            super().__init__()
            self.register_buffer("mask", mask)

        def forward(self, x):
            return torch.nn.functional.scaled_dot_product_attention(x, x, x, attn_mask=self.mask)

    x = torch.randn(1, 2, 5, 8)
    guard = {"eq", "any", "where", "logical_not", "full_like"}
    for mask, plain in ((torch.randn(2, 5, 5), True), (torch.rand(5, 5) > 0.3, False)):
        module = Biased(mask).eval()
        ep, rewritten = _plain_sdpa(torch.export.export(module, (x,), strict=False))
        assert rewritten == (1 if plain else 0)
        ops = {str(n.target).split(".")[1] for n in ep.graph.nodes if n.op == "call_function" and "aten" in str(n.target)}
        # rewritten: no guard left; not: SDPA left whole for torch's own decomposition at lowering
        assert (not ops & guard and "scaled_dot_product_attention" not in ops) if plain else \
            ops == {"scaled_dot_product_attention"}, ops
        torch.testing.assert_close(ep.module()(x), module(x), atol=1e-5, rtol=1e-5)
