"""The bad-input suite: every case runs the real `vitedge` command in a subprocess and must

- exit with the documented code for its class (README: exit codes),
- print exactly one line on stderr, naming the file or flag and what to do, and no traceback,
- leave no partial output (no temp dirs, no half-written bundle) and change nothing else on disk.

Families: checkpoints, models/flags, calibration/eval data, output, bundles; the runtime family
(`predict`) is Python API and raises `InputError` with the same kind of message. Set
VITEDGE_BAD_INPUTS_TABLE=path to also write the table of observed codes and messages.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from images import write_awkward_images, write_corrupt_jpeg
from PIL import Image
from shared_bundles import shared_bundle

from vitedge.bundle.manifest import MANIFEST, manifest_digest
from vitedge.models.checkpoint import save_checkpoint
from vitedge.models.resolve import load_model, new_card

pytestmark = pytest.mark.slow  # each case runs the real CLI in a subprocess (~4 min in all)

ROOT = Path(__file__).resolve().parents[1]
OBSERVED: list[tuple[str, str, int, str]] = []


@pytest.fixture(autouse=True)
def _records_a_row(request):
    """Every parametrised case that passes recorded at least one row of the observed table,
    checked per case (pytest-xdist may hand the table's own test a worker that ran none)."""
    before = len(OBSERVED)
    yield
    call = getattr(request.node, "rep_call", None)  # set by conftest's makereport hook
    if "[" in request.node.name and call is not None and call.passed:
        assert len(OBSERVED) > before, f"{request.node.name} recorded no row of the observed table"
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _nobody_can_run() -> str | None:
    """None if `nobody` can run vitedge here (needed for permission cases as root), else why not."""
    if not IS_ROOT:
        return None
    if not shutil.which("setpriv"):
        return "running as root without setpriv: file permissions cannot be exercised"
    probe = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
                            "import vitedge.cli.main"], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    if probe.returncode != 0:
        return "running as root and `nobody` cannot read this checkout/venv: permission cases cannot run"
    return None


def world_dir() -> Path:
    """A temp dir every user can enter (pytest's own tmp dirs are private to the owner)."""
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="vitedge-perm-"))
    os.chmod(d, 0o777)
    return d


def _snapshot(d: Path) -> dict[str, tuple[int, int]]:
    """Every path under d; files with size and mtime (a directory's mtime moves whenever a temp
    entry is created and removed inside it, so only its existence counts)."""
    return {str(p.relative_to(d)): (p.stat().st_size, int(p.stat().st_mtime_ns)) if p.is_file() else (0, 0)
            for p in sorted(d.rglob("*"))}


