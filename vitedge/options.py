"""Typed target options: one frozen dataclass per target family, every option written once.

A target's options class is a frozen dataclass whose fields are made with `opt(default, help)`
and whose `prefix` (a ClassVar) names the family: `OrtInt8Options.prefix = "ort"` turns the field
`calib_method` into the CLI flag `--ort-calib-method` and the key `ort-calib-method` of
`--option KEY=VALUE`. The CLI, `vitedge targets --options T` and the docs are generated from
the dataclass, so a default or a help string is never written twice (after NNCF's
`AdvancedQuantizationParameters`, rather than ONNX Runtime's string-keyed `extra_options`).

Values arrive as strings and are converted by the field's type (bool, int, float, str, their
Optional forms and tuple[str, ...]); a field's `choices` are checked with a did-you-mean.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from vitedge.errors import UsageError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def opt(default: Any, help: str, choices: tuple[str, ...] | None = None, hidden: bool = False) -> Any:
    """A dataclass field with its one default and one line of help.

    `hidden` options are set by vitedge itself (e.g. the accuracy-aware fallback's node lists)
    and are not offered as flags."""
    meta = {"help": help, "choices": choices, "hidden": hidden}
    if isinstance(default, (list, dict, set)):
        raise TypeError("option defaults must be immutable (use a tuple)")
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class NoOptions:
    """For targets without options."""

    prefix: ClassVar[str] = ""


@dataclass(frozen=True)
class OptionInfo:
    key: str  # "ort-calib-method": the flag without its dashes, and the --option key
    field: str  # "calib_method"
    type: str  # for help: bool, int, float, str, names
    default: Any
    help: str
    choices: tuple[str, ...] | None
    hidden: bool

    @property
    def flag(self) -> str:
        return f"--{self.key}"


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(the non-None type, whether None is allowed)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _type_name(tp: Any) -> str:
    base, optional = _base_type(tp)
    if typing.get_origin(base) is tuple:
        name = "names"
    else:
        name = getattr(base, "__name__", str(base))
    return name + ("?" if optional else "")


def option_infos(cls: type) -> list[OptionInfo]:
    """Every option of an options dataclass, in declaration order."""
    prefix = getattr(cls, "prefix", "")
    hints = _hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}-{f.name.replace('_', '-')}" if prefix else f.name.replace("_", "-")
        out.append(OptionInfo(key, f.name, _type_name(hints[f.name]), f.default, f.metadata.get("help", ""),
                              f.metadata.get("choices"), bool(f.metadata.get("hidden"))))
    return out


def _convert(text: str | bool, tp: Any, info: OptionInfo) -> Any:
    base, optional = _base_type(tp)
    if isinstance(text, bool):
        if base is not bool:
            raise UsageError(f"{info.flag} takes a value ({info.type})")
        return text
    if not isinstance(text, str):  # already typed (from Python, not the command line)
        return tuple(text) if typing.get_origin(base) is tuple else text
    if optional and text.strip().lower() in ("none", "default", ""):
        return None
    if base is bool:
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise UsageError(f"{info.flag} {text!r}: expected true or false")
    if base is int:
        try:
            return int(text)
        except ValueError:
            raise UsageError(f"{info.flag} {text!r}: expected an integer") from None
    if base is float:
        try:
            return float(text)
        except ValueError:
            raise UsageError(f"{info.flag} {text!r}: expected a number") from None
    if typing.get_origin(base) is tuple:
        return tuple(p.strip() for p in text.split(",") if p.strip())
    return text


def keyed(cls: type, by_field: dict[str, Any]) -> dict[str, Any]:
    """{field name: value} (how a target's own code writes an option set, e.g. auto's variants)
    -> {key: value}, the one spelling every option has past `vitedge.plan`."""
    keys = {i.field: i.key for i in option_infos(cls)}
    unknown = sorted(set(by_field) - set(keys))
    if unknown:
        raise TypeError(f"{cls.__name__} has no field(s) {unknown}")
    return {keys[f]: v for f, v in by_field.items()}


def build_options(cls: type, values: dict[str, str | bool | Iterable[str]], where: str = "") -> Any:
    """An instance of `cls` from {key ("ort-calib-method"): string value}; unknown keys are an
    error with a did-you-mean. A repeated names option may be given as a list of strings."""
    infos = {i.key: i for i in option_infos(cls)}
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for key, raw in values.items():
        info = infos.get(key)
        if info is None:
            close = difflib.get_close_matches(key, list(infos), n=3)
            hint = f" Did you mean {', '.join('--' + c for c in close)}?" if close else ""
            known = ", ".join(sorted(infos)) or "none"
            raise UsageError(f"{where or cls.__name__} has no option {key!r}.{hint} Its options: {known}")
        if isinstance(raw, (list, tuple)) and info.type.startswith("names"):  # repeated: accumulate
            value: Any = tuple(v for part in raw for v in _convert(part, hints[info.field], info))
        elif isinstance(raw, list):  # a value option given twice: the last one wins, as with flags
            value = _convert(raw[-1], hints[info.field], info)
        else:
            value = _convert(raw, hints[info.field], info)
        if info.choices and value is not None and value not in info.choices:
            close = difflib.get_close_matches(str(value), list(info.choices), n=1)
            hint = f" Did you mean {close[0]}?" if close else ""
            raise UsageError(f"{info.flag} {value!r}: must be one of {', '.join(info.choices)}.{hint}")
        kwargs[info.field] = value
    return cls(**kwargs)


def describe(options: Any) -> dict[str, Any]:
    """The options as a plain dict (for reports and manifests)."""
    return dataclasses.asdict(options) if dataclasses.is_dataclass(options) else {}
