"""Quiet by default: known third-party noise is silenced, vitedge's own warnings and real errors
are not, and nothing leaks out of a `quiet()` block.

The noise comes from the README's main install (torch 2.13.0 CPU wheel, no torchvision):
torch.onnx warns "torchvision is not installed. Skipping torchvision::nms" (and roi_align,
roi_pool, deform_conv2d) on every dynamo export, and `import torchao` warns "Failed to load
.../torchao/_C_mxfp8...so" for its CUDA-only kernels. The test environment has torchvision and a
CUDA build of torch, so both conditions are recreated, and named as such where they are.
"""

from __future__ import annotations

import logging
import sys
import threading
import warnings

import pytest

from vitedge import quiet as quiet_mod
from vitedge.quiet import KNOWN_NOISE, NOISY_LOGGERS, VitedgeWarning, quiet, set_verbose

REGISTRATION_LOGGER = "torch.onnx._internal.exporter._registration"
NOISE_TEXT = ("torchvision is not installed", "Failed to load", "is an Enum subclass", "Skipping torchvision")


class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def recorder():
    """A handler on the exact logger torch.onnx warns through: torch's own handler writes to the
    stderr stream it saw at import, which fd capture may not see; this sees every record that
    survives the logger's level and filters."""
    handler = Recorder()
    logger = logging.getLogger(REGISTRATION_LOGGER)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


@pytest.fixture
def no_torchvision(monkeypatch):
    """Simulated: torchvision is installed here, not in the README's main install. A None entry in
    sys.modules is how Python marks a module as unavailable (find_spec returns None, import fails)."""
    monkeypatch.setitem(sys.modules, "torchvision", None)


@pytest.fixture(autouse=True)
def default_verbosity(monkeypatch):
    monkeypatch.delenv(quiet_mod.VERBOSE_ENV, raising=False)
    monkeypatch.setattr(quiet_mod, "_verbose", None)


def _state():
    return ([(n, logging.getLogger(n).level, list(logging.getLogger(n).filters)) for n in NOISY_LOGGERS]
            + [(n, logging.getLogger(n).level, list(logging.getLogger(n).filters)) for n, _ in KNOWN_NOISE],
            list(warnings.filters), sys.stdout)


@pytest.mark.slow  # a dynamo export: ~20 s idle, ~60 s on a busy 2-core box
def test_onnx_export_of_vit_tiny_is_quiet(tmp_path, capfd, recwarn, recorder, no_torchvision):
    from vitedge.export.onnx_export import export_onnx
    from vitedge.models.resolve import load_model

    loaded = load_model("vit-tiny")
    capfd.readouterr()
    before = _state()
    info = export_onnx(loaded.module, loaded.card, tmp_path / "m.onnx")
    out, err = capfd.readouterr()
    assert info.exporter == "dynamo" and (tmp_path / "m.onnx").stat().st_size > 1_000_000
    assert out == "", out[:500]
    assert not any(t in err for t in NOISE_TEXT), err[:500]
    assert err.strip() == "", err[:500]  # nothing else reached the terminal either
    assert recorder.messages == []
    assert [str(w.message) for w in recwarn] == []
    # Nothing left behind (the export's first imports add their own warning filters, so
    # warnings are checked for ours rather than compared whole).
    assert _state()[0] == before[0] and _state()[2] is before[2]
    assert not [f for f in warnings.filters
                if f[2] is VitedgeWarning or "vitedge" in str(getattr(f[3], "pattern", f[3] or ""))]
    assert warnings.filters.count(("ignore", None, Warning, None, 0)) == before[1].count(("ignore", None, Warning, None, 0))

    # ... while vitedge's own warnings still show inside quiet().
    with quiet():
        warnings.warn("calibration set has only 4 images", VitedgeWarning, stacklevel=1)
    assert [str(w.message) for w in recwarn] == ["calibration set has only 4 images"]


@pytest.mark.parametrize("verbose", [False, True])
def test_the_torchvision_noise_exists_and_verbose_lets_it_through(recorder, no_torchvision, verbose):
    # The control for the test above: the registry torch.onnx builds on every export does warn
    # here (so a silent export is quiet() at work), and --verbose shows it.
    from torch.onnx._internal.exporter._registration import ONNXRegistry

    set_verbose(verbose)
    with quiet():
        ONNXRegistry.from_torchlib()
    skipped = [m for m in recorder.messages if "torchvision is not installed" in m]
    if verbose:
        assert any(m.endswith("torchvision::nms") for m in skipped), recorder.messages
    else:
        assert skipped == []


