"""Export-time module rewrites (vitedge.export.rewrites): same maths, a faster graph form."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from cores import THREADS

from vitedge.export.onnx_export import ExportConfig, export_onnx
from vitedge.export.rewrites import apply_rewrites
from vitedge.models.resolve import load_model
from vitedge.runtimes.openvino_runner import OpenVinoRunner
from vitedge.targets.registry import get_target

CF = ("convnext-channels-first",)


def _randomise(module: torch.nn.Module) -> None:
    """Non-trivial layer scale, GRN and LayerNorm affine parameters (random init leaves them at
    1e-6 / zero / one, where a rewrite that dropped them would still match)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith(("gamma", "beta", "norm.weight", "norm.bias")) or ".grn." in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5 + (1.0 if name.endswith("norm.weight") else 0.0))


# (name, blocks with channels-last MLPs that must be swapped): timm's atto..nano use conv_mlp
# (LayerNorm2d in NCHW blocks), tiny and up the channels-last MLP; the V2 models add GRN.
CASES = [("convnext-zepto", 8), ("convnextv2-atto", 12), ("timm:convnext_atto", 0),
         ("timm:convnext_atto/conv_mlp=False", 12), ("timm:convnextv2_atto", 0)]


def _load(name):
    if not name.startswith("timm:"):
        return load_model(name, random_init=name != "convnext-zepto")
    timm = pytest.importorskip("timm")
    arch, _, kw = name.removeprefix("timm:").partition("/")
    module = timm.create_model(arch, pretrained=False, **({"conv_mlp": False} if kw else {})).eval()
    return module, (224, 224)


@pytest.mark.parametrize("name, blocks", CASES)
def test_channels_first_convnext_computes_the_same(name, blocks):
    loaded = _load(name)
    module, (h, w) = loaded if isinstance(loaded, tuple) else (loaded.module, loaded.card.preprocess.input_size)
    _randomise(module)
    before = _channels_last_layers(module)
    assert len(before) >= blocks  # the model has what this case means to test
    rewritten, counts = apply_rewrites(module, CF)
    assert counts[CF[0]] >= max(blocks, 4) and rewritten is not module
    assert not _channels_last_layers(rewritten)  # every channels-last layer was swapped
    x = torch.randn(3, 3, h, w, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = module(x), rewritten(x)
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-4)
    assert expected.std() > 0.1  # the comparison has something to compare


def _channels_last_layers(module):
    """Blocks that permute to channels-last, and permuting LayerNorm2d layers."""
    return [m for m in module.modules() if (type(m).__name__ in ("ConvNeXtBlock", "Block")
                                            and not getattr(m, "use_conv_mlp", False))
            or type(m).__name__ == "LayerNorm2d"]


def test_a_model_the_rewrite_does_not_know_is_left_alone():
    loaded = load_model("vit-tiny")
    same, counts = apply_rewrites(loaded.module, CF)
    assert same is loaded.module and counts == {CF[0]: 0}
    with pytest.raises(ValueError, match="unknown export rewrite"):
        apply_rewrites(loaded.module, ("no-such-rewrite",))


def test_openvino_targets_export_convnext_without_transposes(tmp_path):
    """The OpenVINO targets ask for the rewrite (why: vitedge.export.rewrites); the graph they
    start from has no Transpose, the default export has two per block, and both match PyTorch."""
    loaded = load_model("convnext-zepto")
    cfg = get_target("ov-int8").export_config(ExportConfig(static_batch=1))
    assert cfg.rewrites == CF and get_target("ort-int8").export_config(ExportConfig()).rewrites == ()
    info = export_onnx(loaded.module, loaded.card, tmp_path / "cf.onnx", cfg)
    export_onnx(loaded.module, loaded.card, tmp_path / "default.onnx", ExportConfig(static_batch=1))
    assert info.rewrites == {CF[0]: 14} and info.to_dict()["rewrites"] == {CF[0]: 14}

    def transposes(name):
        return [n.op_type for n in onnx.load(str(tmp_path / name)).graph.node].count("Transpose")

    assert transposes("default.onnx") >= 2 * 8 and transposes("cf.onnx") == 0
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        expected = loaded.module(torch.from_numpy(x)).numpy()
    with OpenVinoRunner(tmp_path / "cf.onnx", threads=THREADS) as runner:
        np.testing.assert_allclose(runner.infer({"input": x})["logits"], expected, atol=1e-4)


