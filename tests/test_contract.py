"""The contract every registered target keeps, generated from the registry: a new target is
tested by registering it.

For each target, on the smallest built-in: `vitedge export` through the CLI (ONNX or module
source, calibration where it needs it), the parity gate passed and stated on which images, a
bundle whose manifest names the declared runtime and precision and checksums every artifact file,
`vitedge verify` passing, and `vitedge.load()` giving the PyTorch model's answer on images within
the gate the report states. A target this machine cannot run (a missing extra, a CPU feature)
must refuse up front with exit 5, naming why, and leave nothing behind: that is its contract
here, checked instead of skipped. Per-target files keep only what is specific to their target.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from shared_bundles import ISOLATED_MODEL, isolated_timing, shared_bundle

import vitedge
from vitedge.calib.datasets import synthetic_split
from vitedge.cli.main import main
from vitedge.models.registry import list_models
from vitedge.models.resolve import load_model
from vitedge.targets.registry import all_targets, get_target

pytestmark = pytest.mark.slow  # one real export per registered target

SMALLEST = "convnext-zepto"
EXIT_MISSING = 5  # vitedge.errors.MissingDependencyError's exit code
TARGETS = [t.name for t in all_targets()]


def test_the_contract_model_is_the_smallest_built_in_and_every_target_is_in_it():
    assert ISOLATED_MODEL == SMALLEST  # where each runtime's isolated timing is checked
    runtimes = {t.runtime for t in all_targets()}
    assert len({n for n in TARGETS if isolated_timing(n, SMALLEST)}) == len(runtimes) >= 6
    sizes = {name: sum(p.numel() for p in load_model(name).module.parameters())
             for name in list_models(builtin_only=True)}
    assert min(sizes, key=sizes.get) == SMALLEST, sizes
    assert len(TARGETS) >= 19 and "onnx-fp32" in TARGETS  # the registry loaded its catalog


@pytest.fixture(scope="module")
def model():
    loaded = load_model(SMALLEST)
    images = synthetic_split("test", loaded.card.preprocess, 8, seed=7).images  # uint8 HWC
    return loaded, images


@pytest.mark.parametrize("name", TARGETS)
def test_every_registered_target_exports_verifies_and_loads(name, model, capsys):
    target = get_target(name)
    b = shared_bundle(name, SMALLEST)  # `vitedge export`, built once for every test that reads it
    out = b.dir
    why_not = target.missing() or target.unsupported()
    if why_not:  # the contract of a target this machine cannot run: a refusal before any work
        assert b.exit_code == EXIT_MISSING and name in b.stderr, b.stderr
        assert not out.exists() and not list(out.parent.glob(f".{out.name}.*"))  # no bundle, no temp dir
        return
    assert b.exit_code == 0, b.stderr

    report = json.loads((out / "report.json").read_text())
    assert (report["target"], report["precision"], report["passed"]) == (name, target.precision, True)
    parity = report["parity"]
    assert parity["checks"] and all(c["passed"] for c in parity["checks"]), parity["checks"]
    assert report["judged_on"].startswith("shapes10/test") and parity["images_n"] == 400
    if report["predicted_by"]:  # a kit: its parity is a stand-in's, and the report says so
        assert any("NOT" in n for n in report["notes"]), report["notes"]
    if isolated_timing(name, SMALLEST):  # the CLI's default timing, once per runtime (tests/shared_bundles)
        assert report["latency_measured"].endswith("each in its own process, one at a time")
        profile = report["device_profile"]
        assert profile["load_cold_ms"] > 0 and profile["first_ms"] > 0 and profile["peak_mb"] > 0, profile
    else:
        assert report["latency_measured"] == "interleaved in one process" and report["device_profile"] is None
    assert report["latency_ms"]["artifact"]["p50"] > 0

    manifest = b.manifest
    assert (manifest.target, manifest.runtime, manifest.precision) == (name, target.runtime, target.precision)
    assert manifest.main_file.exists() and not manifest.checksum_problems()
    assert set(report["artifact_files"]) <= set(manifest.data["files"])
    assert main(["verify", str(out)]) == 0, capsys.readouterr().err

    loaded, images = model
    with vitedge.load(str(out)) as app:
        x = app.preprocess(images)
        got = app.logits(images)
    with torch.no_grad():
        ref = loaded.module.eval()(torch.from_numpy(x)).numpy()
    tol = parity["tolerance"]
    cos = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() >= tol["cosine_min"], (cos.min(), tol)
    if tol.get("max_abs") is not None:
        assert np.abs(got - ref).max() <= tol["max_abs"], np.abs(got - ref).max()
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 7 / 8  # one of 8 may flip under INT8 rounding
