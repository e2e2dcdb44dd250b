"""Real labelled data in its native format: the MNIST family's IDX files (Fashion-MNIST from
Debian's `dataset-fashion-mnist`), read in place by --data/--eval DIR.

Fixture files are written here in the real IDX format (gzipped and plain); the installed Debian
package, where present, is checked as the real thing."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitedge.calib import idx
from vitedge.calib.datasets import eval_data, train_val_data
from vitedge.calib.images import load_image
from vitedge.calib.preprocess import PreprocessSpec, resize_and_crop
from vitedge.errors import InputError

SPEC = PreprocessSpec((32, 32), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bilinear", 1.0)
FASHION = Path("/usr/share/datasets/fashion-mnist")


def idx_bytes(arr: np.ndarray) -> bytes:
    code = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}[arr.dtype]
    return bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def write_idx_set(root: Path, n_train: int = 60, n_test: int = 20, gz: bool = True, seed: int = 0):
    """A small MNIST-layout data set: label k images are a bright square at a class-specific place."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(labels)
        images = rng.integers(0, 40, (n, 28, 28), dtype=np.uint8)
        for i, k in enumerate(labels):
            r, c = divmod(int(k), 5)
            images[i, 4 + 10 * r : 12 + 10 * r, 1 + 5 * c : 5 + 5 * c] = 250
        for kind, arr in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
            data = idx_bytes(arr)
            path = root / f"{split}-{kind}{'.gz' if gz else ''}"
            path.write_bytes(gzip.compress(data) if gz else data)
        out[split] = (images, labels.astype(np.int64))
    return out


@pytest.mark.parametrize("gz", [True, False])
def test_reads_idx_files_in_place_with_labels(tmp_path, gz):
    root = tmp_path / "fashion-mnist"
    truth = write_idx_set(root, gz=gz)
    assert idx.is_idx_dir(root) and not idx.is_idx_dir(tmp_path)
    train = idx.load_split(root, "train")
    assert np.array_equal(train.images, truth["train"][0])
    assert np.array_equal(train.labels, truth["train"][1])
    assert train.classes == idx.FASHION_MNIST_CLASSES  # named by the folder
    test = idx.load_split(root, "test")
    assert np.array_equal(test.labels, truth["t10k"][1])


def test_class_names_from_classes_txt_or_label_numbers(tmp_path):
    write_idx_set(tmp_path / "digits")
    assert idx.load_split(tmp_path / "digits", "train").classes == tuple("0123456789")
    named = tmp_path / "named"
    write_idx_set(named)
    (named / "classes.txt").write_text("\n".join(f"c{i}" for i in range(10)) + "\n")
    assert idx.load_split(named, "train").classes == tuple(f"c{i}" for i in range(10))


def test_eval_and_train_splits_through_the_data_dispatch(tmp_path):
    root = tmp_path / "fashion-mnist"
    truth = write_idx_set(root, n_train=100, n_test=30)
    test = eval_data(str(root), SPEC, idx.FASHION_MNIST_CLASSES)
    assert test.images.shape == (30, 32, 32, 3) and test.images.dtype == np.uint8
    assert np.array_equal(test.labels, truth["t10k"][1])  # the published test split, in order
    train, val = train_val_data(str(root), SPEC, seed=0)
    assert (len(train), len(val)) == (90, 10)
    assert train.classes == idx.FASHION_MNIST_CLASSES
    # Disjoint 90/10 split of the training split: together they are all 100 labels.
    assert sorted(np.concatenate([train.labels, val.labels]).tolist()) == sorted(truth["train"][1].tolist())
    capped, _ = train_val_data(str(root), SPEC, seed=0, n_train=25)
    assert len(capped) == 25
    sub = eval_data(str(root), SPEC, idx.FASHION_MNIST_CLASSES, n=7, seed=3)
    assert len(sub) == 7 and "seed 3" in sub.description


def test_a_models_class_order_is_respected(tmp_path):
    root = tmp_path / "fashion-mnist"
    truth = write_idx_set(root, n_test=20)
    reordered = tuple(reversed(idx.FASHION_MNIST_CLASSES))
    test = eval_data(str(root), SPEC, reordered)
    assert np.array_equal(test.labels, 9 - truth["t10k"][1])
    with pytest.raises(InputError, match="not among the model's classes"):
        eval_data(str(root), SPEC, tuple(f"x{i}" for i in range(10)))