def test_mobilevitv2_folds_patches_without_col2im(tmp_path):
    """transformers' MobileViTV2 unfolds/folds its patches with F.unfold/F.fold, which the ONNX
    exporter writes as Col2Im: TensorRT's parser has no Col2Im (the zoo's three TRT cells failed the
    lint). Every ONNX export rewrites it as a reshape (vitedge.export.rewrites.ALWAYS): the same
    maths, no Col2Im, a clean TensorRT lint, and the same logits in ONNX Runtime."""
    pytest.importorskip("transformers")
    import onnxruntime as ort
    from hf_models import save_folder

    from vitedge.export.rewrites import ALWAYS
    from vitedge.lint.tensorrt import lint_file

    loaded = load_model(str(save_folder("mobilevitv2", tmp_path / "mobilevitv2")), random_init=True)
    module, size = loaded.module, loaded.card.preprocess.input_size
    layers = [m for m in module.modules() if type(m).__name__ == "MobileViTV2Layer"]
    attention = [m for m in module.modules() if type(m).__name__ == "MobileViTV2LinearSelfAttention"]
    assert len(layers) >= 2 and all(m.patch_height > 1 for m in layers)  # what this test is about
    assert len(attention) > len(layers)  # inside the layers: the walk must reach them after the swap
    rewritten, counts = apply_rewrites(module, ALWAYS)
    swapped = {"patch-fold-as-reshape": len(layers), "implicit-broadcast": len(attention)}
    assert counts == {**dict.fromkeys(ALWAYS, 0), **swapped} and rewritten is not module
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = module(x)
        torch.testing.assert_close(rewritten(x), expected, atol=1e-6, rtol=1e-5)
        feature = torch.randn(2, 5, 8, 12)  # the methods themselves, against unfold/fold
    layer = next(m for m in rewritten.modules() if type(m).__name__ == "MobileViTV2Layer")
    orig = type(layer)
    patches, hw = layer.unfolding(feature)
    ref_patches, ref_hw = orig.unfolding(layer, feature)
    assert hw == ref_hw and torch.equal(patches, ref_patches)
    assert torch.equal(layer.folding(patches, hw), orig.folding(layer, ref_patches, ref_hw))
    assert expected.std() > 1e-3  # the comparison has something to compare (models.untrained)

    info = export_onnx(module, loaded.card, tmp_path / "m.onnx", ExportConfig())
    assert info.rewrites == swapped
    ops = {n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node}
    assert "Col2Im" not in ops
    assert not [f for f in lint_file(tmp_path / "m.onnx") if f.level == "error"]
    got = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-4)
    # a model without such layers: the export reports no rewrite it did not make
    vit = load_model("vit-tiny")
    assert export_onnx(vit.module, vit.card, tmp_path / "v.onnx", ExportConfig()).rewrites == {}
    # module-based targets convert the same rewritten network (BuildContext.network()): no expand
    # left for litert-torch to lower as the BROADCAST_TO its converter rejected (the zoo's
    # MobileViTV2 LiteRT cells; the CI sample's mobilevitv2 litert-fp32 converts it)
    assert "aten.expand.default" in _aten_ops(module, x[:1])
    assert "aten.expand.default" not in _aten_ops(rewritten, x[:1])


def _aten_ops(module: torch.nn.Module, x: torch.Tensor) -> set[str]:
    ep = torch.export.export(module.eval(), (x,), strict=False).run_decompositions({})
    return {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}


def test_beit_position_index_is_a_constant_core_ml_converts(tmp_path):
    """transformers' BEiT builds its relative-position index in forward by index assignment;
    coremltools 9 rejected the graph (select_scatter of int into float: the zoo's BEiT Core ML
    cells). The rewrite makes the index a buffer at the exported size: same logits, no scatter,
    and Core ML converts it."""
    pytest.importorskip("transformers")
    from hf_models import save_folder

    from vitedge.export.rewrites import ALWAYS

    loaded = load_model(str(save_folder("beit", tmp_path / "beit")), random_init=True)
    module, size = loaded.module, loaded.card.preprocess.input_size
    biases = [m for m in module.modules() if type(m).__name__ == "BeitRelativePositionBias"]
    assert biases  # what this test is about: the saved config uses relative position bias
    rewritten, counts = apply_rewrites(module, ALWAYS)
    assert counts["constant-position-index"] == len(biases)
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = module(x)
        torch.testing.assert_close(rewritten(x), expected, atol=1e-6, rtol=1e-5)
    assert expected.std() > 1e-3
    scatter = {"aten.select_scatter.default", "aten.index_put.default", "aten.index_put_.default",
               "aten.copy_.default", "aten.slice_scatter.default"}
    assert _aten_ops(module, x[:1]) & scatter  # the original writes the index in the graph
    assert not _aten_ops(rewritten, x[:1]) & scatter
    # another window size (interpolated position encodings) still computes its own index
    bias = next(m for m in rewritten.modules() if type(m).__name__ == "BeitRelativePositionBias")
    other = tuple(w + 1 for w in bias.window_size)
    assert torch.equal(bias.generate_relative_position_index(other),
                       type(bias).generate_relative_position_index(other))
    ct = pytest.importorskip("coremltools")  # [all] installs it: CI runs the conversion
    ep = torch.export.export(rewritten.eval(), (x[:1],), strict=False).run_decompositions({})
    mlmodel = ct.convert(ep, inputs=[ct.TensorType(name="input", shape=tuple(x[:1].shape), dtype=np.float32)],
                         convert_to="mlprogram", skip_model_load=True)
    assert mlmodel.get_spec().WhichOneof("Type") == "mlProgram"


