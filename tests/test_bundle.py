"""Bundles on the device: `vitedge verify`, `vitedge.load().predict`, the example app, no torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from no_torch import NO_TORCH
from onnx import numpy_helper
from PIL import Image
from shared_bundles import shared_bundle
from threads import run_in_threads

import vitedge
from vitedge.bundle.manifest import MANIFEST, file_entries, read_manifest, save_manifest
from vitedge.calib.datasets import folder_images, synthetic_split
from vitedge.calib.folder import scan_folder
from vitedge.cli.main import main
from vitedge.errors import InputError, ParityError
from vitedge.models.resolve import load_model
from vitedge.pipeline import BenchConfig

pytestmark = pytest.mark.slow  # builds bundles for several targets in its fixture

FAST = BenchConfig(warmup=2, min_runs=5, budget_s=0.2)
REPO = Path(__file__).resolve().parents[1]
@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """convnext-zepto's onnx-fp32 and ov-fp32 bundles (`vitedge export`, the contract test's, shared with every test that
    reads them: tests/shared_bundles.py), under one directory. Read-only: `_copy` to change one."""
    root = tmp_path_factory.mktemp("bundles")
    for target in ("onnx-fp32", "ov-fp32"):
        b = shared_bundle(target, "convnext-zepto")
        assert b.exit_code == 0, b.stderr
        (root / target).symlink_to(b.dir, target_is_directory=True)
    return root


def _copy(bundles, tmp_path, target="onnx-fp32"):
    dst = tmp_path / target
    shutil.copytree(bundles / target, dst)
    return dst


def test_verify_passes_on_an_intact_bundle(bundles, capsys):  # every target's: test_contract.py
    assert main(["verify", str(bundles / "onnx-fp32")]) == 0
    assert "verified" in capsys.readouterr().out


def test_verify_catches_a_tampered_file(bundles, tmp_path, capsys):
    b = _copy(bundles, tmp_path)
    data = bytearray((b / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (b / "model.onnx").write_bytes(bytes(data))
    assert main(["verify", str(b)]) == 4
    assert "model.onnx: checksum mismatch" in capsys.readouterr().err


def test_verify_catches_an_edited_manifest(bundles, tmp_path, capsys):
    b = _copy(bundles, tmp_path)
    m = json.loads((b / MANIFEST).read_text())
    m["card"]["classes"][0] = "not-a-disk"
    (b / MANIFEST).write_text(json.dumps(m))
    assert main(["verify", str(b)]) == 3
    assert "edited after export" in capsys.readouterr().err


def test_verify_catches_wrong_outputs_even_with_consistent_checksums(bundles, tmp_path, capsys):
    b = _copy(bundles, tmp_path)
    model = onnx.load(str(b / "model.onnx"))
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.shape == (10,):  # the classifier bias: a re-signed but wrong artifact
            init.CopyFrom(numpy_helper.from_array(arr + np.float32(3.0) * (np.arange(10) == 3), init.name))
    onnx.save(model, str(b / "model.onnx"))
    m = json.loads((b / MANIFEST).read_text())
    m["files"] = file_entries(b, list(m["files"]))
    save_manifest(b / MANIFEST, m)
    assert main(["verify", str(b)]) == 4
    assert "re-verification failed" in capsys.readouterr().err


def test_verify_and_bench_and_load_without_torch(bundles):
    code = NO_TORCH + textwrap.dedent(f"""
        import numpy as np
        from vitedge.cli.main import main
        assert main(["verify", {str(bundles / 'onnx-fp32')!r}]) == 0
        assert main(["verify", {str(bundles / 'ov-fp32')!r}]) == 0
        assert main(["bench", {str(bundles / 'ov-fp32')!r}, "--budget", "0.2"]) == 0
        import vitedge
        with vitedge.load({str(bundles / 'onnx-fp32')!r}) as m:
            p = m.predict(np.zeros((64, 64, 3), np.uint8))
            assert p.label in m.classes
        assert not any(k == "torch" or k.startswith("torch.") for k in sys.modules)
        print("OK-NO-TORCH")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "OK-NO-TORCH" in proc.stdout


def test_predictor_preprocessing_equals_the_training_pipeline(bundles, tmp_path):
    model = vitedge.load(str(bundles / "onnx-fp32"))
    spec = model.spec
    data = synthetic_split("test", spec, 20)
    # uint8 HWC arrays (a batch and a list) and PIL images give the training pipeline's tensors
    ref = data.as_inputs(spec)
    assert np.array_equal(model.preprocess(np.asarray(data.images)), ref)
    assert np.array_equal(model.preprocess([Image.fromarray(np.asarray(im)) for im in data.images]), ref)
    # files of other sizes and modes: the same path as `vitedge eval --data DIR`
    for cls in ("disk", "ring"):
        (tmp_path / cls).mkdir()
    for i, im in enumerate(data.images[:6]):
        big = Image.fromarray(np.asarray(im)).resize((97, 131), Image.Resampling.BICUBIC)
        big.convert("L" if i % 2 else "RGB").save(tmp_path / ("disk" if i < 3 else "ring") / f"{i}.png")
    folder = scan_folder(tmp_path)
    via_training = folder_images(folder, spec, model.classes).as_inputs(spec)
    assert np.array_equal(model.preprocess(list(folder.paths)), via_training)
    model.close()


