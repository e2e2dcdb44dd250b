"""LiteRT targets (litert-fp32 / litert-fp16 / litert-int8) end to end: litert-torch converts the
built-in models, the LiteRT interpreter (XNNPACK delegate, 2 threads) runs the .tflite through
vitedge's runner, and the outputs are compared with the PyTorch module on held-out synthetic
test images. Real converter, real interpreter, real files; nothing is mocked.

Needs `pip install 'vitedge[litert]'` (skipped otherwise)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from cores import THREADS
from no_torch import NO_TORCH
from shared_bundles import shared_bundle

pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_litert")

import torch  # noqa: E402

from vitedge.calib.datasets import synthetic_split  # noqa: E402
from vitedge.calib.source import load_calibration  # noqa: E402
from vitedge.errors import InputError, UsageError  # noqa: E402
from vitedge.models.resolve import load_model  # noqa: E402
from vitedge.runtimes.litert_runner import RUNTIME, LiteRTRunner, op_coverage  # noqa: E402
from vitedge.runtimes.open import run_batched  # noqa: E402
from vitedge.targets import litert  # noqa: E402
from vitedge.targets.context import BuildContext  # noqa: E402

N_TEST = 64


@pytest.fixture(scope="module")
def models():
    return {name: load_model(name) for name in ("vit-tiny", "convnext-zepto")}


@pytest.fixture(scope="module")
def test_data(models):
    """(inputs, PyTorch logits) of 64 shapes10 *test* images (calibration uses *train*)."""
    out = {}
    for name, loaded in models.items():
        spec = loaded.card.preprocess
        x = synthetic_split("test", spec, N_TEST, 0).as_inputs(spec)
        with torch.no_grad():
            out[name] = (x, loaded.module(torch.from_numpy(x)).numpy())
    return out


def make_ctx(tmp: Path, loaded, options=None, calibrate=False) -> BuildContext:
    (tmp / "bundle").mkdir(parents=True)
    (tmp / "work").mkdir()
    calib = load_calibration("synthetic", loaded.card.preprocess, 64, 0) if calibrate else None
    return BuildContext(loaded=loaded, bundle_dir=tmp / "bundle", work_dir=tmp / "work", onnx=None,
                        options=options or litert.LiteRTOptions(), calibration=calib, threads=THREADS)


def run(path: Path, x: np.ndarray, **options) -> np.ndarray:
    with LiteRTRunner(path, threads=THREADS, **options) as runner:
        return run_batched(runner, x)["logits"]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.slow
# Every precision on the contract's model (its bundles, no second build); the ViT's INT8 too
# (attention quantised by LiteRT's quantiser). fp32/fp16 weight handling is one code path.
@pytest.mark.parametrize("model, precision", [("convnext-zepto", "fp32"), ("convnext-zepto", "fp16"),
                                              ("convnext-zepto", "int8"), ("vit-tiny", "int8")])
def test_litert_target_parity(test_data, model, precision):
    # `vitedge export MODEL --target litert-PRECISION`, the bundle the contract test also reads
    b = shared_bundle(f"litert-{precision}", model)
    ctx, art = b.ctx, b.artifact
    path = ctx.bundle_dir / art.main_file
    assert art.runtime == "litert" and art.files == ["model.tflite"] and path.stat().st_size > 0
    assert art.details["static_batch"] == 1 and art.details["precision"] == precision
    ops = art.details["ops"]
    assert ops["ops_total"] == ops["ops_delegated"] + ops["ops_not_delegated"] > 0
    assert ops["ops_delegated"] > 0.9 * ops["ops_total"]  # XNNPACK takes the graph, not a sliver of it

    x, ref = test_data[model]
    y = run(path, x, **art.runner_options)
    assert y.shape == ref.shape and y.dtype == np.float32
    cos = cosines(y, ref)
    top1 = float((y.argmax(1) == ref.argmax(1)).mean())
    if precision == "fp32":
        assert ops["ops_not_delegated"] == 0 and ops["xnnpack_partitions"] == 1
        assert np.abs(y - ref).max() < 1e-4
    elif precision == "fp16":
        assert art.details["op_counts"].get("DEQUANTIZE", 0) > 0  # fp16 weights behind DEQUANTIZE
        assert cos.min() >= 0.9999 and top1 == 1.0
    else:
        # Full-integer model: int8 interface, quantised weights behind FULLY_CONNECTED / CONV_2D.
        assert art.details["op_counts"].get("QUANTIZE", 0) > 0
        assert art.details["calibration"]["images"] == 64
        # full-integer by default, so the 7x7 depthwise convs stay int8 and the report says what
        # keeping them float would buy (targets.pt2e_fuse); ViT has none
        large = [n for n in art.notes if "larger than 5x5 are int8" in n]
        assert len(large) == (model == "convnext-zepto") and all("--litert-float-depthwise" in n for n in large)
        assert cos.mean() >= 0.998 and cos.min() >= 0.95, (cos.mean(), cos.min())
        assert top1 >= 0.98, top1
        with LiteRTRunner(path, threads=THREADS) as runner:
            assert runner.info()["io_dtype"] == ["int8", "int8"]


def _float_fully_connected(path: Path) -> int:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    return sum(1 for op in it._get_ops_details()
               if op["op_name"] == "FULLY_CONNECTED" and np.dtype(op["operand_types"][0]) == np.float32)


@pytest.mark.slow
def test_litert_int8_keep_float_leaves_named_modules_float(tmp_path, models, test_data):
    loaded = models["vit-tiny"]
    # blocks.5: attention in_proj + out_proj + two MLP linears; head: one linear -> 5 float FCs.
    opts = replace(litert.LiteRTOptions(), keep_float=("blocks.5", "head"))
    ctx = make_ctx(tmp_path, loaded, options=opts, calibrate=True)
    art = litert.build_litert_int8(ctx)
    path = ctx.bundle_dir / art.main_file
    assert art.details["kept_float"] == ["blocks.5", "head"]
    assert _float_fully_connected(path) == 5
    x, ref = test_data["vit-tiny"]
    y = run(path, x)
    assert cosines(y, ref).mean() >= 0.998


def test_keep_float_unknown_module_is_a_usage_error(tmp_path, models):
    opts = replace(litert.LiteRTOptions(), keep_float=("blocks.55",))
    ctx = make_ctx(tmp_path, models["vit-tiny"], options=opts, calibrate=True)
    with pytest.raises(UsageError, match="blocks.55"):
        litert.build_litert_int8(ctx)


def test_int8_without_calibration_is_a_usage_error(tmp_path, models):
    with pytest.raises(UsageError, match="calibration"):
        litert.build_litert_int8(make_ctx(tmp_path, models["vit-tiny"]))


def test_registration():
    from vitedge.targets.registry import get_target

    assert RUNTIME.opens == (".tflite",) and RUNTIME.needs_torch is False and RUNTIME.thread_safe is False
    for name, precision in (("litert-fp32", "fp32"), ("litert-fp16", "fp16"), ("litert-int8", "int8")):
        t = get_target(name)
        assert t.precision == precision and t.runtime == "litert" and t.source == "module"
        assert t.auto == ("mobile",) and t.extra == "litert" and not t.missing()
    int8 = get_target("litert-int8")
    assert int8.needs_calibration and int8.fallback_option == "keep_float"


@pytest.fixture(scope="module")
def small_tflite(tmp_path_factory):
    """A small conv net converted once: for the runner's own checks (fast to convert)."""

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, stride=2)
            self.fc = torch.nn.Linear(8, 4)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).mean((2, 3)))

    torch.manual_seed(0)
    net = Net().eval()
    import litert_torch

    path = tmp_path_factory.mktemp("small") / "net.tflite"
    with litert._converter_quiet():
        litert_torch.convert(net, (torch.zeros(1, 3, 16, 16),)).export(str(path))
    x = np.random.default_rng(0).standard_normal((5, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    return path, x, ref


def test_runner_specs_feed_checks_and_padding(small_tflite):
    path, x, ref = small_tflite
    with LiteRTRunner(path, threads=2) as runner:  # a 16-px model: the count reported, not speed
        assert [s.name for s in runner.inputs()] == ["input"] and runner.inputs()[0].shape == (1, 3, 16, 16)
        assert [s.name for s in runner.outputs()] == ["logits"] and runner.outputs()[0].shape == (1, 4)
        info = runner.info()
        assert info["threads"] == 2 and info["delegate"] == "xnnpack" and info["xnnpack_partitions"] == 1
        # Static batch 1: run_batched feeds one image at a time; 5 images come back in order.
        y = run_batched(runner, x)["logits"]
        assert np.abs(y - ref).max() < 1e-5
        with pytest.raises(InputError, match="dtype"):
            runner.infer({"input": x[:1].astype(np.float64)})
        with pytest.raises(InputError, match="dimension 0"):
            runner.infer({"input": x[:2]})


def test_runner_without_delegate_matches(small_tflite):
    path, x, ref = small_tflite
    with LiteRTRunner(path, threads=1, delegate="none") as runner:
        assert runner.info()["xnnpack_partitions"] == 0
        assert np.abs(run_batched(runner, x)["logits"] - ref).max() < 1e-5


def test_op_coverage_counts_every_op(small_tflite):
    cov = op_coverage(small_tflite[0])
    assert cov["ops_total"] == cov["ops_delegated"] >= 3 and cov["not_delegated"] == {}
    assert {"CONV_2D", "FULLY_CONNECTED", "MEAN"} <= set(cov["delegated"])


def test_runner_bad_files(tmp_path):
    with pytest.raises(InputError, match="no such"):
        LiteRTRunner(tmp_path / "missing.tflite").activate()
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer at all" * 10)
    with pytest.raises(InputError, match="LiteRT cannot load"):
        LiteRTRunner(bad).activate()


def test_runner_runs_without_torch(small_tflite):
    """The device side: numpy + ai-edge-litert, torch unimportable."""
    path, x, ref = small_tflite
    np.save(path.with_suffix(".npy"), x)
    code = NO_TORCH + (
        "import numpy as np\n"
        "from vitedge.runtimes.litert_runner import LiteRTRunner\n"
        "from vitedge.runtimes.open import run_batched\n"
        f"x = np.load({str(path.with_suffix('.npy'))!r})\n"
        f"with LiteRTRunner({str(path)!r}, threads=1) as r:\n"
        "    y = run_batched(r, x)['logits']\n"
        "print(repr(y.tolist()))\n"
        "assert 'torch' not in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    y = np.array(eval(out.stdout.strip().splitlines()[-1]), dtype=np.float32)  # noqa: S307 - our own output
    assert np.abs(y - ref).max() < 1e-5


@pytest.mark.parametrize("family", ["beit", "swin", "swinv2"])
def test_litert_int8_annotates_only_float_tensors(family, tmp_path, torch_threads):
    """The PT2E quantiser's add/mul/index patterns also match integer arithmetic and symbolic
    sizes; an observer there fails calibration ("histogram_cpu not implemented for 'Long'": BEiT's
    relative-position index, SwinV2's lifted int64 constant; "'int' object has no attribute
    'numel'": Swin's window partition). `targets.litert._float_only` leaves those unannotated:
    every observer watches a float tensor and a calibration batch runs (conversion, the slow part,
    is the zoo's: docs/zoo.md)."""
    pytest.importorskip("transformers")
    from hf_models import save_folder
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    loaded = load_model(str(save_folder(family, tmp_path / family)), random_init=True)
    x = torch.randn(2, 3, *loaded.card.preprocess.input_size, generator=torch.Generator().manual_seed(0))
    ep = torch.export.export(loaded.module.eval(), (x,), dynamic_shapes=({0: torch.export.Dim("batch", max=8)},))
    prepared = prepare_pt2e(ep.module(), litert.make_quantizer(True, ()))
    watched = [n.args[0] for n in prepared.graph.nodes
               if n.op == "call_module" and "activation_post_process" in str(n.target)]
    assert len(watched) > 20  # the model is quantised, not skipped whole
    for n in watched:
        val = n.meta.get("val") if n.op != "get_attr" else litert._attr(n)
        assert isinstance(val, torch.Tensor) and val.is_floating_point(), n
    with torch.no_grad():
        prepared(x)  # calibration
