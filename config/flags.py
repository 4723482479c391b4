"""The command line generated from the config dataclasses, as TRL's `HfArgumentParser` does.

A config field becomes a flag when its metadata has help text (`option`); the flag, its group, its range
check and its CPU-demonstration default sit beside the field's one default. A field that another flag sets
(`shared`: the seed reaches the LoRA, the sampler and the LSTM from `--random-state`) has no flag of its own.
`build` turns the parsed flags into a config; `device_defaults` settles what depends on the hardware, in one
place, and says what it chose.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import math
import typing
from dataclasses import MISSING, field, fields, is_dataclass
from pathlib import Path

from utils import StockToolError

NO_CPU = object()  # metadata marker: the field's default is the same on a CPU


def option(
    default=MISSING,
    help="",
    *,
    group,
    flag=None,
    aliases=(),
    cpu=NO_CPU,
    check=None,
    choices=None,
    switch=False,
    bare=False,
    auto=False,
    metavar=None,
):
    """A config field that is a command-line flag.

    flag: the flag when it is not `--field-name`; aliases: its other spellings; cpu: the CPU demonstration's
    default (the field's default is the GPU's); check: (what it must be, test) applied before any work,
    "date", or a function (flag, value) that raises StockToolError (the path checks below); choices: a list,
    or {text: value} when the flag's text is not the field's value; switch: a flag without a value
    (store_true); bare: a 1/0 flag that alone means 1; auto: unset is None, for the caller to settle from
    other flags; metavar: what the usage shows instead of a long list of choices."""
    meta = {"help": help, "group": group, "flag": flag, "aliases": tuple(aliases), "cpu": cpu, "check": check}
    meta |= {"choices": choices, "switch": switch, "bare": bare, "auto": auto, "metavar": metavar}
    return field(default=default, metadata=meta)


def shared(default, flag_field: str, *, cpu=NO_CPU, convert=None):
    """A field set by another field's flag (`flag_field`, as its dest), optionally converted."""
    return field(default=default, metadata={"same_as": flag_field, "cpu": cpu, "convert": convert})


AT_LEAST_1 = ("at least 1", lambda v: v >= 1)


AT_LEAST_0 = ("0 or more", lambda v: v >= 0)


POSITIVE = ("a positive number", lambda v: v > 0 and v == v and v != float("inf"))


SHARE = ("between 0 and 1 (exclusive)", lambda v: 0 < v < 1)


# Every number is checked against these too: argparse's int takes 99999999999999999999, which overflows a C long
# in torch and numpy, and its float takes inf and nan, which make no setting of this tool meaningful.
INT_LIMIT = 2**31 - 1


def between(low, high, what: str | None = None) -> tuple:
    """A range check from `low` to `high`, both included."""
    return (what or f"from {low} to {high}", lambda v: low <= v <= high)


def _given(flag: str, value: str) -> None:
    if not value.strip():
        raise StockToolError(f"{flag} {value!r}: give a path (an empty one names nothing)")


def existing_file(flag: str, value: str) -> None:
    """A path flag naming a file to read: given, there, and not a folder."""
    _given(flag, value)
    path = Path(value)
    if path.is_dir():
        raise StockToolError(f"{flag} {value} is a folder, not a file")
    if not path.is_file():
        raise StockToolError(f"{flag} {value} does not exist")


def folder(flag: str, value: str) -> None:
    """A path flag naming a folder to use or create: given, and not a file."""
    _given(flag, value)
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise StockToolError(f"{flag} {value} is a file, not a folder")


def flag01(text: str) -> bool:
    if text not in ("0", "1"):
        raise argparse.ArgumentTypeError("use 1 (on) or 0 (off)")
    return text == "1"