def run_cli(args: list[str], cwd: Path, as_nobody: bool = False, env_extra: dict[str, str] | None = None,
            prelude: str = "") -> subprocess.CompletedProcess[str]:
    code = prelude + "\nimport sys\nfrom vitedge.cli.main import main\nsys.exit(main(sys.argv[1:]))\n"
    cmd = [sys.executable, "-c", code, *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
    if as_nobody and IS_ROOT:
        # root ignores file permissions: run the case as `nobody` so they apply (with a HOME it
        # can write, as any real user has).
        import tempfile

        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
        home = Path(tempfile.mkdtemp(prefix="vitedge-home-"))
        os.chmod(home, 0o777)
        env["HOME"] = str(home)
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


def check(case: str, family: str, proc: subprocess.CompletedProcess[str], code: int, needle: str,
          workdir: Path, before: dict[str, tuple[int, int]], allowed_new: tuple[str, ...] = ()) -> None:
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    OBSERVED.append((family, case, proc.returncode, lines[-1] if lines else ""))
    assert proc.returncode == code, f"{case}: exit {proc.returncode}, stderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("vitedge: "), f"{case}: stderr must be one line:\n{proc.stderr}"
    assert needle in lines[0], f"{case}: {needle!r} not in {lines[0]!r}"
    after = _snapshot(workdir)
    new = set(after) - set(before)
    assert not [n for n in new if not n.startswith(allowed_new) or n.endswith(".partial")], f"{case}: left {new}"
    assert {k: v for k, v in after.items() if k in before} == before, f"{case}: changed existing files"


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("assets")
    torch.manual_seed(0)
    small = {"img_size": 32, "depth": 1, "embed_dim": 48, "num_heads": 3}
    vit, card = new_card("vit-tiny", {**small, "num_classes": 10}, None, "test")
    save_checkpoint(d / "good.safetensors", vit, card)
    good = (d / "good.safetensors").read_bytes()
    (d / "truncated.safetensors").write_bytes(good[: len(good) // 2])
    (d / "random.pth").write_bytes(np.random.default_rng(0).bytes(4096))
    (d / "empty.safetensors").write_bytes(b"")
    (d / "a_directory.safetensors").mkdir()
    cnx, _ = new_card("convnext-zepto", {"num_classes": 10}, None, "test")
    torch.save(cnx.state_dict(), d / "convnext.pth")
    seven, _ = new_card("vit-tiny", {"num_classes": 7}, None, "test")
    torch.save(seven.state_dict(), d / "seven_classes.pth")
    nan_vit, nan_card = new_card("vit-tiny", {**small, "num_classes": 10}, None, "test")
    with torch.no_grad():
        nan_vit.head.bias[3] = float("inf")
    save_checkpoint(d / "inf_weights.safetensors", nan_vit, nan_card)
    # data
    (d / "empty_dir").mkdir()
    (d / "no_images").mkdir()
    (d / "no_images" / "notes.txt").write_text("x")
    (d / "corrupt" / "disk").mkdir(parents=True)
    write_awkward_images(d / "corrupt" / "disk")
    write_corrupt_jpeg(d / "corrupt" / "disk" / "zz_broken.jpg")
    (d / "fake" / "disk").mkdir(parents=True)
    (d / "fake" / "disk" / "photo.png").write_text("this is not a png")
    (d / "huge").mkdir()
    Image.new("1", (12_000, 10_000)).save(d / "huge" / "huge.png")
    np.save(d / "wrong_shape.npy", np.zeros((8, 3, 32, 32), np.float32))
    np.save(d / "wrong_dtype.npy", np.zeros((8, 3, 64, 64), np.float64))
    (d / "wrong_classes" / "tiger").mkdir(parents=True)
    write_awkward_images(d / "wrong_classes" / "tiger")
    # every awkward-but-valid mode, and non-image files mixed in: must *work*
    (d / "awkward" / "disk").mkdir(parents=True)
    write_awkward_images(d / "awkward" / "disk")
    (d / "awkward" / "disk" / "README.txt").write_text("skip me")
    # bundles: convnext-zepto's (the contract test's), built once per run for every test that reads them (every case copies first)
    for t in ("onnx-fp32", "ov-fp32"):
        b = shared_bundle(t, "convnext-zepto")
        assert b.exit_code == 0, b.stderr
        (d / f"bundle-{t}").symlink_to(b.dir, target_is_directory=True)
    return d


def _evil(d: Path) -> tuple[Path, Path]:
    marker = d / "PWNED"

    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = d / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {"w": RunsCode()}}, f)
    return path, marker


CHECKPOINT_CASES = [
    ("truncated safetensors", "truncated.safetensors", [], 3, "not a readable safetensors file"),
    ("random bytes", "random.pth", ["--arch", "vit-tiny"], 3, "not a readable torch checkpoint"),
    ("pickle that runs code", "EVIL", ["--arch", "vit-tiny"], 3, "refused"),
    ("other architecture", "convnext.pth", ["--arch", "vit-tiny", "--img-size", "32"], 3, "missing keys"),
    ("other class count", "seven_classes.pth", ["--arch", "vit-tiny", "--num-classes", "10"], 3,
     "shape mismatch: head.weight (7, 192) vs model (10, 192)"),
    ("NaN/Inf weights", "inf_weights.safetensors", [], 3, "NaN/Inf (first: head.bias)"),
    ("empty file", "empty.safetensors", [], 3, "empty file"),
    ("directory instead of a file", "a_directory.safetensors", [], 3, "is a directory"),
    ("missing file", "missing.safetensors", [], 3, "no such file"),
    ("plain state dict without --arch", "seven_classes.pth", [], 2, "--arch"),
    # Trained weights on other classes: no honest default calibration set (random-init gets synthetic).
    ("INT8 without calibration data", "seven_classes.pth", ["--arch", "vit-tiny", "--num-classes", "7",
                                                            "--target", "ort-int8"], 2, "needs calibration data"),
]


@pytest.mark.parametrize("case, name, extra, code, needle", CHECKPOINT_CASES, ids=[c[0] for c in CHECKPOINT_CASES])
def test_checkpoints(assets, tmp_path, case, name, extra, code, needle):
    marker = None
    if name == "EVIL":
        path, marker = _evil(tmp_path)
        name = str(path)
    else:
        name = str(assets / name)
    before = _snapshot(tmp_path)
    proc = run_cli(["export", name, *extra, "--out", "out", "--eval-n", "10"], tmp_path)
    check(case, "checkpoint", proc, code, needle, tmp_path, before)
    if marker is not None:
        assert not marker.exists()  # the pickled code never ran


FLAG_CASES = [
    ("image size not divisible by patch", ["export", "vit-tiny", "--random-init", "--img-size", "70"], 2,
     "not divisible by patch size 16"),
    ("unknown model", ["export", "vit-tinny"], 2, "Did you mean vit-tiny"),
    ("unknown target", ["export", "vit-tiny", "--target", "ov-int9"], 2, "Did you mean ov-int8"),
    ("--static-batch 0", ["export", "vit-tiny", "--static-batch", "0"], 2, "--static-batch 0 must be >= 1"),
    ("opset out of range", ["export", "vit-tiny", "--opset", "12"], 2, "--opset 12 is out of range"),
    ("--threads 0", ["export", "vit-tiny", "--threads", "0"], 2, "--threads must be >= 1"),
    ("unknown --timing", ["export", "vit-tiny", "--timing", "fast"], 2,
     "--timing 'fast': must be one of isolated, interleaved"),
    ("bad batch list", ["bench", "vitedge-none", "--batch", "1,x"], 2, "--batch"),
    ("--max-drop on an fp32 target", ["export", "vit-tiny", "--max-drop", "0.3"], 2, "apply to"),
    ("impossible TensorRT profile", ["export", "vit-tiny", "-t", "trt-fp16", "--trt-min-batch", "8",
                                     "--trt-max-batch", "2"], 2, "min-batch <= opt-batch <= max-batch"),
    ("mistyped target option", ["export", "vit-tiny", "-t", "ort-int8", "--ort-calib-methd", "entropy"], 2,
     "Did you mean --ort-calib-method"),
    ("option of another target", ["export", "vit-tiny", "-t", "onnx-fp32", "--ov-preset", "mixed"], 2,
     "--ov-preset does not apply to onnx-fp32"),
    ("option value not among its choices", ["export", "vit-tiny", "-t", "ort-int8", "--ort-calib-method", "entropi"], 2,
     "must be one of minmax, percentile, entropy. Did you mean entropy?"),
    ("option value of the wrong type", ["export", "vit-tiny", "-t", "trt-fp16", "--trt-max-batch", "eight"], 2,
     "--trt-max-batch 'eight': expected an integer"),
    ("--option without a value", ["export", "vit-tiny", "-t", "ort-int8", "--option", "ort-calib-method"], 2,
     "expected KEY=VALUE"),
]


@pytest.mark.parametrize("case, args, code, needle", FLAG_CASES, ids=[c[0] for c in FLAG_CASES])
def test_models_and_flags(tmp_path, case, args, code, needle):
    before = _snapshot(tmp_path)
    proc = run_cli([*args, "--out", "out"] if args[0] == "export" else args, tmp_path)
    check(case, "model/flag", proc, code, needle, tmp_path, before)


DATA_CASES = [
    ("empty folder", ["--calib", "{a}/empty_dir"], 3, "no images found"),
    ("no images, only other files", ["--calib", "{a}/no_images"], 3, "no images found"),
    ("corrupt JPEG among good images", ["--calib", "{a}/corrupt", "--num-calib", "50"], 3,
     "zz_broken.jpg: corrupt or truncated image"),
    ("text file named .png", ["--calib", "{a}/fake"], 3, "photo.png: not an image Pillow can read"),
    ("huge image", ["--calib", "{a}/huge"], 3, "huge.png: image has 120,000,000 pixels, over the"),
    (".npy of the wrong shape", ["--calib", "{a}/wrong_shape.npy"], 3, "expected preprocessed (N, 3, 64, 64) float32"),
    (".npy of the wrong dtype", ["--calib", "{a}/wrong_dtype.npy"], 3, "dtype float64"),
    ("missing calibration path", ["--calib", "{a}/nowhere"], 3, "no such folder or file"),
    ("eval folder with unknown classes", ["--eval", "{a}/wrong_classes", "--target", "onnx-fp32"], 3,
     "not among the model's classes"),
    ("unreadable folder (permissions)", ["--calib", "{w}/unreadable"], 3, "permission denied"),
]


@pytest.mark.parametrize("case, args, code, needle", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_calibration_and_eval_data(assets, tmp_path, case, args, code, needle):
    nobody = "permissions" in case
    work = tmp_path
    if nobody:
        why = _nobody_can_run()
        if why:
            pytest.skip(why)
        work = world_dir()
        (work / "unreadable").mkdir()
        write_awkward_images(work / "unreadable")
        os.chmod(work / "unreadable", 0o000)
    args = [a.format(a=assets, w=work) for a in args]
    target = [] if "--target" in args else ["--target", "ort-int8"]
    try:
        before = _snapshot(work)
        proc = run_cli(["export", "vit-tiny", *target, *args, "--out", "out", "--eval-n", "20"], work, as_nobody=nobody)
        check(case, "data", proc, code, needle, work, before)
    finally:
        if nobody:
            os.chmod(work / "unreadable", 0o755)
            shutil.rmtree(work, ignore_errors=True)


def test_awkward_but_valid_images_are_handled(assets, tmp_path):
    # grayscale, RGBA, palette+transparency, 16-bit, CMYK, 1x1, WebP, BMP, plus a README: exit 0.
    proc = run_cli(["export", "vit-tiny", "--target", "ort-int8", "--calib", str(assets / "awkward"),
                    "--out", "out", "--eval-n", "100", "--bench-budget", "0.2", "--tol-accuracy-drop", "100",
                    "--tol-cosine-min", "0", "--tol-cosine-mean", "0", "--tol-top1-agreement", "0"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    # README.txt skipped, every image mode read; with no --eval half of them judge the artifact
    assert report["calibration"]["samples"] == 5
    assert "5 of 9 images" in report["calibration"]["description"] and "held out of --calib" in report["judged_on"]


def test_output_exists_unwritable_and_full(assets, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("keep")
    before = _snapshot(tmp_path)
    proc = run_cli(["export", "vit-tiny", "--out", "taken", "--eval-n", "10"], tmp_path)
    check("output directory exists", "output", proc, 6, "already exists; pass --force", tmp_path, before)
    (tmp_path / "afile").write_text("x")
    before = _snapshot(tmp_path)
    proc = run_cli(["export", "vit-tiny", "--out", "afile", "--force", "--eval-n", "10"], tmp_path)
    check("output path is a file", "output", proc, 6, "exists and is not a directory", tmp_path, before)
    why = _nobody_can_run()
    if why:
        pytest.skip(why)
    work = world_dir()
    try:
        locked = work / "locked"
        locked.mkdir()
        os.chmod(locked, 0o555)
        before = _snapshot(work)
        proc = run_cli(["export", "vit-tiny", "--out", str(locked / "out"), "--eval-n", "10"], work, as_nobody=True)
        check("output directory not writable", "output", proc, 6, "not writable", work, before)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_disk_full(tmp_path):
    small = tmp_path / "small"
    mounted = IS_ROOT and shutil.which("mount") and _tmpfs(small, "3m")
    try:
        if mounted:
            args, prelude = ["export", "vit-tiny", "--out", str(small / "out"), "--eval-n", "10"], ""
        else:
            # No mountable tmpfs here: inject ENOSPC into the ONNX write instead.
            small.mkdir(exist_ok=True)
            prelude = ("import errno, onnx\n_save = onnx.save_model\n"
                       "def _full(*a, **k):\n    raise OSError(errno.ENOSPC, 'No space left on device')\n"
                       "onnx.save_model = _full\n")
            args = ["export", "vit-tiny", "--out", str(small / "out"), "--eval-n", "10"]
        before = _snapshot(tmp_path)
        proc = run_cli(args, tmp_path, prelude=prelude)
        check("disk full" + (" (tmpfs 3 MB)" if mounted else " (injected ENOSPC)"), "output", proc, 6,
              "no space left on device", tmp_path, before)
        assert not list(small.iterdir())  # the partial bundle was removed
    finally:
        if mounted:
            subprocess.run(["umount", str(small)], capture_output=True)


def _default_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.mark.parametrize("sig, when", [(signal.SIGINT, "export"), (signal.SIGTERM, "calibration")])
def test_interrupted_runs_leave_nothing(tmp_path, sig, when):
    # Few images: reading them comes before the bundle's temp dir (8 s of the test with 2,000
    # eval and 2,000 calibration images, 2.6 s with these); the signal lands in the export either way.
    args = ["export", "vit-tiny", "--out", "out", "--eval-n", "100", "--bench-budget", "30"]
    if when == "calibration":
        args += ["--target", "ort-int8", "--num-calib", "64"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("VITEDGE_EXPORT_CACHE", None)  # a real ONNX export to interrupt, not a cached copy
    # Default dispositions in the child: under nohup or a background CI job SIGINT arrives ignored,
    # and vitedge (rightly) keeps an ignored signal ignored.
    proc = subprocess.Popen([sys.executable, "-m", "vitedge", *args], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, preexec_fn=_default_signals)
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob(".out.*.partial")):
        time.sleep(0.2)  # wait until the bundle's temp dir exists: we are mid-run
    assert proc.poll() is None, "the run ended before it could be interrupted"
    # 1 s in, the ONNX export (torch.export) is running: the fragile spot vitedge.interrupts defers.
    time.sleep(1.0)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    OBSERVED.append(("output", f"{signal.Signals(sig).name} during {when}", proc.returncode, lines[-1] if lines else ""))
    assert proc.returncode == 130, err
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("vitedge: interrupted: stopped by")
    assert list(tmp_path.iterdir()) == []  # no bundle, no temp dir


def _tamper(bundle: Path, name: str) -> None:
    data = bytearray((bundle / name).read_bytes())
    data[len(data) // 3] ^= 0x5A
    (bundle / name).write_bytes(bytes(data))


BUNDLE_CASES = ["tampered .onnx", "tampered .bin", "edited manifest", "manifest from a newer vitedge",
                "missing runtime", "not a bundle", "artifact path outside the bundle", "missing reference file"]


@pytest.mark.parametrize("case", BUNDLE_CASES)
def test_bundles(assets, tmp_path, case):
    src = "bundle-ov-fp32" if case in ("tampered .bin", "missing runtime") else "bundle-onnx-fp32"
    b = tmp_path / "b"
    shutil.copytree(assets / src, b)
    prelude = ""
    m = json.loads((b / MANIFEST).read_text())
    if case == "tampered .onnx":
        _tamper(b, "model.onnx")
        code, needle = 4, "model.onnx: checksum mismatch"
    elif case == "tampered .bin":
        _tamper(b, "model.bin")
        code, needle = 4, "model.bin: checksum mismatch"
    elif case == "edited manifest":
        m["runtime"] = "openvino"
        (b / MANIFEST).write_text(json.dumps(m))
        code, needle = 3, "edited after export"
    elif case == "manifest from a newer vitedge":
        m["format_version"] = 99
        m["versions"]["vitedge"] = "9.0.0"
        m["manifest_sha256"] = manifest_digest(m)
        (b / MANIFEST).write_text(json.dumps(m))
        code, needle = 3, "newer vitedge (9.0.0); upgrade vitedge"
    elif case == "missing runtime":
        prelude = ("import sys\nclass _B:\n    def find_spec(self, n, p=None, t=None):\n"
                   "        if n == 'openvino' or n.startswith('openvino.'):\n            raise ImportError('no openvino')\n"
                   "sys.meta_path.insert(0, _B())\n")
        code, needle = 5, "pip install 'vitedge[ov]'"
    elif case == "not a bundle":
        (b / MANIFEST).unlink()
        code, needle = 3, "not a vitedge bundle"
    elif case == "artifact path outside the bundle":
        m["artifact"]["file"] = "../../etc/passwd"
        m["manifest_sha256"] = manifest_digest(m)
        (b / MANIFEST).write_text(json.dumps(m))
        code, needle = 3, "leaves the bundle directory"
    else:
        (b / "reference.npz").unlink()
        code, needle = 4, "reference.npz: missing"
    before = _snapshot(tmp_path)
    proc = run_cli(["verify", str(b)], tmp_path, prelude=prelude)
    check(case, "bundle", proc, code, needle, tmp_path, before)


def test_runtime_predict_errors(assets, tmp_path):
    import vitedge
    from vitedge.errors import InputError
    from vitedge.export.onnx_export import ExportConfig
    from vitedge.pipeline import BenchConfig, ExportRequest, export_target
    from vitedge.runtimes.ort_runner import OrtRunner

    with vitedge.load(str(assets / "bundle-onnx-fp32")) as model:
        for case, bad, needle in [
            ("predict: float image", np.zeros((64, 64, 3), np.float32), "must be uint8"),
            ("predict: 2 channels", np.zeros((64, 64, 2), np.uint8), "1, 3 or 4 channels"),
            ("predict: empty batch", [], "empty batch"),
            ("predict: zero-size image", np.zeros((0, 64, 3), np.uint8), "is empty"),
            ("predict: not an image", {"a": 1}, "not dict"),
        ]:
            with pytest.raises(InputError, match=needle) as info:
                model.predict(bad)
            OBSERVED.append(("runtime", case, -1, f"InputError: {info.value}"))
    # A batch larger than a fixed-batch model: the runner refuses it clearly, the predictor splits it.
    export_target(load_model("vit-tiny"), ExportRequest(target="onnx-fp32", out=tmp_path / "s4", eval_n=8,
                                                      export=ExportConfig(static_batch=4),
                                                      bench=BenchConfig(warmup=1, min_runs=3, budget_s=0.1)))
    with OrtRunner(tmp_path / "s4" / "model.onnx") as r, pytest.raises(InputError, match="dimension 0 must be 4") as info:
        r.infer({"input": np.zeros((9, 3, 64, 64), np.float32)})
    OBSERVED.append(("runtime", "batch larger than the model's fixed batch", -1, f"InputError: {info.value}"))
    with vitedge.load(str(tmp_path / "s4")) as model:
        assert len(model.predict(np.zeros((9, 64, 64, 3), np.uint8))) == 9


def test_write_observed_table():
    """Runs last in this module: the rows this process recorded name distinct cases; writes the
    table (for the closing note) if asked. That every case records a row is checked per case."""
    target = os.environ.get("VITEDGE_BAD_INPUTS_TABLE")
    assert len({c for _, c, _, _ in OBSERVED}) == len(OBSERVED), "a case name is used twice"
    if target:
        assert OBSERVED, "VITEDGE_BAD_INPUTS_TABLE: run this module alone in one process (-p no:xdist)"
        rows = ["| family | case | exit | message |", "|---|---|---|---|"]
        rows += [f"| {f} | {c} | {code if code >= 0 else 'exception'} | `{msg[:160]}` |" for f, c, code, msg in OBSERVED]
        Path(target).write_text("\n".join(rows) + "\n")