@pytest.mark.slow  # two fresh interpreters importing torch + torchao
def test_importing_torchao_is_quiet():
    # A fresh interpreter: `import torchao` warns through torch's pytree logger (KernelPreference
    # registration) on this torch, and on a CPU-only torch also "Failed to load ..._C_mxfp8...so".
    import subprocess

    code = "import sys; from vitedge.quiet import quiet\nwith quiet():\n    import torchao"
    loud = subprocess.run([sys.executable, "-c", "import torchao"], capture_output=True, text=True, timeout=300)
    silent = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert loud.returncode == 0 and silent.returncode == 0, silent.stderr[-500:]
    assert any(t in loud.stderr for t in NOISE_TEXT), loud.stderr[-500:]  # the noise is real here
    assert silent.stderr == "" and silent.stdout == "", silent.stderr[-500:]


def test_torchao_kernel_load_failure_is_silenced_but_errors_are_not(monkeypatch):
    # torchao's own logger and message on a CPU-only torch (the .so files load on this CUDA build,
    # so the record is emitted here as torchao/__init__.py does: logger.warning(f"Failed to load ...")).
    handler = Recorder()
    logger = logging.getLogger("torchao")
    logger.addHandler(handler)
    try:
        line = ("Failed to load /venv/lib/python3.11/site-packages/torchao/_C_mxfp8.cpython-310-x86_64-linux-gnu.so: "
                "Could not load this library: /venv/lib/python3.11/site-packages/torchao/_C_mxfp8.cpython-310-x86_64-linux-gnu.so")
        with quiet():
            logger.warning(line)
            logger.error("torchao: real failure")
        logger.warning(line)  # outside quiet(): untouched
    finally:
        logger.removeHandler(handler)
    assert handler.messages == ["torchao: real failure", line]
    with pytest.raises(RuntimeError, match="boom"), quiet():
        raise RuntimeError("boom")


def test_stdout_is_swallowed_only_for_the_quiet_thread_and_third_party_warnings_only(capsys, recwarn):
    seen = threading.Event()
    release = threading.Event()

    def other_thread():
        with quiet():
            print("library progress 10%")
            seen.set()
            release.wait(10)

    t = threading.Thread(target=other_thread)
    t.start()
    seen.wait(10)
    print("vitedge table row")  # main thread, outside quiet(), while another thread is inside it
    release.set()
    t.join()
    with quiet():
        print("library progress 20%")
        warnings.warn("deprecated enum", DeprecationWarning, stacklevel=1)  # attributed to this test module
    assert capsys.readouterr().out == "vitedge table row\n"
    assert [str(w.message) for w in recwarn] == []


def test_verbose_sends_library_stdout_to_stderr(capsys, monkeypatch):
    monkeypatch.setenv(quiet_mod.VERBOSE_ENV, "1")
    with quiet():
        print("library progress")
    out, err = capsys.readouterr()
    assert out == "" and err == "library progress\n"
    set_verbose(False)  # the flag wins over the environment
    with quiet():
        print("library progress")
    assert capsys.readouterr() == ("", "")


def test_overlapping_blocks_in_threads_restore_everything():
    before = _state()
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            with quiet():
                barrier.wait(10)
                with quiet(capture_stdout=bool(i % 2)):
                    barrier.wait(10)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert _state() == before
    assert quiet_mod._depth == 0


@pytest.mark.slow
def test_an_app_loading_an_executorch_bundle_sees_nothing_on_stderr(tmp_path):
    """`vitedge.load()` + `predict()` in an application: ExecuTorch's cpuinfo/XNNPACK lines (native
    stderr) and torch's pytree warning (Python) stay inside; the app's stderr is empty. In a fresh
    process, as an app starts."""
    pytest.importorskip("executorch.runtime", reason="needs the executorch extra")
    import subprocess

    from shared_bundles import shared_bundle

    b = shared_bundle("et-fp32", "convnext-zepto")  # the contract test's bundle (read-only)
    assert b.exit_code == 0, b.stderr
    out = b.dir
    app = ("import numpy as np, vitedge\n"
           f"p = vitedge.load({str(out)!r})\n"
           "r = p.predict(np.zeros((64, 64, 3), np.uint8))\n"
           "print(r.label)\n")
    proc = subprocess.run([sys.executable, "-c", app], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, quiet_mod.VERBOSE_ENV: ""})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip()  # it predicted something
    assert proc.stderr == "", proc.stderr[-2000:]
