"""The `vitedge` command: one typer app, one module per group of commands, one error policy.

Error policy (see vitedge.errors): an expected failure prints one line `vitedge: <kind>: <what
to do>` to stderr and exits with its class's code; `--debug` (anywhere on the line) shows the
traceback instead, and `--verbose` lets known third-party noise through (vitedge.quiet). SIGINT and SIGTERM both raise `Interrupted` in the main thread (see vitedge.interrupts), so
temporary outputs are removed on the way out and the exit code is 130.
"""

from __future__ import annotations

import sys

import typer

from vitedge import interrupts
from vitedge.errors import EXIT_SUMMARY, Interrupted, VitedgeError

app = typer.Typer(
    name="vitedge",
    help="Take trained ViT / DeiT / ConvNeXt models to the edge: export, quantise, compile, prove.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Exit codes: " + ", ".join(f"{c} {d}" for c, d in EXIT_SUMMARY.items()) + ".",
)


def _register_commands() -> None:
    # Command modules import only what their own commands need, lazily, so the device-side
    # commands (verify, bench) work where torch is not installed.
    from vitedge.cli import models_cmd, train_cmd, export_cmd, matrix_cmd, device_cmd, pretrain_cmd  # noqa: F401, I001


def _cli_errors() -> tuple[type[BaseException], ...]:
    """Usage-error classes of the CLI library (typer >= 0.26 vendors click as typer._click)."""
    errors: list[type[BaseException]] = []
    try:
        from typer._click.exceptions import ClickException as VendoredClickException

        errors.append(VendoredClickException)
    except ImportError:
        pass
    try:
        from click.exceptions import ClickException

        errors.append(ClickException)
    except ImportError:
        pass
    return tuple(errors)


_CLI_ERRORS = _cli_errors()


def _err(kind: str, msg: str) -> None:
    typer.echo(f"vitedge: {kind}: {msg}", err=True)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    verbose = "--verbose" in args
    args = [a for a in args if a not in ("--debug", "--verbose")]
    _register_commands()
    try:
        from vitedge import quiet
        from vitedge.cli.flags import rewrite_argv

        quiet.set_verbose(verbose)
        args = rewrite_argv(args)
        with interrupts.installed():
            result = app(args=args, prog_name="vitedge", standalone_mode=False)
        return int(result) if isinstance(result, int) else 0
    except typer.Exit as e:
        return int(getattr(e, "exit_code", 0) or 0)
    except _CLI_ERRORS as e:  # bad flag / missing argument: the CLI library's own message
        if debug:
            raise
        e.show()
        return int(getattr(e, "exit_code", 2))
    except Interrupted as e:
        if debug:
            raise
        _err(e.kind, str(e))
        return e.exit_code
    except (KeyboardInterrupt, typer.Abort):
        if debug:
            raise
        _err("interrupted", "stopped by Ctrl-C; unfinished output removed")
        return Interrupted.exit_code
    except VitedgeError as e:
        if debug:
            raise
        _err(e.kind, str(e))
        return e.exit_code
    except Exception as e:  # a bug: say so in one line, details with --debug
        if debug:
            raise
        _err("internal error", f"{type(e).__name__}: {e} (run again with --debug for details)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
