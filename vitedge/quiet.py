"""Silence known third-party noise around a call, without process-wide side effects.

Exporters and quantisers print progress to stdout, log INFO lines, and warn about things that
are not the user's problem (a missing CUDA runtime on a CPU box, deprecated enum registration).
Inside `quiet()`:
- the loggers in NOISY_LOGGERS let only ERROR and above through, and the records in KNOWN_NOISE
  (one logger, one message pattern each) are dropped;
- third-party Python warnings are ignored; vitedge's own (a `VitedgeWarning`, or any warning
  raised from a `vitedge.*` module) still show;
- what the calling thread prints to stdout is swallowed (stdout carries vitedge's own tables and
  JSON); other threads' output is untouched.
Errors are never hidden: exceptions propagate, and ERROR records still reach their handlers.
Everything is restored when the last `quiet()` block exits, whichever thread it runs in
(the state is reference-counted: overlapping blocks in several threads cannot leave a logger
raised or a warning filter behind).

`--verbose` (`set_verbose(True)`, or VITEDGE_VERBOSE=1 in the environment) lets everything
through; the library's stdout then goes to stderr, so vitedge's stdout stays machine-readable.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Any, TextIO

# Loggers whose INFO/WARNING output is never the user's business (ERROR still shows).
NOISY_LOGGERS = ("nncf", "torch.utils.cpp_extension", "torch.utils._pytree", "torchao", "onnxscript")

# Exactly which third-party lines are silenced, with where they come from (torch 2.13 CPU
# wheel without torchvision, torchao 0.18). Other records of these loggers still show.
KNOWN_NOISE: tuple[tuple[str, str], ...] = (
    # torch.onnx.export(dynamo=True) builds its op registry on every export and, for each
    # torchvision op (nms, roi_align, roi_pool, deform_conv2d), warns when torchvision is absent:
    # "torchvision is not installed. Skipping torchvision::nms" (_registration.py, logger.warning).
    ("torch.onnx._internal.exporter._registration", r"torchvision is not installed\. Skipping torchvision::"),
    # `import torchao` tries to load its CUDA-only kernels (_C_mxfp8, _C_cutlass_90a) and warns
    # "Failed to load .../torchao/_C_mxfp8...so: Could not load this library" on a CPU-only torch.
    ("torchao", r"Failed to load .*_C[^/]*\.so"),
    # `import torchao` registers its KernelPreference enum with torch's pytree; torch >= 2.13
    # warns that this is deprecated (torch/utils/_pytree.py, logger.warning).
    ("torch.utils._pytree", r"is an Enum subclass and is now natively supported"),
)

VERBOSE_ENV = "VITEDGE_VERBOSE"
_verbose: bool | None = None  # None: follow the environment


class VitedgeWarning(UserWarning):
    """vitedge's own warnings: always shown, also inside `quiet()`."""


def set_verbose(flag: bool) -> None:
    """`--verbose`: let third-party noise through (overrides VITEDGE_VERBOSE)."""
    global _verbose
    _verbose = bool(flag)


def verbose() -> bool:
    if _verbose is not None:
        return _verbose
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


class _KnownNoise(logging.Filter):
    def __init__(self, pattern: str) -> None:
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is not ours to judge
            return True
        return not self.pattern.search(message)


class _ThreadStdout:
    """sys.stdout while any quiet() block is open: writes from a thread inside quiet() are
    swallowed (or sent to stderr in verbose mode), every other write goes to the real stdout."""

    def __init__(self, real: TextIO) -> None:
        self._real = real

    def _target(self) -> TextIO | None:
        if getattr(_local, "capture", 0) <= 0:
            return self._real
        return sys.stderr if verbose() else None

    def write(self, s: str) -> int:
        target = self._target()
        return target.write(s) if target is not None else len(s)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        target = self._target()
        if target is not None:
            target.flush()

    def __getattr__(self, name: str) -> Any:  # encoding, isatty, fileno, ...
        return getattr(self._real, name)


_lock = threading.RLock()
_local = threading.local()  # .capture: this thread's depth of stdout-capturing quiet() blocks
_depth = 0  # open quiet() blocks, all threads
_saved: dict[str, Any] = {}


def _enter() -> None:
    global _depth
    with _lock:
        _depth += 1
        if _depth > 1:
            return
        _saved["stdout"] = sys.stdout
        sys.stdout = _ThreadStdout(sys.stdout)
        if verbose():
            return
        loggers = [logging.getLogger(name) for name in NOISY_LOGGERS]
        _saved["levels"] = [(lg, lg.level) for lg in loggers]
        for lg in loggers:
            if lg.getEffectiveLevel() < logging.ERROR:
                lg.setLevel(logging.ERROR)
        _saved["filters"] = [(logging.getLogger(name), _KnownNoise(pattern)) for name, pattern in KNOWN_NOISE]
        for lg, flt in _saved["filters"]:
            lg.addFilter(flt)
        _saved["warnings"] = warnings.catch_warnings()
        _saved["warnings"].__enter__()
        warnings.filterwarnings("ignore")
        # Inserted last = checked first: vitedge's own warnings keep the default action.
        warnings.filterwarnings("default", module=r"vitedge(\.|$)")
        warnings.filterwarnings("default", category=VitedgeWarning)


def _exit() -> None:
    global _depth
    with _lock:
        _depth -= 1
        if _depth > 0:
            return
        if isinstance(sys.stdout, _ThreadStdout):  # else someone replaced it meanwhile: leave theirs
            sys.stdout = _saved["stdout"]
        for lg, level in _saved.get("levels", []):
            lg.setLevel(level)
        for lg, flt in _saved.get("filters", []):
            lg.removeFilter(flt)
        if "warnings" in _saved:
            _saved["warnings"].__exit__(None, None, None)
        _saved.clear()


@contextlib.contextmanager
def quiet(capture_stdout: bool = True) -> Iterator[None]:
    _enter()
    _local.capture = getattr(_local, "capture", 0) + (1 if capture_stdout else 0)
    try:
        yield
    finally:
        _local.capture -= 1 if capture_stdout else 0
        _exit()


@contextlib.contextmanager
def native_stderr() -> Iterator[None]:
    """Hold what native code writes straight to file descriptor 2 (absl/oneDNN banners, "Created
    TensorFlow Lite XNNPACK delegate", cpuinfo probing) for the duration, and show it only if the
    block fails (so a real error keeps its context) or in verbose mode. Python-level output is
    untouched: this is for C/C++ libraries that bypass sys.stderr."""
    if verbose():
        yield
        return
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                held.seek(0)
                text = held.read().decode(errors="replace").strip()
                if text:
                    print(text, file=sys.stderr)
