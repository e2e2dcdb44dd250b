"""Target options on the command line, generated from the targets' options dataclasses, and the
old flag spellings kept for one release.

Every field of a registered options class is a flag `--<prefix>-<field>` (`--ort-calib-method
entropy`, `--trt-max-batch 16`, booleans as `--ov-transformer` / `--no-ov-transformer`, names
repeatable or comma-separated). `main()` rewrites them, before the CLI library parses the line,
into the equivalent `--option KEY=VALUE`, which `export` and `matrix` hand to the pipeline; each
target takes the keys it declares. A mistyped target flag gets a did-you-mean over the generated
flags. `vitedge targets --options T` lists a target's flags with their defaults.
"""

from __future__ import annotations

import difflib
import sys
from typing import Any

from vitedge.errors import UsageError
from vitedge.plan import option_table

OPTION_FLAG = "--option"
TARGET_COMMANDS = ("export", "matrix")

# Old spelling -> new spelling. A new spelling `--option FIELD` means "this field, in whichever
# selected target declares it" (e.g. --calib-method was read by both ort-int8 and trt-int8).
# Kept for one release (removed in 0.3); each use prints one deprecation line.
DEPRECATED: dict[str, dict[str, str]] = {
    "export": {
        "--calib-method": "--option calib_method", "--calib-percentile": "--option calib_percentile",
        "--quantize-attention": "--ort-quantize-attention",
        "--min-batch": "--trt-min-batch", "--opt-batch": "--trt-opt-batch", "--max-batch": "--trt-max-batch",
        "--workspace-mb": "--trt-workspace-mb", "--version-compatible": "--trt-version-compatible",
        "--hardware-compatible": "--trt-hardware-compatible", "--require-engine": "--trt-require-engine",
        "--max-abs": "--tol-max-abs", "--cosine-min": "--tol-cosine-min", "--cosine-mean": "--tol-cosine-mean",
        "--top1-agreement": "--tol-top1-agreement", "--max-accuracy-drop": "--tol-accuracy-drop",
    },
    "eval": {"--limit": "--eval-n"},
    "diagnose": {"--n": "--eval-n"},
}
_SHOWN = {"--calib-method": "--ort-calib-method / --trt-calib-method",
          "--calib-percentile": "--ort-calib-percentile / --trt-calib-percentile"}


def _command(args: list[str]) -> str | None:
    return next((a for a in args if not a.startswith("-")), None)


def _deprecations(command: str | None, args: list[str], warn: Any) -> list[str]:
    table = DEPRECATED.get(command or "", {})
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        flag, eq, value = arg.partition("=")
        negated = flag.startswith("--no-") and "--" + flag[5:] in table
        old = "--" + flag[5:] if negated else flag
        new = table.get(old)
        if new is None:
            out.append(arg)
            continue
        warn(f"vitedge: deprecated: {old} is now {_SHOWN.get(old, new)}; the old spelling goes away in 0.3")
        if new.startswith(OPTION_FLAG):  # a value option read by whichever selected target declares it
            if not eq and i < len(args):
                value, i = args[i], i + 1
            out += [OPTION_FLAG, f"{new.split()[1]}={value}"]
        else:
            out.append(("--no-" + new[2:] if negated else new) + (eq + value if eq else ""))
    return out


def rewrite_argv(args: list[str], warn: Any = None) -> list[str]:
    """Old spellings -> new ones; generated target flags -> `--option KEY=VALUE`."""
    warn = warn or (lambda msg: print(msg, file=sys.stderr))
    command = _command(args)
    args = _deprecations(command, args, warn)
    if command not in TARGET_COMMANDS:
        return args
    table = option_table()
    prefixes = {key.split("-")[0] for key in table}
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("--") or arg == "--":
            out.append(arg)
            continue
        flag, eq, value = arg[2:].partition("=")
        key, negated = (flag[3:], True) if flag.startswith("no-") and flag[3:] in table else (flag, False)
        if key not in table:
            if key.split("-")[0] in prefixes and key.count("-") >= 1:
                close = difflib.get_close_matches(key, list(table), n=3)
                hint = f" Did you mean {', '.join('--' + c for c in close)}?" if close else ""
                raise UsageError(f"no such target option --{key}.{hint} `vitedge targets --options TARGET` lists them")
            out.append(arg)
            continue
        kind = table[key][0]
        if kind.rstrip("?") == "bool" and not eq:
            value = "false" if negated else "true"
        elif not eq:
            if i >= len(args):
                raise UsageError(f"--{key} needs a value ({kind})")
            value = args[i]
            i += 1
        out += [OPTION_FLAG, f"{key}={value}"]
    return out


def parse_option_values(pairs: list[str] | None) -> dict[str, Any]:
    """`--option KEY=VALUE` pairs -> {key: value}; names options given twice accumulate."""
    values: dict[str, Any] = {}
    for pair in pairs or []:
        key, eq, value = pair.partition("=")
        key = key.strip()
        if not eq or not key:
            raise UsageError(f"--option {pair!r}: expected KEY=VALUE, e.g. --option ort-calib-method=entropy")
        if key in values:
            prev = values[key]
            values[key] = [*(prev if isinstance(prev, list) else [prev]), value]
        else:
            values[key] = value
    return values
