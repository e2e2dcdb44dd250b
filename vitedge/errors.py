"""The errors vitedge raises on purpose, each with the process exit code the CLI maps it to.

Every expected failure (bad flag, bad file, failed parity gate, missing runtime) is one of these:
the CLI prints its message as one line and exits with its code; only `--debug` shows a
traceback. Anything else escaping to the CLI is a bug (exit 1).
"""

from __future__ import annotations


class VitedgeError(Exception):
    """Base class. `exit_code` is what `vitedge` returns when this reaches the top."""

    exit_code = 1
    kind = "error"


class UsageError(VitedgeError):
    """A flag, name or combination of options that cannot work (exit 2, like argparse/click)."""

    exit_code = 2
    kind = "usage error"


class InputError(VitedgeError):
    """A file or folder given to vitedge is missing, unreadable, corrupt or of the wrong kind."""

    exit_code = 3
    kind = "bad input"


class UnsafeInputError(InputError):
    """A file would need code execution to load (e.g. a pickle with globals): refused."""

    exit_code = 3
    kind = "refused unsafe input"


class ParityError(VitedgeError):
    """An artifact was built but does not match the reference within tolerance (exit 4)."""

    exit_code = 4
    kind = "parity failed"


class MissingDependencyError(VitedgeError):
    """A runtime or optional package (or a GPU) needed for this step is not available (exit 5)."""

    exit_code = 5
    kind = "missing dependency"


class OutputError(VitedgeError):
    """The output location cannot be written: exists, not writable, disk full (exit 6)."""

    exit_code = 6
    kind = "cannot write output"


class ExportError(VitedgeError):
    """A stage (export, quantisation, compile) failed on a valid input (exit 7)."""

    exit_code = 7
    kind = "export failed"


class Interrupted(BaseException):
    """SIGINT/SIGTERM arrived; partial output was removed (exit 130).

    A BaseException, like KeyboardInterrupt, so that libraries' `except Exception` blocks (the
    ONNX exporter has several) cannot swallow it; unlike KeyboardInterrupt, click does not turn
    it into a silent exit, so the CLI can say what happened."""

    exit_code = 130
    kind = "interrupted"


# Short names for `vitedge --help`.
EXIT_SUMMARY: dict[int, str] = {
    0: "ok", 1: "bug", 2: "usage", 3: "bad input", 4: "parity failed", 5: "missing dependency",
    6: "output not writable", 7: "export failed", 130: "interrupted",
}
