"""inductor-int8 / inductor-fp32: real PT2E quantisation, real AOTInductor compiles (g++), real
.pt2 loads. Each compile takes 0.5-3 min of g++ on 2 cores (load-dependent), so the int8 builds
are module-scoped and every test here is marked slow."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from cores import THREADS
from shared_bundles import shared_bundle

pytest.importorskip("torchao")
torch = pytest.importorskip("torch")

from vitedge.calib.datasets import synthetic_split  # noqa: E402
from vitedge.calib.source import load_calibration  # noqa: E402
from vitedge.errors import InputError, MissingDependencyError, UsageError  # noqa: E402
from vitedge.export.onnx_export import ExportConfig  # noqa: E402
from vitedge.models.resolve import load_model  # noqa: E402
from vitedge.runtimes.aoti_runner import AotiRunner  # noqa: E402
from vitedge.targets.context import BuildContext  # noqa: E402
from vitedge.targets.inductor import InductorOptions, build_inductor_int8  # noqa: E402

pytestmark = pytest.mark.slow


def _ctx(name: str, root: Path, options: InductorOptions | None = None, static_batch: int | None = None) -> BuildContext:
    loaded = load_model(name)
    bundle, work = root / "bundle", root / "work"
    bundle.mkdir(parents=True)
    work.mkdir(parents=True)
    return BuildContext(loaded=loaded, bundle_dir=bundle, work_dir=work, onnx=None,
                        options=options or InductorOptions(), export=ExportConfig(static_batch=static_batch),
                        calibration=load_calibration("synthetic", loaded.card.preprocess, 64, 0), threads=THREADS)


def _test_inputs(ctx: BuildContext) -> np.ndarray:
    spec = ctx.loaded.card.preprocess
    return synthetic_split("test", spec, 64, 0).as_inputs(spec)


def _reference(ctx: BuildContext, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return ctx.loaded.module.eval()(torch.from_numpy(x)).numpy()


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    with AotiRunner(path, threads=THREADS) as r:
        return r.infer({"input": x})["logits"]


def _cosine_top1(ref: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    cos = (ref * y).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(y, axis=1))
    return float(cos.mean()), float((ref.argmax(1) == y.argmax(1)).mean())


@pytest.fixture(scope="module", params=["vit-tiny", "convnext-zepto"])
def int8_build(request, torch_threads):
    """`vitedge export MODEL --target inductor-int8` (default options, 64 calibration images), the
    bundle the contract test also reads (tests/shared_bundles.py: built once per run)."""
    b = shared_bundle("inductor-int8", request.param)
    return b.ctx, b.artifact


def test_int8_parity(int8_build):
    ctx, art = int8_build
    x = _test_inputs(ctx)
    cos, top1 = _cosine_top1(_reference(ctx, x), _run(ctx.bundle_dir / art.main_file, x))
    assert cos >= 0.998, cos
    assert top1 >= 0.98, top1


def test_int8_kernels_are_int8(int8_build):
    """Freezing must turn the quantised linears/convs into oneDNN int8 calls; with the attention
    tagging on, the only float linear left in a ViT (its MHA projections included) is the
    classifier head, which every INT8 recipe keeps float."""
    ctx, art = int8_build
    kernels = art.details["kernels"]
    assert kernels.get("qlinear", 0) > 0
    if ctx.loaded.card.arch.startswith("vit"):
        assert art.details["attention_linears_tagged"] > 0
        assert art.details["kept_float"] == ["head"]
        assert kernels.get("float_linear", 0) == 1, kernels
    assert json.loads(AotiRunner(ctx.bundle_dir / art.main_file).activate().meta["card"])


def test_int8_dynamic_batch(int8_build):
    ctx, art = int8_build
    x = _test_inputs(ctx)
    with AotiRunner(ctx.bundle_dir / art.main_file, threads=THREADS) as r:
        assert r.inputs()[0].shape[0] == "batch"
        assert r.max_batch() is None
        full = r.infer({"input": x[:5]})["logits"]
        one = r.infer({"input": x[3:4]})["logits"]
    assert full.shape == (5, len(ctx.loaded.card.classes))
    np.testing.assert_allclose(one[0], full[3], atol=1e-3)


def test_int8_loads_in_a_fresh_process_without_vitedge(int8_build, tmp_path):
    """The .pt2 runs from torch alone: a subprocess that cannot import vitedge loads and runs it."""
    ctx, art = int8_build
    x = _test_inputs(ctx)[:4]
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(f"""
        import sys
        sys.modules["vitedge"] = None  # any import of vitedge (the model code) now fails
        import numpy as np, torch
        m = torch._inductor.aoti_load_package({str(ctx.bundle_dir / art.main_file)!r})
        y = m(torch.from_numpy(np.load({str(tmp_path / 'x.npy')!r})))
        np.save({str(tmp_path / 'y.npy')!r}, y.numpy())
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), _run(ctx.bundle_dir / art.main_file, x), atol=1e-4)


