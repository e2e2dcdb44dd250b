"""SIGINT/SIGTERM as a clean `Interrupted`, and the few places where it must wait.

The CLI installs the handler; library users keep their own (nothing here runs unless installed).

Why deferral exists (measured, torch 2.14): an exception raised by a signal handler in the middle
of `torch.export` is either caught and re-wrapped as `TorchExportError` (so the exporter "failed"
and the TorchScript fallback quietly finished the job, exit 0) or thrown through a C++ frame
that cannot unwind it (`std::terminate`, exit 134, skipping the clean-up). Inside `deferred()` a
signal is only recorded and raised when the block ends; a second signal raises at once, so a user
who presses Ctrl-C twice is never kept waiting.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

from vitedge.errors import Interrupted

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_state: dict[str, Any] = {"installed": False, "deferring": 0, "signal": None, "count": 0}


def _message(signum: int) -> str:
    # "unfinished", not "nothing": a matrix keeps the cells that completed before the signal.
    return f"stopped by {signal.Signals(signum).name}; unfinished output removed"


def _handler(signum: int, frame: FrameType | None) -> None:
    _state["signal"], _state["count"] = signum, _state["count"] + 1
    if _state["deferring"] and _state["count"] == 1:
        return  # raised by check() when the fragile block ends
    raise Interrupted(_message(signum))


@contextlib.contextmanager
def installed() -> Iterator[None]:
    """Route SIGINT/SIGTERM to `Interrupted` for the duration (main thread only).

    A signal the parent set to ignored stays ignored (`nohup`, background jobs), as Unix tools do."""
    previous = {sig: signal.signal(sig, _handler) for sig in _SIGNALS
                if signal.getsignal(sig) is not signal.SIG_IGN}
    _state.update(installed=True, deferring=0, signal=None, count=0)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _state.update(installed=False, deferring=0, signal=None, count=0)


def check() -> None:
    """Raise `Interrupted` if a signal has arrived.

    Called where a deferred block ends, and in our own `except Exception` wrappers: a library
    that catches the handler's exception and re-raises it as its own error type must not turn
    Ctrl-C into an "export failed" or into a silent fallback."""
    if _state["signal"] is not None:
        raise Interrupted(_message(_state["signal"]))


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold a first SIGINT/SIGTERM until the block ends (no-op unless the CLI installed the handler)."""
    if not _state["installed"] or threading.current_thread() is not threading.main_thread():
        yield
        return
    _state["deferring"] += 1
    try:
        yield
    finally:
        _state["deferring"] -= 1
    check()
