"""Bundles built once per test run and shared by every test (and xdist worker) that reads one.

`shared_bundle(target, model)` runs the real `vitedge export` (the CLI, default options, 64
synthetic calibration images, 400 judging images) the first time any worker asks for that pair,
under a file lock, into a directory of the run (conftest.pytest_configure names it); later calls
get the finished bundle. The contract test (test_contract.py) asserts what every target owes; the
per-target files read the same bundles for what is specific to theirs instead of building again.
Shared bundles are read-only: a test that changes files copies the bundle first.

Timing: the CLI's default (`--timing isolated`: the artifact timed and profiled in a process of
its own) is a property of the runtime that opens the artifact, not of the target, so it runs for
the first registered target of each runtime on the contract's model (`isolated_timing`), and the
contract test asserts its fields there; every other shared bundle is timed interleaved (tests/cores,
INTERLEAVED). Measured 2026-12-05: 31 isolated exports in a full run spent 105 s in that stage.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from cores import INTERLEAVED

ENV = "VITEDGE_TEST_SHARED_BUNDLES"
EXPORT_ARGS = ("--eval-n", "400", "--bench-budget", "0.1")
CALIB_ARGS = ("--calib", "synthetic", "--num-calib", "64")
ISOLATED_MODEL = "convnext-zepto"  # the contract test's (test_contract.SMALLEST)


@dataclass(frozen=True)
class SharedBundle:
    target: str
    model: str
    dir: Path
    exit_code: int
    stderr: str

    @cached_property
    def report(self) -> dict[str, Any]:
        return json.loads((self.dir / "report.json").read_text())

    @cached_property
    def manifest(self) -> Any:
        from vitedge.bundle.manifest import read_manifest

        return read_manifest(self.dir)

    @property
    def main_file(self) -> Path:
        return self.manifest.main_file

    @cached_property
    def artifact(self) -> Any:
        """What the target's build returned, as the bundle records it."""
        from vitedge.targets.registry import Artifact

        a = self.manifest.data["artifact"]
        return Artifact(a["file"], list(a["files"]), self.manifest.runtime, dict(a.get("runner_options") or {}),
                        dict(self.report.get("details") or {}), list(self.report.get("notes") or []),
                        a.get("predicted_by"))

    @cached_property
    def loaded(self) -> Any:
        from vitedge.models.resolve import load_model

        return load_model(self.model)

    @property
    def ctx(self) -> Any:
        """The parts of the build's BuildContext a test reads (the model, the bundle directory)."""
        assert self.exit_code == 0, f"vitedge export {self.model} --target {self.target} failed: {self.stderr}"
        return SimpleNamespace(loaded=self.loaded, bundle_dir=self.dir)


def _root() -> Path:
    root = os.environ.get(ENV)
    if not root:  # outside pytest_configure (a plain import): this process's own directory
        root = os.environ[ENV] = tempfile.mkdtemp(prefix="vitedge-test-bundles-")
    return Path(root)


def isolated_timing(target: str, model: str) -> bool:
    """Whether the shared bundle of (target, model) is timed in processes of its own (module doc)."""
    from vitedge.targets.registry import all_targets, get_target

    runtime = get_target(target).runtime
    return model == ISOLATED_MODEL and target == next(t.name for t in all_targets() if t.runtime == runtime)


def shared_bundle(target: str, model: str = "vit-tiny") -> SharedBundle:
    from vitedge.cli.main import main
    from vitedge.targets.registry import get_target

    key = f"{model}--{target}"

    def build(out: Path) -> dict[str, Any]:
        args = ["export", model, "--target", target, "--out", str(out), *EXPORT_ARGS]
        if not isolated_timing(target, model):
            args += INTERLEAVED
        if get_target(target).needs_calibration:
            args += CALIB_ARGS
        err = io.StringIO()
        # the export's tables and progress are not the asking test's output (it may parse its own)
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = main(args)
        return {"exit_code": rc, "stderr": err.getvalue()}

    out, result = shared_dir(key, build)
    return SharedBundle(target, model, out, result["exit_code"], result["stderr"])


def shared_dir(key: str, build: Callable[[Path], Any]) -> tuple[Path, Any]:
    """`build(directory)` run once per test run, by whichever worker asks first, under a file lock
    (the other waits for it instead of repeating it); every asker gets the directory and what
    `build` returned (JSON). For the costly module fixtures too: xdist hands a module's tests to
    both workers (conftest: one test at a time), and a module fixture would be built in each.
    A build that raises leaves nothing behind, and the next asker tries again."""
    root = _root()
    out, done = root / key, root / f"{key}.json"
    with open(root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(out, ignore_errors=True)  # what a build that raised left
            result = build(out)
            done.write_text(json.dumps(result))
    return out, json.loads(done.read_text())
