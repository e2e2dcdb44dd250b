"""The built-in shapes10 data set, image folders of every mode, and the preprocessing spec."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from images import write_awkward_images, write_corrupt_jpeg
from PIL import Image

from vitedge.calib import synthetic
from vitedge.calib.datasets import eval_data, train_val_data
from vitedge.calib.folder import load_images, scan_folder
from vitedge.calib.images import load_image
from vitedge.calib.preprocess import PreprocessSpec, normalize, preprocess_image
from vitedge.errors import InputError

SPEC = PreprocessSpec((32, 32), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bilinear", 1.0)


def test_render_is_a_pure_function_of_seed_split_index():
    a, la = synthetic.render(0, "train", 7, 48)
    b, lb = synthetic.render(0, "train", 7, 48)
    c, _ = synthetic.render(1, "train", 7, 48)
    assert np.array_equal(a, b) and la == lb
    assert not np.array_equal(a, c)
    assert a.shape == (48, 48, 3) and a.dtype == np.uint8


def test_splits_are_disjoint_and_balanced():
    hashes = {}
    for split in ("train", "val", "test"):
        s = synthetic.load_split(split, 32, 300)
        hashes[split] = {hashlib.sha1(img.tobytes()).hexdigest() for img in s.images}
        assert len(hashes[split]) == 300  # no duplicates inside a split
        counts = np.bincount(s.labels, minlength=10)
        assert counts.min() == counts.max() == 30
    assert not hashes["train"] & hashes["val"]
    assert not hashes["train"] & hashes["test"]
    assert not hashes["val"] & hashes["test"]


@pytest.mark.parametrize("size", [16, 32, 96])
def test_any_resolution(size):
    img, _ = synthetic.render(0, "test", 3, size)
    assert img.shape == (size, size, 3)
    assert img.std() > 5  # not blank


def test_classes_are_visually_distinct_on_average():
    # Mean silhouettes differ: a nearest-class-mean classifier on raw pixels beats chance,
    # i.e. the task is learnable, yet is far from solved by it (not trivial).
    tr = synthetic.load_split("train", 32, 1000)
    te = synthetic.load_split("test", 32, 500)
    feats = lambda x: np.abs(x.astype(np.float32) - x.mean(axis=(1, 2), keepdims=True)).mean(-1).reshape(len(x), -1)  # noqa: E731
    ftr, fte = feats(tr.images), feats(te.images)
    means = np.stack([ftr[tr.labels == c].mean(0) for c in range(10)])
    pred = ((fte[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    acc = (pred == te.labels).mean()
    assert 0.12 < acc < 0.6


def test_every_image_mode_loads_as_rgb(tmp_path):
    files = write_awkward_images(tmp_path)
    for name, path in files.items():
        img = load_image(path)
        assert img.mode == "RGB", name
        x = preprocess_image(img, SPEC)
        assert x.shape == (3, 32, 32) and x.dtype == np.float32 and np.isfinite(x).all(), name
    # 16-bit data is scaled by its range, not clipped to white.
    g16 = np.asarray(load_image(files["gray16.png"]))
    assert abs(int(g16[0, 0, 0]) - 128) <= 1


def test_corrupt_image_error_names_the_file(tmp_path):
    bad = write_corrupt_jpeg(tmp_path / "broken.jpg")
    with pytest.raises(InputError, match="broken.jpg"):
        load_image(bad)
    fake = tmp_path / "notes.png"
    fake.write_text("not an image")
    with pytest.raises(InputError, match="notes.png: not an image"):
        load_image(fake)


def test_folder_layouts(tmp_path):
    for cls in ("cat", "dog"):
        write_awkward_images(tmp_path / "labelled" / cls)
    (tmp_path / "labelled" / "cat" / "README.txt").write_text("skip me")
    folder = scan_folder(tmp_path / "labelled")
    assert folder.classes == ("cat", "dog") and len(folder) == 18
    assert [p.name for p in folder.skipped] == ["README.txt"]
    x = load_images(folder.paths, SPEC)
    assert x.shape == (18, 3, 32, 32)
    flat = scan_folder(tmp_path / "labelled" / "cat")
    assert flat.labels is None and len(flat) == 9
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images found"):
        scan_folder(tmp_path / "empty")
    with pytest.raises(InputError, match="no such folder"):
        scan_folder(tmp_path / "missing")


def test_folder_eval_maps_class_names_to_the_model(tmp_path):
    for cls in ("ring", "disk"):
        write_awkward_images(tmp_path / cls)
    ds = eval_data(str(tmp_path), SPEC, synthetic.CLASSES)
    assert set(ds.labels.tolist()) == {synthetic.CLASSES.index("ring"), synthetic.CLASSES.index("disk")}
    with pytest.raises(InputError, match="not among the model's classes"):
        eval_data(str(tmp_path), SPEC, ("a", "b"))


def test_train_val_split_of_a_plain_folder_is_disjoint(tmp_path):
    for cls in ("a", "b"):
        write_awkward_images(tmp_path / cls)
    train, val = train_val_data(tmp_path, SPEC)
    assert len(train) + len(val) == 18 and len(val) == 1


def test_preprocessing_matches_timms_eval_transform():
    timm_data = pytest.importorskip("timm.data")
    import torch

    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 241, 3), np.uint8))
    spec = PreprocessSpec((224, 224), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bicubic", 0.875)
    tf = timm_data.create_transform(input_size=(3, 224, 224), interpolation="bicubic",
                                    mean=spec.mean, std=spec.std, crop_pct=0.875)
    ref = tf(img)
    assert isinstance(ref, torch.Tensor)
    ours = preprocess_image(img, spec)
    np.testing.assert_allclose(ours, ref.numpy(), atol=1e-6)


def test_normalize_batch_equals_single():
    imgs = synthetic.load_split("val", 32, 4).images
    batch = normalize(np.asarray(imgs), SPEC)
    assert all(np.array_equal(batch[i], normalize(np.asarray(imgs[i]), SPEC)) for i in range(4))
