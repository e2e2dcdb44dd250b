"""Fuzzing the two parsers that read files from strangers (images, bundle manifests), and a
soak test of `vitedge.load().predict` from 8 threads. Both are bounded in time."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from threads import run_in_threads

from vitedge.bundle.manifest import MANIFEST, read_manifest
from vitedge.calib.images import load_image
from vitedge.errors import InputError

pytestmark = pytest.mark.slow  # hypothesis fuzzing and an 8-thread soak

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _valid_images() -> dict[str, bytes]:
    rgb = np.random.default_rng(0).integers(0, 256, (24, 32, 3), np.uint8)
    out = {}
    for fmt, suffix in (("PNG", ".png"), ("JPEG", ".jpg"), ("WEBP", ".webp"), ("BMP", ".bmp"), ("GIF", ".gif")):
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, fmt)
        out[suffix] = buf.getvalue()
    return out


VALID = _valid_images()


@FUZZ
@given(suffix=st.sampled_from(sorted(VALID)), edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
                                                             max_size=8),
       cut=st.one_of(st.none(), st.integers(0, 10_000)), junk=st.binary(max_size=64))
def test_image_loader_never_crashes(tmp_path, suffix, edits, cut, junk):
    data = bytearray(VALID[suffix])
    for pos, val in edits:
        data[pos % len(data)] = val
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(bytes(data) + junk)
    try:
        img = load_image(path)
    except InputError as e:
        assert "fuzz" in str(e)  # names the file
        return
    assert img.mode == "RGB" and img.size[0] > 0 and img.size[1] > 0


@FUZZ
@given(raw=st.binary(max_size=256))
def test_image_loader_random_bytes(tmp_path, raw):
    path = tmp_path / "random.png"
    path.write_bytes(raw)
    with pytest.raises(InputError, match="random.png"):
        load_image(path)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """convnext-zepto's onnx-fp32 bundle (the contract test's), copied: the soak writes into it."""
    import shutil

    from shared_bundles import shared_bundle

    b = shared_bundle("onnx-fp32", "convnext-zepto")
    assert b.exit_code == 0, b.stderr
    out = tmp_path_factory.mktemp("b") / "bundle"
    shutil.copytree(b.dir, out)
    return out


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
                           max_leaves=12)


@FUZZ
@given(drop=st.sets(st.sampled_from(["format", "format_version", "target", "runtime", "precision", "artifact", "card",
                                     "input", "files", "manifest_sha256"]), max_size=3),
       replace=st.dictionaries(st.sampled_from(["format_version", "artifact", "card", "files", "input", "runtime"]),
                               json_values, max_size=2),
       garbage=st.one_of(st.none(), st.binary(max_size=40)))
def test_manifest_parser_never_crashes(tmp_path, bundle, drop, replace, garbage):
    m = json.loads((bundle / MANIFEST).read_text())
    for k in drop:
        m.pop(k, None)
    m.update(replace)
    m.pop("manifest_sha256", None)  # so edits reach the structural checks, not only the digest
    d = tmp_path / "m"
    d.mkdir(exist_ok=True)
    (d / MANIFEST).write_bytes(garbage if garbage is not None else json.dumps(m).encode())
    try:
        manifest = read_manifest(d)
    except InputError as e:
        assert MANIFEST in str(e) or str(d) in str(e)
        return
    assert manifest.target and manifest.main_file.parent == d


def _rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def test_soak_predict_from_8_threads(bundle, capsys):
    import vitedge
    from vitedge.calib.datasets import synthetic_split

    with vitedge.load(str(bundle)) as model:
        images = np.asarray(synthetic_split("test", model.spec, 4).images)
        expected = model.logits(images)
        for _ in range(20):  # warm the allocator before measuring
            model.logits(images)
        rss_before = _rss_mb()

        def worker():
            return sum(not np.array_equal(model.logits(images), expected) for _ in range(150))

        mismatches = sum(run_in_threads(worker))  # re-raises a thread's error
        rss_after = _rss_mb()
    with capsys.disabled():
        print(f"\nsoak: 8 threads x 150 predict calls (batch 4): RSS {rss_before:.1f} -> {rss_after:.1f} MB")
    assert mismatches == 0
    assert rss_after - rss_before < 50  # no leak worth the name over 1,200 calls
    Path(bundle / "soak.txt").unlink(missing_ok=True)
