"""--embed-preprocessing: artifacts that take decoded RGB pixels and preprocess inside.

The graphs (ONNX Runtime, OpenVINO) are held against the Python preprocessing on real photos
(scikit-image's, written as JPEG/PNG files) for the preprocessing kinds the zoo has; whole
exports are held to their parity gate, `vitedge verify` and `vitedge.load()`; the C++ example is
built with CMake against the openvino wheel and must print what `vitedge.load()` computes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cores import INTERLEAVED
from PIL import Image
from shared_bundles import shared_dir

from vitedge.calib.preprocess import PreprocessSpec, normalize, resize_and_crop
from vitedge.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")  # 512x512, 300x451, 400x600, 427x640

# The preprocessing kinds of the zoo: timm's ImageNet eval transform; transformers' ViT (resize to
# exactly HxW, floor offset, 0.5 mean/std); MobileViT (shorter side, BGR, no normalisation); the
# built-ins (64 px, bilinear, no crop).
SPECS = {
    "timm-imagenet": PreprocessSpec(input_size=(224, 224), crop_pct=0.875, interpolation="bicubic"),
    "hf-vit": PreprocessSpec(input_size=(224, 224), interpolation="bilinear", resize_to=(224, 224),
                             crop_rounding="floor", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
    "hf-mobilevit": PreprocessSpec(input_size=(256, 256), interpolation="bilinear", resize_to=(288,),
                                   crop_rounding="floor", channel_order="BGR", mean=(0.0, 0.0, 0.0),
                                   std=(1.0, 1.0, 1.0)),
    "builtin": PreprocessSpec(input_size=(64, 64), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                              interpolation="bilinear"),
}
# Pillow rounds to uint8 between its two resize passes, the graphs once: OpenVINO's *_pillow
# modes measured at most 5 levels off, mean 0.09-0.2. ONNX Runtime's antialiased linear filter
# strays further on strong downscales (512 -> 64 px: up to 13 levels on 1% of the pixels,
# 99.9th percentile 9; 512 -> 224: up to 9) with the same mean.
MEAN_LEVELS = 0.25
OV_MAX_LEVELS = 6.0
ORT_MAX_LEVELS, ORT_P999_LEVELS = 16.0, 10.0


@pytest.fixture(scope="module")
def photos():
    data = pytest.importorskip("skimage.data")
    return {name: getattr(data, name)() for name in PHOTOS}


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory, photos):
    """Real photos as files of the kinds an app meets: JPEG, grayscale PNG, RGBA PNG."""
    d = tmp_path_factory.mktemp("photos")
    for name, rgb in photos.items():
        Image.fromarray(rgb).save(d / f"{name}.jpg", quality=90)
    data = pytest.importorskip("skimage.data")
    Image.fromarray(data.camera()).save(d / "camera.png")
    rgba = np.dstack([photos["astronaut"], np.full((*photos["astronaut"].shape[:2], 1), 100, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(d / "astronaut_rgba.png")
    return d


def _levels(got: np.ndarray, ref: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """|difference| in 0-255 pixel levels (undoing mean/std/scale; BGR order is the same on both)."""
    std = np.asarray(spec.std, np.float32)[::-1 if spec.channel_order == "BGR" else 1].reshape(3, 1, 1)
    return np.abs(got - ref) * std / spec.rescale


def _reference(rgb: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    return normalize(resize_and_crop(Image.fromarray(rgb), spec), spec)


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_onnx_pixel_graph_matches_the_python_preprocessing(kind, photos, tmp_path):
    import onnx
    import onnxruntime as ort

    from vitedge.export.pixels import onnx_pixel_graph

    spec = SPECS[kind]
    path = tmp_path / "pixels.onnx"
    onnx.save(onnx_pixel_graph(spec, 20, 10, "x"), str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for name, rgb in photos.items():
        got = session.run(None, {"pixels": rgb[None]})[0][0]
        ref = _reference(rgb, spec)
        assert got.shape == ref.shape, name
        d = _levels(got, ref, spec)
        assert d.mean() <= MEAN_LEVELS and np.percentile(d, 99.9) <= ORT_P999_LEVELS and d.max() <= ORT_MAX_LEVELS, (
            kind, name, d.max(), d.mean())


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_openvino_pixel_steps_match_the_python_preprocessing(kind, photos):
    ov = pytest.importorskip("openvino")
    import openvino.opset13 as ops
    from openvino.preprocess import PrePostProcessor

    from vitedge.targets.openvino import _pixel_steps

    spec = SPECS[kind]
    x = ops.parameter([1, 3, *spec.input_size], np.float32, name="x")
    model = ov.Model([ops.multiply(x, ops.constant(np.float32(1)))], [x])  # identity: shows the input
    ppp = PrePostProcessor(model)
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_spatial_dynamic_shape()
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    ppp.input().preprocess().convert_element_type(ov.Type.f32).convert_layout(ov.Layout("NCHW")).custom(
        lambda node: _pixel_steps(node, spec))
    compiled = ov.Core().compile_model(ppp.build(), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    for name, rgb in photos.items():
        got = compiled({0: rgb[None]})[0][0]
        d = _levels(got, _reference(rgb, spec), spec)
        # OpenVINO's own ONNX reader ignores Resize's antialias (80 levels off): these ops must not
        assert d.max() <= OV_MAX_LEVELS and d.mean() <= MEAN_LEVELS, (kind, name, d.max(), d.mean())


def test_a_resize_no_graph_reproduces_is_refused():
    from vitedge.export.pixels import EmbedError, onnx_pixel_graph

    with pytest.raises(EmbedError, match="lanczos"):
        onnx_pixel_graph(PreprocessSpec(interpolation="lanczos"), 20, 10, "x")


def test_targets_that_cannot_embed_are_refused_before_any_work(capsys):
    assert main(["export", "vit-tiny", "-t", "trt-fp16", "--embed-preprocessing", "--out", "/nonexistent/x"]) == 2
    err = capsys.readouterr().err
    assert "trt-fp16 cannot carry the preprocessing" in err and "ov-int8" in err and "ort-int8" in err
    assert main(["export", "vit-tiny", "-t", "onnx-fp32", "--embed-preprocessing", "--opset", "17"]) == 2
    assert "--opset 18" in capsys.readouterr().err
    assert main(["export", "vit-tiny", "-t", "auto-cpu", "--embed-preprocessing"]) == 2
    assert "pick one target" in capsys.readouterr().err


def _export(out: Path, target: str, *extra: str) -> dict:
    assert main(["export", *INTERLEAVED, "vit-tiny", "-t", target, "--embed-preprocessing", "--out", str(out),
                 "--eval-n", "200", "--bench-budget", "0.3", *extra]) == 0
    return json.loads((out / "manifest.json").read_text())


@pytest.fixture(scope="module")
def ov_bundle():
    """Built once per run for both xdist workers (tests/shared_bundles.py); read-only."""
    pytest.importorskip("openvino")
    return shared_dir("embed-ov-int8", lambda out: _export(out, "ov-int8", "--calib", "synthetic"))[0]


def _python_logits(bundle: Path, files: list[Path]) -> np.ndarray:
    import vitedge

    with vitedge.load(bundle) as model:
        return model.logits(files)


@pytest.mark.slow
def test_ov_int8_bundle_takes_pixels_of_any_size(ov_bundle, photo_dir, photos, capsys):
    import vitedge

    manifest = json.loads((ov_bundle / "manifest.json").read_text())
    inp = manifest["input"]
    assert (inp["name"], inp["dtype"], inp["layout"], inp["shape"]) == ("pixels", "uint8", "NHWC",
                                                                          ["batch", "height", "width", 3])
    assert inp["embedded_preprocessing"]["size"] == "any"
    assert "bilinear_pillow" in inp["embedded_preprocessing"]["interpolation"]
    assert manifest["parity"]["passed"] is True
    report = json.loads((ov_bundle / "report.json").read_text())
    assert "decoded pixels at their own size" in report["judged_on"]
    assert any("480x640 uint8 RGB frames" in n for n in report["notes"])
    readme = (ov_bundle / "README.md").read_text()
    assert "any size" in readme and "examples/cpp" in readme and "README.md" in manifest["files"]
    assert main(["verify", str(ov_bundle)]) == 0  # pixel images of several sizes in reference.npz
    capsys.readouterr()
    # load() hands each image over at its own size; the same photo as a file and as an array agree
    with vitedge.load(ov_bundle) as model:
        files = sorted(photo_dir.glob("*.jpg"))
        by_file = model.logits(files)
        by_array = model.logits([np.asarray(Image.open(f).convert("RGB")) for f in files])
        np.testing.assert_array_equal(by_file, by_array)
        assert len({model.predict(f).label for f in files}) >= 1
    assert main(["bench", str(ov_bundle), "--budget", "0.2", "--json"]) == 0
    bench = json.loads(capsys.readouterr().out)
    assert bench["results"][0]["runs"] > 0 and bench["profile"]["frame"] == "1x480x640x3 uint8"
    # OpenVINO's own throughput mechanism (THROUGHPUT hint, NUM_STREAMS) runs on this IR
    from vitedge.bench.throughput import sweep

    t = sweep(ov_bundle, cores=2, batches=(1, 2), measure_s=0.2)
    assert len(t.points) == 4 and all(p.images_per_s > 0 and p.instances == 1 for p in t.points)


@pytest.mark.slow
@pytest.mark.parametrize("target,extra", [("ort-int8", ("--calib", "synthetic")), ("litert-fp32", ())])
def test_onnx_and_litert_bundles_pass_their_gate_on_pixels(target, extra, tmp_path, photo_dir):
    if target.startswith("litert"):
        pytest.importorskip("litert_torch")
    out = tmp_path / "b"
    manifest = _export(out, target, *extra)
    embedded = manifest["input"]["embedded_preprocessing"]
    assert manifest["input"]["dtype"] == "uint8" and manifest["parity"]["passed"] is True
    if target == "litert-fp32":  # fixed size: the app (here load()) resizes and crops first
        assert embedded["size"] == [64, 64] and "centre-crop 64x64" in embedded["app_does"]
        assert "Kotlin" in (out / "README.md").read_text()
    else:
        assert embedded["size"] == "any"
    assert main(["verify", str(out)]) == 0
    logits = _python_logits(out, sorted(photo_dir.glob("*")))
    assert logits.shape == (6, 10) and np.isfinite(logits).all()


def _cmake_tools() -> str | None:
    missing = [t for t in ("cmake", "g++") if shutil.which(t) is None]
    missing += [h for h in ("/usr/include/jpeglib.h", "/usr/include/png.h", "/usr/include/nlohmann/json.hpp")
                if not Path(h).exists()]
    return ", ".join(missing) or None


@pytest.fixture(scope="module")
def cpp_app(tmp_path_factory):
    """examples/cpp built with CMake against the openvino wheel's C++ runtime."""
    ov = pytest.importorskip("openvino")
    missing = _cmake_tools()
    if missing:
        # CI installs them (.ci/run); a developer machine without them is told what to install
        if os.environ.get("VITEDGE_REQUIRE_CPP"):
            pytest.fail(f"the C++ example cannot be built: missing {missing}")
        pytest.skip(f"missing {missing}: apt-get install g++ cmake libjpeg-dev libpng-dev nlohmann-json3-dev")
    def cmake(build: Path) -> None:  # once per run for both xdist workers (tests/shared_bundles.py)
        ov_cmake = Path(ov.__file__).parent / "cmake"
        subprocess.run(["cmake", "-S", str(ROOT / "examples" / "cpp"), "-B", str(build),
                        f"-DOpenVINO_DIR={ov_cmake}"], check=True, capture_output=True, text=True)
        subprocess.run(["cmake", "--build", str(build), "-j2"], check=True, capture_output=True, text=True)

    return shared_dir("cpp-app", cmake)[0] / "vitedge_classify"