@functools.cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _base_type(hint):
    """int for `int | None`, and so on."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def flag_fields(cls):
    """(field, its type) for every field of `cls` that is a flag, nested configs included, in order."""
    for f in fields(cls):
        hint = _base_type(_hints(cls)[f.name])
        if is_dataclass(hint):
            yield from flag_fields(hint)
        elif f.metadata.get("help"):
            yield f, hint


def flag_name(f) -> str:
    return f.metadata["flag"] or "--" + f.name.replace("_", "-")


def dest(f) -> str:
    return f.metadata.get("same_as") or flag_name(f).lstrip("-").replace("-", "_")


def _help(f) -> str:
    meta, text = f.metadata, f.metadata["help"]
    if meta["cpu"] is not NO_CPU:
        return f"{text} (default: GPU {_shown(f, f.default)}, CPU demo {_shown(f, meta['cpu'])})"
    return text


def _shown(f, value):
    choices = f.metadata.get("choices")
    if isinstance(choices, dict):
        return next(text for text, v in choices.items() if v == value)
    return value


def add_arguments(parser: argparse.ArgumentParser, groups: dict, classes) -> None:
    """Every flag of `classes`, each in its group (`groups`: group key → argparse group, or the parser)."""
    for cls in classes:
        for f, kind in flag_fields(cls):
            meta = f.metadata
            kwargs = {"help": _help(f), "dest": dest(f)}
            device = meta["cpu"] is not NO_CPU or meta["auto"]
            if isinstance(meta["choices"], dict):
                kwargs |= {"choices": list(meta["choices"]), "default": None if device else _shown(f, f.default)}
            elif meta["switch"]:
                kwargs |= {"action": "store_true"}
            else:
                kind = flag01 if kind is bool else kind
                kwargs |= {"type": kind, "default": None if device else f.default, "choices": meta["choices"]}
                if meta.get("metavar"):
                    kwargs |= {"metavar": meta["metavar"]}
                if meta["bare"]:
                    kwargs |= {"nargs": "?", "const": True}
            if f.default is MISSING:
                kwargs |= {"required": True, "default": None}
            groups.get(meta["group"], parser).add_argument(flag_name(f), *meta["aliases"], **kwargs)


def check(parser_classes, args) -> None:
    """Refuse an out-of-range number, a malformed date or a path of the wrong kind before any work, naming the
    flag. A flag left at its field's default passes its range check unasked (defaults are valid, and some
    checks, such as --calendar's, import a library)."""
    for cls in parser_classes:
        for f, _ in flag_fields(cls):
            rule, value = f.metadata["check"], getattr(args, dest(f))
            if value is None:
                continue
            if rule is None:
                pass
            elif rule == "date":
                try:
                    dt.date.fromisoformat(value)
                except ValueError:
                    raise StockToolError(f"{flag_name(f)} {value!r} is not a date YYYY-MM-DD") from None
            elif callable(rule):
                rule(flag_name(f), value)
            elif value != f.default and not rule[1](value):
                raise StockToolError(f"{flag_name(f)} {value}: must be {rule[0]}")
            _check_number(flag_name(f), value)


def _check_number(flag: str, value) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise StockToolError(f"{flag} {value}: must be a finite number")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT_LIMIT:
        raise StockToolError(f"{flag} {value}: must be at most {INT_LIMIT:,} in size")


def build(cls, args, cuda: bool):
    """The config `cls` from parsed flags; a flag left unset takes the field's GPU or CPU default."""
    values = {}
    for f in fields(cls):
        hint = _base_type(_hints(cls)[f.name])
        if is_dataclass(hint):
            values[f.name] = build(hint, args, cuda)
            continue
        if not (f.metadata.get("help") or f.metadata.get("same_as")):
            continue
        value = getattr(args, dest(f))
        if isinstance(f.metadata.get("choices"), dict) and value is not None:
            value = f.metadata["choices"][value]
        if f.metadata.get("convert") and value is not None:
            value = f.metadata["convert"](value)
        if value is None and f.metadata["cpu"] is not NO_CPU:
            value = f.default if cuda else f.metadata["cpu"]
        elif value is None and f.default is not MISSING:
            value = f.default
        values[f.name] = value
    return cls(**values)


def unset_device_fields(cls, args) -> list[str]:
    """The fields of `cls` whose GPU/CPU default applies because their flag was not given."""
    return [f.name for f, _ in flag_fields(cls) if f.metadata["cpu"] is not NO_CPU and getattr(args, dest(f)) is None]


def parse_flag(parser, text: str, flag: str):
    """A flag's text through its parser; a ValueError becomes one error line naming the flag."""
    try:
        return parser(text)
    except ValueError as exc:
        raise StockToolError(f"{flag}: {exc}") from exc