def test_predict_returns_names_probabilities_and_logits(bundles):
    with vitedge.load(str(bundles / "onnx-fp32")) as model:
        data = synthetic_split("test", model.spec, 200)
        preds = model.predict(np.asarray(data.images), top_k=3, return_logits=True)
        assert len(preds) == 200 and all(len(p.labels) == 3 for p in preds)
        acc = np.mean([model.classes.index(p.label) == y for p, y in zip(preds, data.labels, strict=True)])
        assert acc > 0.9
        assert all(sum(p.probs) <= 1.0 + 1e-9 and p.probs == sorted(p.probs, reverse=True) for p in preds)
        full = model.predict(np.asarray(data.images[0]), top_k=100)
        assert len(full.labels) == 10 and abs(sum(full.probs) - 1.0) < 1e-9  # a real softmax
        one = model.predict(np.asarray(data.images[0]), top_k=3)
        assert one.labels == preds[0].labels  # a single image gives a single Prediction
        np.testing.assert_allclose(preds[0].logits, model.logits(np.asarray(data.images[:1]))[0], rtol=1e-6)


def _ov_threads(bundle, offered) -> str:
    """INFERENCE_NUM_THREADS of an OpenVINO runner opened from `bundle` in a fresh process: the
    CPU plugin reads the cores it may use once per process, and this worker may be pinned to
    one (conftest); the process inherits `all_cores`' affinity."""
    code = ("import sys; from vitedge.runtimes.open import open_runner\n"
            f"with open_runner(sys.argv[1], {offered!r}) as r: print(r.info()['actual']['INFERENCE_NUM_THREADS'])")
    proc = subprocess.run([sys.executable, "-c", code, str(bundle)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def test_a_bundles_max_threads_caps_every_runner_opened_from_it(bundles, tmp_path, capsys, all_cores):
    """auto records max_threads when fewer threads measured faster; the runtime then gets that
    many whatever the caller offers (its --threads is a budget), and a bad value is refused."""
    if all_cores < 2:
        pytest.skip("needs 2 cores to tell a cap of 1 thread from the machine's own limit")
    b = _copy(bundles, tmp_path, "ov-fp32")
    assert _ov_threads(b, 2) == "2"  # no cap yet
    m = json.loads((b / MANIFEST).read_text())
    m["artifact"]["max_threads"] = 1
    save_manifest(b / MANIFEST, m)
    for offered in (2, None):
        assert _ov_threads(b, offered) == "1"
    assert main(["bench", str(b), "--threads", "2", "--budget", "0.2"]) == 0
    assert "1 threads (the bundle's max_threads" in " ".join(capsys.readouterr().out.split())
    m["artifact"]["max_threads"] = 0
    save_manifest(b / MANIFEST, m)
    with pytest.raises(InputError, match="max_threads should be a positive integer"):
        read_manifest(b)


def test_eight_threads_get_the_same_results_as_one(bundles):
    for target in ("onnx-fp32", "ov-fp32"):
        with vitedge.load(str(bundles / target)) as model:
            images = np.asarray(synthetic_split("test", model.spec, 16).images)
            expected = model.logits(images)

            def work(model=model, images=images):
                return [model.logits(images) for _ in range(10)]

            results = [r for batch in run_in_threads(work) for r in batch]  # re-raises a thread's error
            assert len(results) == 80
            assert all(np.array_equal(r, expected) for r in results), target


@pytest.mark.parametrize("bad, needle", [
    (np.zeros((64, 64, 3), np.float32), "must be uint8"),
    (np.zeros((64, 64, 2), np.uint8), "expected HWC with 1, 3 or 4 channels"),
    ([], "empty batch"),
    (42, "not int"),
])
def test_predict_rejects_bad_inputs(bundles, bad, needle):
    with vitedge.load(str(bundles / "onnx-fp32")) as model:
        with pytest.raises(InputError, match=needle):
            model.predict(bad)


def test_load_refuses_a_bundle_that_failed_parity(bundles, tmp_path):
    b = _copy(bundles, tmp_path)
    m = json.loads((b / MANIFEST).read_text())
    m["parity"]["passed"] = False
    save_manifest(b / MANIFEST, m)
    with pytest.raises(ParityError, match="failed its parity gate"):
        vitedge.load(str(b))
    vitedge.load(str(b), allow_failed=True).close()
    assert read_manifest(b).target == "onnx-fp32"


def test_example_app_classifies_a_folder_without_torch(bundles, tmp_path):
    data = synthetic_split("test", load_model("convnext-zepto").card.preprocess, 12)
    for i, (im, y) in enumerate(zip(data.images, data.labels, strict=True)):
        Image.fromarray(np.asarray(im)).save(tmp_path / f"img{i:02d}_{data.classes[y]}.png")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    code = NO_TORCH + textwrap.dedent(f"""
        import runpy
        sys.argv = ["classify_folder.py", {str(bundles / 'onnx-fp32')!r}, {str(tmp_path)!r}, "--json"]
        try:
            runpy.run_path({str(REPO / 'examples' / 'classify_folder.py')!r}, run_name="__main__")
        except SystemExit as e:
            sys.exit(e.code)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == 12
    correct = sum(r["labels"][0] in Path(r["file"]).stem for r in rows)
    assert correct >= 10
    assert "skipped" in proc.stderr and "broken.jpg" in proc.stderr