@pytest.mark.slow
def test_cpp_app_prints_what_vitedge_load_computes(cpp_app, ov_bundle, photo_dir):
    run = subprocess.run([str(cpp_app), str(ov_bundle), str(photo_dir), "--json"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    files = [Path(r["file"]) for r in rows]
    assert sorted(f.name for f in files) == sorted(p.name for p in photo_dir.iterdir())  # JPEG and PNG
    want = _python_logits(ov_bundle, files)
    got = np.array([r["logits"] for r in rows], np.float32)
    # same runtime, same decoders' pixels: equal to float rounding, not just within the gate
    assert np.abs(got - want).max() < 1e-4
    assert [r["top1"] for r in rows] == want.argmax(1).tolist()
    text = subprocess.run([str(cpp_app), str(ov_bundle), str(photo_dir / "chelsea.jpg"), "--top", "3"],
                          capture_output=True, text=True, timeout=60)
    assert text.returncode == 0 and text.stdout.startswith("chelsea.jpg (451x300)")
    assert len(text.stdout.strip().splitlines()) == 4


@pytest.mark.slow
def test_cpp_app_preprocesses_a_plain_bundle_from_its_manifest(cpp_app, photo_dir, tmp_path):
    """A bundle without embedded preprocessing: the app builds the same steps from the manifest's
    numbers with OpenVINO's PrePostProcessor; vitedge.load() preprocesses in Python (Pillow). They
    agree as a pixel artifact's gate asks (vitedge.verify.tolerances.PIXELS)."""
    from vitedge.verify.tolerances import PIXELS

    plain = tmp_path / "plain"
    assert main(["export", *INTERLEAVED, "vit-tiny", "-t", "ov-fp32", "--out", str(plain), "--eval-n", "50",
                 "--bench-budget", "0.2"]) == 0
    run = subprocess.run([str(cpp_app), str(plain), str(photo_dir), "--json"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    want = _python_logits(plain, [Path(r["file"]) for r in rows]).astype(np.float64)
    got = np.array([r["logits"] for r in rows], np.float64)
    cosine = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cosine.min() >= PIXELS.cosine_min, cosine  # measured: >= 0.99999
    assert [r["top1"] for r in rows] == want.argmax(1).tolist()


@pytest.mark.slow
def test_cpp_app_refuses_what_it_cannot_run(cpp_app, ov_bundle, tmp_path):
    other = tmp_path / "onnx"
    assert main(["export", *INTERLEAVED, "vit-tiny", "-t", "onnx-fp32", "--out", str(other), "--eval-n", "20",
                 "--bench-budget", "0.2"]) == 0
    for args, msg in (([str(other), str(ov_bundle / "README.md")], "runs OpenVINO bundles"),
                      ([str(ov_bundle), str(tmp_path / "missing.jpg")], "no such file"),
                      ([str(ov_bundle), str(ov_bundle / "manifest.json")], "not a JPEG or PNG"),
                      ([str(tmp_path)], "usage")):
        run = subprocess.run([str(cpp_app), *args], capture_output=True, text=True, timeout=60)
        assert run.returncode == 2 and msg in run.stderr, (args, run.stderr)


def test_pixel_gate_is_the_looser_of_each_limit():
    from vitedge.verify.tolerances import PIXELS, for_pixels, tolerance_for

    fp32 = tolerance_for("fp32", pixels=True)
    assert fp32.max_abs is None and fp32.cosine_min == PIXELS.cosine_min < tolerance_for("fp32").cosine_min
    int8 = tolerance_for("int8", pixels=True)
    assert int8.cosine_min == tolerance_for("int8").cosine_min  # already looser than PIXELS
    assert int8.noise_gated is False and int8.max_accuracy_drop == max(PIXELS.max_accuracy_drop, 0.5)
    assert tolerance_for("fp32", pixels=True, cosine_min=0.9999).cosine_min == 0.9999  # a user's limit wins
    untrained = for_pixels(tolerance_for("fp32", untrained=True))
    assert untrained.top1_agreement is None and untrained.sqnr_db == PIXELS.sqnr_db


def test_large_judging_photos_are_handed_over_at_most_twice_the_resize(tmp_path, photos):
    """A folder of full-size photos is not held in memory: each is scaled (aspect kept) to a
    shorter side of twice the model's resize, so the artifact still downscales it itself."""
    from vitedge.calib.imagesource import open_source
    from vitedge.inputs import pixel_cap

    d = tmp_path / "big"
    d.mkdir()
    big = np.asarray(Image.fromarray(photos["rocket"]).resize((1280, 854)))
    Image.fromarray(big).save(d / "big.jpg", quality=90)
    Image.fromarray(photos["chelsea"][:100, :120]).save(d / "small.png")
    spec = SPECS["builtin"]  # resize to 64: cap 128
    assert pixel_cap(spec) == 128 and pixel_cap(SPECS["timm-imagenet"]) == 512
    src = open_source(d)
    got = {src.folder.paths[i].name: p for i, p in
           zip(range(2), src.read_pixels("eval", np.arange(2), spec, max_short=pixel_cap(spec)), strict=True)}
    assert got["big.jpg"].shape == (128, 192, 3)  # 854 -> 128, 1280 -> 192: aspect kept
    assert got["small.png"].shape == (100, 120, 3)  # already small: as decoded
