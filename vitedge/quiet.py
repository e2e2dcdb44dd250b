"""Silence known third-party noise around a call, without process-wide side effects.

Exporters and quantisers print progress to stdout, log INFO lines, and warn about things that
are not the user's problem (a missing CUDA runtime on a CPU box, deprecated enum registration).
Inside `quiet()` those loggers are raised to ERROR, warnings are ignored and stdout is captured;
everything is restored on exit.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator

NOISY_LOGGERS = ("nncf", "torch.utils.cpp_extension", "torch.utils._pytree", "torchao", "onnxscript")


@contextlib.contextmanager
def quiet(capture_stdout: bool = True) -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if capture_stdout:
                with contextlib.redirect_stdout(io.StringIO()):
                    yield
            else:
                yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
