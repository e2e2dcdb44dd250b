"""One image source: every kind, labels or not, and a seeded split whose parts never share an image.
Real files on disk (PNG folders, .npy/.npz); nothing is mocked."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vitedge.calib.imagesource import open_source
from vitedge.calib.preprocess import PreprocessSpec
from vitedge.calib.source import load_calibration
from vitedge.errors import InputError, UsageError
from vitedge.inputs import (
    FROM_CALIB,
    FROM_DEFAULT,
    FROM_EVAL,
    NO_IMAGES,
    EvalSpec,
    judging_data,
    parity_inputs,
    search_set,
)

SPEC = PreprocessSpec(input_size=(32, 32))
CLASSES = ("cat", "dog")


def _pixels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 40, 48, 3), dtype=np.uint8)


@pytest.fixture
def flat(tmp_path):
    d = tmp_path / "flat"
    d.mkdir()
    for i, px in enumerate(_pixels(20)):
        Image.fromarray(px).save(d / f"img{i:02d}.png")
    return d


@pytest.fixture
def labelled(tmp_path):
    d = tmp_path / "labelled"
    for i, px in enumerate(_pixels(12, 1)):
        (d / CLASSES[i % 2]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(px).save(d / CLASSES[i % 2] / f"{i}.png")
    return d


def test_kinds_and_labels_are_recognised(flat, labelled, tmp_path):
    np.save(tmp_path / "raw.npy", _pixels(6)[:, :32, :32])
    np.savez(tmp_path / "lab.npz", images=_pixels(6)[:, :32, :32], labels=np.arange(6) % 2)
    got = {k: (s.kind, s.labelled, s.real) for k, s in {
        "synthetic": open_source("synthetic"), "flat": open_source(flat), "labelled": open_source(labelled),
        "npy": open_source(tmp_path / "raw.npy"), "npz": open_source(tmp_path / "lab.npz")}.items()}
    assert got == {"synthetic": ("synthetic", True, False), "flat": ("folder", False, True),
                   "labelled": ("folder", True, True), "npy": ("array", False, True), "npz": ("array", True, True)}
    images = open_source(tmp_path / "lab.npz").read("eval", np.arange(6), SPEC, ("x", "y"))
    assert images.x.shape == (6, 3, 32, 32) and images.labels.tolist() == [0, 1, 0, 1, 0, 1]
    assert open_source(flat).read("eval", np.arange(3), SPEC, CLASSES).labels is None


@pytest.mark.parametrize("bad, match", [
    ("nowhere", "--calib nowhere: no such folder or file"),
    ("x.npy", "--calib x.npy: no such file"),
])
def test_bad_sources_are_one_line_errors(tmp_path, monkeypatch, bad, match):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=match):
        open_source(bad, "--calib")


def test_npz_labels_must_be_one_int_per_image(tmp_path):
    np.savez(tmp_path / "bad.npz", images=_pixels(4)[:, :32, :32], labels=np.arange(3))
    with pytest.raises(InputError, match="'labels' must be 4 non-negative integers"):
        open_source(tmp_path / "bad.npz", "--eval")


@pytest.mark.parametrize("kind", ["folder", "array"])
def test_calibration_search_and_eval_never_share_an_image(flat, tmp_path, kind):
    source = str(flat)
    if kind == "array":
        np.save(tmp_path / "x.npy", _pixels(20)[:, :32, :32])
        source = str(tmp_path / "x.npy")
    calib = load_calibration(source, SPEC, num=300, seed=3, judges_too=True)
    assert len(calib) == 10 and calib.real  # at most half when the same images also judge
    assert "the other 10 are held out" in calib.description
    held = frozenset(calib.excluded_from_eval)
    search = search_set(_card(), source, 1000, 3, held, need_labels=False)
    assert len(search.x) == 5 and search.labels is None
    spec = EvalSpec(source, None, 3, 4, held | search.paths, FROM_CALIB)
    inputs = parity_inputs(_card(), spec)
    assert inputs.sets["images"].shape == (5, 3, 32, 32) and inputs.representative
    src = open_source(source)
    eval_keys = set(src.keys_of("eval", src.sample("eval", None, 3, held | search.paths)))
    assert len(held) == 10 and len(search.paths) == 5 and len(eval_keys) == 5
    assert not (held & search.paths) and not (held & eval_keys) and not (search.paths & eval_keys)
    # the same seed gives the same split; another seed another one
    assert load_calibration(source, SPEC, 300, 3, True).excluded_from_eval == calib.excluded_from_eval
    assert load_calibration(source, SPEC, 300, 4, True).excluded_from_eval != calib.excluded_from_eval
    # without judging duty, calibration may take everything
    assert len(load_calibration(source, SPEC, 300, 3)) == 20


def _card(classes=CLASSES, source="test"):
    from vitedge.card import ModelCard

    return ModelCard(arch="vit-tiny", config={}, preprocess=SPEC, classes=classes, source=source)


def test_which_images_judge(flat):
    real = load_calibration(str(flat), SPEC, 300, 0, judges_too=True)
    shapes = load_calibration("synthetic", PreprocessSpec(input_size=(32, 32)), 8, 0)
    from vitedge.calib.synthetic import CLASSES as SHAPES

    pretrained, builtin, untrained = _card(), _card(SHAPES), _card(source="random-init")
    assert judging_data(pretrained, "elsewhere", real) == ("elsewhere", FROM_EVAL)
    assert judging_data(pretrained, None, real) == (str(flat), FROM_CALIB)
    assert judging_data(pretrained, None, shapes) == (None, NO_IMAGES)
    assert judging_data(pretrained, None, None) == (None, NO_IMAGES)
    assert judging_data(builtin, None, shapes) == ("synthetic", FROM_DEFAULT)
    assert judging_data(untrained, None, None) == ("synthetic", FROM_DEFAULT)
    # no images of its own: noise and unlabelled shapes10 images, marked unrepresentative
    inputs = parity_inputs(pretrained, EvalSpec(None, 8, 0, 4, frozenset(), NO_IMAGES))
    assert not inputs.representative and inputs.labels is None and len(inputs.sets["images"]) == 8
    with pytest.raises(UsageError, match="pass --calib DIR"):
        search_set(pretrained, None, 10, 0, frozenset(), need_labels=False)


def test_max_drop_needs_labels_min_cosine_does_not(flat, labelled):
    with pytest.raises(UsageError, match="--max-drop needs labelled images.*--min-cosine"):
        search_set(_card(), str(flat), 10, 0, frozenset(), need_labels=True)
    s = search_set(_card(), str(labelled), 10, 0, frozenset(), need_labels=True)
    assert s.labels is not None and set(s.labels.tolist()) <= {0, 1}


def test_unlabelled_eval_is_parity_only_and_a_labelled_one_measures_accuracy(flat, labelled):
    flat_inputs = parity_inputs(_card(), EvalSpec(str(flat), None, 0, 4, frozenset(), FROM_EVAL))
    assert flat_inputs.labels is None and len(flat_inputs.sets["images"]) == 20
    assert any("parity only" in n for n in flat_inputs.notes)
    lab = parity_inputs(_card(), EvalSpec(str(labelled), 6, 0, 4, frozenset(), FROM_EVAL))
    assert lab.labels is not None and len(lab.labels) == 6
    with pytest.raises(InputError, match="not among the model's classes"):
        parity_inputs(_card(("ant", "bee")), EvalSpec(str(labelled), None, 0, 4, frozenset(), FROM_EVAL))
