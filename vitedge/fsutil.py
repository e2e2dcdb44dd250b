"""Writing outputs so that nothing half-written is ever left where a later step would find it.

Every file or directory vitedge produces is built under a temporary name next to its final
place and renamed into place only when complete (rename is atomic within a file system). On any
exception, including KeyboardInterrupt and the SIGTERM the CLI turns into one, the temporary
is removed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from vitedge.errors import OutputError


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _output_error(path: Path, e: OSError) -> OutputError:
    if e.errno == errno.ENOSPC:
        return OutputError(f"{path}: no space left on device; free space or choose another --out")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(f"{path}: not writable ({e.strerror}); choose another --out")
    return OutputError(f"{path}: cannot write ({e.strerror or e})")


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _apply_umask(path: Path, mode: int) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode & ~umask)


def check_writable_parent(path: Path) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    parent = parent.resolve()
    if not parent.exists():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise _output_error(parent, e) from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{parent}: not writable; choose another --out")


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike[str], force: bool = False) -> Iterator[Path]:
    """Yield a fresh temp dir; on success it replaces `final` (which must not exist unless force)."""
    final = Path(final)
    if final.exists() and not force:
        raise OutputError(f"{final}: already exists; pass --force to replace it or choose another --out")
    if final.exists() and not final.is_dir():
        raise OutputError(f"{final}: exists and is not a directory")
    check_writable_parent(final)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    except OSError as e:
        raise _output_error(final.parent, e) from None
    _apply_umask(tmp, 0o777)  # mkdtemp makes 0700; a bundle should be readable like any dir
    try:
        yield tmp
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and e.errno in _DISK_FULL:
            raise _output_error(final, e) from None
        raise
    if final.exists() and not force:
        # Another run finished at `final` while this one worked (the check above was at the
        # start): its bundle is kept, this one is dropped, and the user hears of it.
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(f"{final}: appeared while this run was working (another run wrote it); it is kept. "
                          "Pass --force to replace it or choose another --out")
    try:
        if final.exists():
            # --force: move the old one aside first so `final` is never missing *and* half-new.
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _output_error(final, e) from None


@contextlib.contextmanager
def atomic_file(final: str | os.PathLike[str], force: bool = True) -> Iterator[Path]:
    """Yield a temp path in the same directory; it is renamed to `final` on success."""
    final = Path(final)
    if final.exists() and not force:
        raise OutputError(f"{final}: already exists; pass --force to replace it")
    if final.is_dir():
        raise OutputError(f"{final}: is a directory, expected a file path")
    check_writable_parent(final)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
    except OSError as e:
        raise _output_error(final.parent, e) from None
    os.close(fd)
    tmp = Path(name)
    _apply_umask(tmp, 0o666)  # mkstemp makes 0600
    try:
        yield tmp
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in _DISK_FULL:
            raise _output_error(final, e) from None
        raise
    try:
        os.replace(tmp, final)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise _output_error(final, e) from None
