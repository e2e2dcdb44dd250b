"""Keep the calling thread's alternate signal stack across OpenVINO calls.

Measured here (OpenVINO 2026.4 CPU plugin, Linux): `compile_model` replaces the calling thread's
`sigaltstack` with a buffer the plugin maps itself, and that buffer can be unmapped later while
the thread still points at it. CPython installs its signal handlers with SA_ONSTACK, so the next
SIGINT/SIGTERM is delivered onto unmapped memory: a segfault (exit 139) instead of a clean
Ctrl-C, and faulthandler cannot even report it because it uses the same stack. Restoring the
stack the thread had before each OpenVINO call removes the crash; OpenVINO does not need its
stack on our thread afterwards (inference threads are its own).

Linux/glibc only (via ctypes); elsewhere `preserved()` does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
from collections.abc import Iterator
from typing import Any


class _StackT(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the process's own symbols: libc is loaded already
        libc.sigaltstack.argtypes = [ctypes.POINTER(_StackT), ctypes.POINTER(_StackT)]
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _libc()


def current() -> tuple[int, int, int] | None:
    """(address, flags, size) of this thread's alternate signal stack, or None if unknown."""
    if _LIBC is None:
        return None
    ss = _StackT()
    if _LIBC.sigaltstack(None, ctypes.byref(ss)) != 0:
        return None
    return (ss.ss_sp or 0, ss.ss_flags, ss.ss_size)


def _set(state: tuple[int, int, int]) -> None:
    sp, flags, size = state
    ss = _StackT(sp, flags & ~1, size)  # SS_ONSTACK (1) is a status bit, not a settable flag
    _LIBC.sigaltstack(ctypes.byref(ss), None)


@contextlib.contextmanager
def preserved() -> Iterator[None]:
    """Run the block, then put back the alternate signal stack this thread had before it."""
    before = current()
    try:
        yield
    finally:
        if before is not None and current() != before:
            _set(before)