@pytest.mark.parametrize("padded", [False, True], ids=["sliced-output", "padded-input"])
@pytest.mark.parametrize("kernel", [7, 9, (7, 5)])
def test_large_depthwise_splits_into_bands_the_same_maths(kernel, padded):
    from torch import nn

    from vitedge.export.rewrites import DWCONV_TAPS, SplitDepthwise

    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    conv = nn.Conv2d(12, 12, (kh, kw), padding=(kh // 2, kw // 2), groups=12).eval()
    others = [nn.Conv2d(12, 12, 5, padding=2, groups=12), nn.Conv2d(12, 12, 7, padding=3, groups=12, stride=2),
              nn.Conv2d(12, 12, 7, padding=0, groups=12), nn.Conv2d(12, 24, 7, padding=3)]
    model = nn.Sequential(conv, *others).eval()
    name = "split-large-depthwise" + ("-padded" if padded else "")
    out, counts = apply_rewrites(model, (name,))
    assert counts == {name: 1}  # 5x5, strided, unpadded and dense convs stay
    split = out[0]
    assert isinstance(split, SplitDepthwise) and split.pad_input == padded
    assert all(type(m) is nn.Conv2d for m in out[1:])
    assert all(p.kernel_size[0] * p.kernel_size[1] <= DWCONV_TAPS for p in split.parts)
    assert sum(p.kernel_size[1] for p in split.parts) == kw
    x = torch.randn(2, 12, 15, 11, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(split(x), conv(x), atol=1e-5, rtol=1e-5)


def test_xnnpack_runs_the_split_depthwise_on_its_depthwise_kernels(tmp_path):
    """What the rewrite is for, from ExecuTorch's own profiler (ETDump): XNNPACK runs a 7x7
    depthwise conv as a grouped IGEMM and the split one on its DWConv kernels."""
    pytest.importorskip("executorch.runtime", reason="needs the executorch extra")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from torch import nn

    from vitedge.runtimes.executorch_runner import ExecuTorchRunner

    conv = nn.Sequential(nn.Conv2d(8, 8, 7, padding=3, groups=8)).eval()
    split, _ = apply_rewrites(conv, ("split-large-depthwise",))
    x = torch.randn(1, 8, 14, 14)
    kinds = {}
    for name, module in (("dw7", conv), ("split", split)):
        program = to_edge_transform_and_lower(torch.export.export(module, (x,)),
                                              partitioner=[XnnpackPartitioner()]).to_executorch()
        (tmp_path / f"{name}.pte").write_bytes(program.buffer)
        with ExecuTorchRunner(tmp_path / f"{name}.pte", threads=1) as runner:
            np.testing.assert_allclose(runner.infer({"input": x.numpy()})["logits"], module(x).detach().numpy(),
                                       atol=1e-5)
            kinds[name] = {r["op"]: r["path"] for r in runner.op_profile(runs=2)["ops"]}
    assert kinds["dw7"].get("Convolution (NHWC, F32) IGEMM") == "XNNPACK", kinds["dw7"]
    assert kinds["split"].get("Convolution (NHWC, F32) DWConv") == "XNNPACK", kinds["split"]
    assert not any("IGEMM" in k or "convolution" in k for k in kinds["split"]), kinds["split"]


def test_only_the_xnnpack_targets_convert_split_depthwise(tmp_path):
    from vitedge.export.rewrites import SplitDepthwise
    from vitedge.targets.context import BuildContext
    from vitedge.targets.registry import all_targets

    loaded = load_model("convnext-zepto")  # ten 7x7 depthwise convolutions
    asking = {t.name: r for t in all_targets() for r in t.export_config(ExportConfig()).rewrites
              if r.startswith("split-large-depthwise")}
    assert asking == {"et-fp32": "split-large-depthwise", "et-int8": "split-large-depthwise",
                      "litert-fp32": "split-large-depthwise-padded", "litert-fp16": "split-large-depthwise-padded"}
    ctx = BuildContext(loaded=loaded, bundle_dir=tmp_path, work_dir=tmp_path, onnx=None, options=None,
                       export=get_target("et-int8").export_config(ExportConfig()))
    network = ctx.network()
    assert network is not loaded.module and sum(isinstance(m, SplitDepthwise) for m in network.modules()) == 10
    assert ctx.rewrite_notes() == ["converted after module rewrites (same maths, vitedge.export.rewrites): "
                                   "split-large-depthwise (10 layers)"]
    plain = BuildContext(loaded=loaded, bundle_dir=tmp_path, work_dir=tmp_path, onnx=None, options=None)
    assert plain.network() is loaded.module and plain.rewrite_notes() == []
