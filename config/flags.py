"""Settings fields that are command-line flags, as TRL's `HfArgumentParser` makes them from dataclasses.

A config field becomes a flag when its metadata has help text (`option`); the flag, its group, its rule and its
CPU-demonstration default sit beside the field's one default. A field that another flag sets (`shared`: the seed
reaches the LoRA, the sampler and the LSTM from `--random-state`) has no flag of its own.

Every config calls `settle(self)` in its `__post_init__`: text given for a typed field (`--windows 1:1,5:5`) is
parsed once into its type, and every value is checked against its rule, so a config built anywhere (the command
line, a test, a saved adapter's settings) is valid or refused with the flag's name. Path rules (a file that must
exist) are the command line's alone: a saved adapter's settings name paths of the machine it was trained on.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import math
import typing
from dataclasses import MISSING, field, fields, is_dataclass

from utils import StockToolError

NO_CPU = object()  # metadata marker: the field's default is the same on a CPU
INT_LIMIT = 2**31 - 1  # argparse's int takes 99999999999999999999, which overflows a C long in torch and numpy


# What `option` takes besides the default, the help and the group, with each one's value when not given.
OPTION_META = {
    "flag": None,
    "aliases": (),
    "cpu": NO_CPU,
    "check": None,
    "path": None,
    "choices": None,
    "switch": False,
    "bare": False,
    "auto": False,
    "metavar": None,
    "parse": None,
    "text": None,
    "more": False,
}


def option(default=MISSING, help="", *, group, **meta):
    """A config field that is a command-line flag; `meta` holds any of OPTION_META:

    flag: the flag when it is not `--field-name`; aliases: its other spellings; cpu: the CPU demonstration's
    default (the field's default is the GPU's); check: (what it must be, test) or "date", checked by `settle`;
    path: a function (flag, value) checking a path on disk, run by the command line only; choices: a list, or
    {text: value} when the flag's text is not the field's value; switch: a flag without a value (store_true);
    bare: a 1/0 flag that alone means 1; auto: unset is None, for the caller to settle from other flags;
    metavar: what the usage shows instead of a long list of choices; parse: text → the field's type (applied
    by `settle` to a str); text: the field's value → the flag's text (saved settings, the help's default); more: a
    flag `--help` only names, under its group (its full help is in docs/cli.md)."""
    unknown = sorted(set(meta) - set(OPTION_META))
    if unknown:
        raise TypeError(f"option() got unknown settings {unknown}")
    meta = OPTION_META | meta | {"help": help, "group": group}
    return field(default=default, metadata=meta | {"aliases": tuple(meta["aliases"])})


def shared(default, flag_field: str, *, cpu=NO_CPU, convert=None):
    """A field set by another field's flag (`flag_field`, as its dest), optionally converted."""
    return field(default=default, metadata={"same_as": flag_field, "cpu": cpu, "convert": convert})


AT_LEAST_1 = ("at least 1", lambda v: v >= 1)
AT_LEAST_0 = ("0 or more", lambda v: v >= 0)
SHARE = ("between 0 and 1 (exclusive)", lambda v: 0 < v < 1)


def between(low, high, what: str | None = None) -> tuple:
    """A range check from `low` to `high`, both included."""
    return (what or f"from {low} to {high}", lambda v: low <= v <= high)


# --------------------------------------------------------------------------- checks in __post_init__


def settle(config) -> None:
    """A config's text values parsed into their types, then every value checked against its field's rule and
    choices (a value equal to its field's default passes unasked: defaults are valid, and some checks import
    a library). Raises StockToolError naming the flag."""
    for f in fields(config):
        meta, value = f.metadata, getattr(config, f.name)
        if meta.get("parse") and isinstance(value, str):
            value = parse_flag(meta["parse"], value, flag_name(f))
            object.__setattr__(config, f.name, value)
        if value is None or "help" not in meta:
            continue
        if value != f.default:
            choices = meta.get("choices")
            allowed = list(choices.values()) if isinstance(choices, dict) else choices
            if allowed is not None and value not in allowed:
                raise StockToolError(f"{flag_name(f)} {shown(f, value)!r}: choose {', '.join(map(str, choices))}")
            _check_rule(f, value)
        _check_number(flag_name(f), value)


def _check_rule(f, value) -> None:
    rule = f.metadata.get("check")
    if rule == "date":
        try:
            dt.date.fromisoformat(value)
        except (TypeError, ValueError):
            raise StockToolError(f"{flag_name(f)} {value!r} is not a date YYYY-MM-DD") from None
    elif rule is not None and not rule[1](value):
        raise StockToolError(f"{flag_name(f)} {shown(f, value)}: must be {rule[0]}")


def _check_number(flag: str, value) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise StockToolError(f"{flag} {value}: must be a finite number")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT_LIMIT:
        raise StockToolError(f"{flag} {value}: must be at most {INT_LIMIT:,} in size")


def parse_flag(parser, text: str, flag: str):
    """A flag's text through its parser; a ValueError becomes one error line naming the flag."""
    try:
        return parser(text)
    except ValueError as exc:
        raise StockToolError(f"{flag}: {exc}") from exc


def as_text(config) -> dict:
    """A config as plain values, its typed fields written as their flags' text (what is saved and reported)."""
    out = {}
    for f in fields(config):
        value = getattr(config, f.name)
        if is_dataclass(value):
            value = as_text(value)
        elif f.metadata.get("text") and value is not None:
            value = f.metadata["text"](value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


# --------------------------------------------------------------------------- path checks (the command line's)


def _given(flag: str, value: str) -> None:
    if not value.strip():
        raise StockToolError(f"{flag} {value!r}: give a path (an empty one names nothing)")


def existing_file(flag: str, value: str) -> None:
    """A path flag naming a file to read: given, there, and not a folder."""
    from pathlib import Path

    _given(flag, value)
    path = Path(value)
    if path.is_dir():
        raise StockToolError(f"{flag} {value} is a folder, not a file")
    if not path.is_file():
        raise StockToolError(f"{flag} {value} does not exist")


def folder(flag: str, value: str) -> None:
    """A path flag naming a folder to use or create: given, and not a file."""
    from pathlib import Path

    _given(flag, value)
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise StockToolError(f"{flag} {value} is a file, not a folder")


def check_paths(classes, args) -> None:
    """The path rules of every flag given in `args` (argparse's namespace), before any work."""
    for cls in classes:
        for f, _ in flag_fields(cls):
            rule, value = f.metadata.get("path"), getattr(args, dest(f), None)
            if rule is not None and value is not None:
                rule(flag_name(f), value)


# --------------------------------------------------------------------------- flags from fields


def flag01(text: str) -> bool:
    if text not in ("0", "1"):
        raise argparse.ArgumentTypeError("use 1 (on) or 0 (off)")
    return text == "1"


@functools.cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _base_type(hint):
    """int for `int | None`, str for a typed field whose flag is text (`tuple[WindowType, ...]`), and so on."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if args and typing.get_origin(hint) is not tuple else hint
    return str if typing.get_origin(base) is tuple or base is tuple else base


def flag_fields(cls):
    """(field, its flag's type) for every field of `cls` that is a flag, nested configs included, in order."""
    for f in fields(cls):
        hint = _base_type(_hints(cls)[f.name])
        if is_dataclass(hint):
            yield from flag_fields(hint)
        elif f.metadata.get("help"):
            yield f, (str if f.metadata.get("parse") else hint)


def flag_name(f) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def dest(f) -> str:
    return f.metadata.get("same_as") or flag_name(f).lstrip("-").replace("-", "_")


def default_text(f):
    """The field's default as its flag would be written."""
    value = f.default
    if f.metadata.get("text") and value not in (None, MISSING):
        return f.metadata["text"](value)
    return shown(f, value)


def _help(f) -> str:
    meta, text = f.metadata, f.metadata["help"]
    if meta["cpu"] is not NO_CPU:
        return f"{text} (default: GPU {default_text(f)}, CPU demo {shown(f, meta['cpu'])})"
    return text


def shown(f, value):
    """A value as its flag's choice is written."""
    choices = f.metadata.get("choices")
    if isinstance(choices, dict):
        return next((text for text, v in choices.items() if v == value), value)
    return value


def add_arguments(parser: argparse.ArgumentParser, groups: dict, classes, skip=frozenset()) -> None:
    """Every flag of `classes` but the fields named in `skip`, each in its group (`groups`: group key → argparse
    group, or the parser). A flag already in the parser (one that two configs share, --random-state) is not added
    again."""
    seen = {s for action in parser._actions for s in action.option_strings}
    for cls in classes:
        for f, kind in flag_fields(cls):
            if flag_name(f) in seen or f.name in skip:
                continue
            seen.add(flag_name(f))
            meta = f.metadata
            kwargs = {"help": _help(f), "dest": dest(f)}
            device = meta["cpu"] is not NO_CPU or meta["auto"]
            if isinstance(meta["choices"], dict):
                kwargs |= {"choices": list(meta["choices"]), "default": None if device else shown(f, f.default)}
            elif meta["switch"]:
                kwargs |= {"action": "store_true"}
            else:
                kind = flag01 if kind is bool else kind
                kwargs |= {"type": kind, "default": None if device else default_text(f), "choices": meta["choices"]}
                if meta.get("metavar"):
                    kwargs |= {"metavar": meta["metavar"]}
                if meta["bare"]:
                    kwargs |= {"nargs": "?", "const": True}
            if f.default is MISSING:
                kwargs |= {"required": True, "default": None}
            group = groups.get(meta["group"], parser)
            if meta.get("more"):  # named under its group's title, not listed
                kwargs["help"] = argparse.SUPPRESS
                group.description = (group.description or "also:") + " " + flag_name(f)
            group.add_argument(flag_name(f), *meta["aliases"], **kwargs)


def build(cls, args, cuda: bool):
    """The config `cls` from parsed flags; a flag left unset (or absent from this command) takes the field's GPU
    or CPU default."""
    values = {}
    for f in fields(cls):
        hint = _base_type(_hints(cls)[f.name])
        if is_dataclass(hint):
            values[f.name] = build(hint, args, cuda)
            continue
        if not (f.metadata.get("help") or f.metadata.get("same_as")):
            continue
        value = getattr(args, dest(f), None)
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
    return [
        f.name for f, _ in flag_fields(cls) if f.metadata["cpu"] is not NO_CPU and getattr(args, dest(f), None) is None
    ]