def test_concurrent_calls_match_serial(int8_build):
    """RUNTIME.thread_safe=True: one activated runner serves several threads; results are
    identical to serial calls (the container hands each call a model under a mutex)."""
    ctx, art = int8_build
    x = _test_inputs(ctx)[:8]
    with AotiRunner(ctx.bundle_dir / art.main_file, threads=THREADS) as r:
        serial = [r.infer({"input": x[i:i + 1]})["logits"] for i in range(8)]
        out: dict[int, np.ndarray] = {}
        errors: list[BaseException] = []

        def work(i: int) -> None:
            try:
                for _ in range(3):
                    out[i] = r.infer({"input": x[i:i + 1]})["logits"]
            except BaseException as e:  # noqa: BLE001 - surfaced below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    for i in range(8):
        np.testing.assert_array_equal(out[i], serial[i])


def test_keep_float_unknown_module_is_a_usage_error(tmp_path):
    ctx = _ctx("vit-tiny", tmp_path, InductorOptions(keep_float=("blocks.0.atn",)))
    with pytest.raises(UsageError, match="blocks.0.attn"):
        build_inductor_int8(ctx)


def test_keep_float_and_static_batch(tmp_path, torch_threads):
    """keep_float leaves the named module's linears float (fewer int8 kernels, float ones appear);
    a static batch is recorded in the package and enforced by the runner."""
    ctx = _ctx("vit-tiny", tmp_path, InductorOptions(keep_float=("head", "blocks.5")), static_batch=1)
    art = build_inductor_int8(ctx)
    assert art.details["kernels"].get("float_linear", 0) >= 1
    with AotiRunner(ctx.bundle_dir / art.main_file) as r:
        assert r.inputs()[0].shape == (1, 3, 64, 64)
        with pytest.raises(InputError):
            r.infer({"input": np.zeros((2, 3, 64, 64), np.float32)})


def test_runner_rejects_missing_and_foreign_files(tmp_path):
    with pytest.raises(InputError, match="no such"):
        AotiRunner(tmp_path / "nope.pt2").activate()
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not an AOTInductor package built by vitedge"):
        AotiRunner(bad).activate()


def test_runner_refuses_a_package_from_another_torch(int8_build, tmp_path):
    """The torch version is checked from the package's metadata before its library is loaded."""
    ctx, art = int8_build
    src, dst = ctx.bundle_dir / art.main_file, tmp_path / "other.pt2"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("metadata.json"):
                meta = json.loads(data)
                meta["torch"] = "2.9.0+cpu"
                data = json.dumps(meta).encode()
            zout.writestr(item, data)
    with pytest.raises(MissingDependencyError, match="2.9.0"):
        AotiRunner(dst).activate()


def test_runner_module_imports_without_torch():
    """The runner module's top level needs numpy only (torch is imported on activation)."""
    code = ("import sys; sys.modules['torch'] = None; "
            "import vitedge.runtimes.aoti_runner as m; print(m.RUNTIME.name)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert proc.stdout.strip() == "aoti"


def test_options_replace_keeps_frozen_dataclass():
    opts = replace(InductorOptions(), keep_float=("head",))
    assert opts.keep_float == ("head",) and opts.freezing is True


def test_a_graph_freezing_breaks_is_compiled_without_it(tmp_path, torch_threads):
    """transformers' LeViT INT8: with freezing, torch 2.14's AOT compile fails on a symbolic size
    left in the frozen graph ("torch.Size() takes an iterable of 'int' (item 0 is 'Node')"). The
    build compiles it again without freezing, says so, and records what it did; the package runs.
    If a torch release fixes the frozen compile, the first assertion says so (and this test's
    case is gone: find another or drop the retry)."""
    pytest.importorskip("transformers")
    from hf_models import save_folder

    loaded = load_model(str(save_folder("levit", tmp_path / "levit")), random_init=True)
    (tmp_path / "bundle").mkdir()
    (tmp_path / "work").mkdir()
    ctx = BuildContext(loaded=loaded, bundle_dir=tmp_path / "bundle", work_dir=tmp_path / "work", onnx=None,
                       options=InductorOptions(), export=ExportConfig(), threads=THREADS,
                       calibration=load_calibration("synthetic", loaded.card.preprocess, 16, 0))
    art = build_inductor_int8(ctx)
    assert any(n.startswith("compiled with freezing off") and "torch.Size()" in n for n in art.notes), art.notes
    assert art.details["freezing"] is False
    x = _test_inputs(ctx)[:8]
    y = _run(ctx.bundle_dir / art.main_file, x)
    assert y.shape == (8, len(loaded.card.classes)) and np.isfinite(y).all()