def test_pixels_match_the_predictor_path_for_a_png_of_the_same_image(tmp_path):
    root = tmp_path / "fashion-mnist"
    truth = write_idx_set(root, n_test=10)
    test = eval_data(str(root), SPEC, idx.FASHION_MNIST_CLASSES)
    png = tmp_path / "img.png"
    Image.fromarray(truth["t10k"][0][3]).save(png)  # an 8-bit grayscale PNG
    assert np.array_equal(test.images[3], resize_and_crop(load_image(png), SPEC))


def test_calibration_sample_comes_from_the_training_split(tmp_path):
    root = tmp_path / "fashion-mnist"
    write_idx_set(root, n_train=50)
    from vitedge.calib.source import load_calibration

    calib = load_calibration(str(root), SPEC, num=16, seed=0, judges_too=True)
    assert calib.inputs.shape == (16, 3, 32, 32) and calib.inputs.dtype == np.float32
    assert "train part" in calib.description and "disjoint test split" in calib.description
    assert calib.excluded_from_eval == ()  # the splits keep it apart, no per-image exclusion needed


def _corrupt(root: Path, name: str, data: bytes) -> Path:
    p = root / name
    p.write_bytes(data)
    return p


@pytest.mark.parametrize("case", ["truncated", "bad-magic", "bad-gzip", "huge-header", "empty", "count-mismatch"])
def test_corrupt_files_are_one_clear_error_naming_the_file(tmp_path, case):
    root = tmp_path / "fashion-mnist"
    write_idx_set(root, n_train=20)
    images = root / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(images.read_bytes())
    if case == "truncated":
        bad, what = _corrupt(root, images.name, gzip.compress(raw[:-100])), "truncated"
    elif case == "bad-magic":
        bad, what = _corrupt(root, images.name, gzip.compress(b"\x12\x34" + raw[2:])), "not an IDX file"
    elif case == "bad-gzip":
        bad, what = _corrupt(root, images.name, images.read_bytes()[:40]), "corrupt gzip"
    elif case == "huge-header":
        # A header claiming 10^9 images: refused from the file length, nothing allocated.
        bad, what = _corrupt(root, images.name, gzip.compress(raw[:4] + struct.pack(">I", 10**9) + raw[8:])), "truncated"
    elif case == "empty":
        bad, what = _corrupt(root, images.name, b""), "not an IDX file"
    else:
        labels = root / "train-labels-idx1-ubyte.gz"
        lab = gzip.decompress(labels.read_bytes())
        bad = _corrupt(root, labels.name, gzip.compress(lab[:4] + struct.pack(">I", 19) + lab[8:-1]))
        what = "19 labels for 20 images"
    with pytest.raises(InputError) as e:
        train_val_data(str(root), SPEC)
    assert str(bad) in str(e.value) and what in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_test_split_is_named(tmp_path):
    root = tmp_path / "fashion-mnist"
    write_idx_set(root)
    (root / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(InputError, match="t10k-labels-idx1-ubyte"):
        eval_data(str(root), SPEC, idx.FASHION_MNIST_CLASSES)


@pytest.mark.skipif(not FASHION.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_the_installed_fashion_mnist_package():
    test = idx.load_split(FASHION, "test")
    train = idx.load_split(FASHION, "train")
    assert test.images.shape == (10000, 28, 28) and train.images.shape == (60000, 28, 28)
    assert np.bincount(test.labels).tolist() == [1000] * 10
    assert np.bincount(train.labels).tolist() == [6000] * 10
    assert test.classes == idx.FASHION_MNIST_CLASSES
    sub = eval_data(str(FASHION), SPEC, idx.FASHION_MNIST_CLASSES, n=200, seed=0)
    assert sub.images.shape == (200, 32, 32, 3)


def test_fallback_search_split_is_the_held_out_validation_part(tmp_path):
    from vitedge.calib.imagesource import open_source
    from vitedge.calib.preprocess import normalize

    root = tmp_path / "fashion-mnist"
    write_idx_set(root, n_train=100)
    train, val = train_val_data(str(root), SPEC, seed=0)
    src = open_source(root)
    search = src.read("search", src.sample("search", 6, 0), SPEC, idx.FASHION_MNIST_CLASSES)
    calib = src.read("calib", src.sample("calib", None, 0), SPEC)
    val_rows = {v.tobytes() for v in normalize(val.images, SPEC)}
    assert len(search) == 6 and all(s.tobytes() in val_rows for s in search.x)
    assert not {s.tobytes() for s in search.x} & {t.tobytes() for t in normalize(train.images, SPEC)}
    assert not set(search.keys) & set(calib.keys) and len(calib) == 90  # calibration never sees the val part
