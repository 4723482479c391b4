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
import typing
from dataclasses import MISSING, field, fields, is_dataclass

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
):
    """A config field that is a command-line flag.

    flag: the flag when it is not `--field-name`; aliases: its other spellings; cpu: the CPU demonstration's
    default (the field's default is the GPU's); check: (what it must be, test) applied before any work, or
    "date"; choices: a list, or {text: value} when the flag's text is not the field's value; switch: a flag
    without a value (store_true); bare: a 1/0 flag that alone means 1; auto: unset is None, for the caller
    to settle from other flags."""
    meta = {"help": help, "group": group, "flag": flag, "aliases": tuple(aliases), "cpu": cpu, "check": check}
    meta |= {"choices": choices, "switch": switch, "bare": bare, "auto": auto}
    return field(default=default, metadata=meta)


def shared(default, flag_field: str, *, cpu=NO_CPU, convert=None):
    """A field set by another field's flag (`flag_field`, as its dest), optionally converted."""
    return field(default=default, metadata={"same_as": flag_field, "cpu": cpu, "convert": convert})


AT_LEAST_1 = ("at least 1", lambda v: v >= 1)
AT_LEAST_0 = ("0 or more", lambda v: v >= 0)
POSITIVE = ("a positive number", lambda v: v > 0 and v == v and v != float("inf"))
SHARE = ("between 0 and 1 (exclusive)", lambda v: 0 < v < 1)


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
                if meta["bare"]:
                    kwargs |= {"nargs": "?", "const": True}
            if f.default is MISSING:
                kwargs |= {"required": True, "default": None}
            groups.get(meta["group"], parser).add_argument(flag_name(f), *meta["aliases"], **kwargs)


def check(parser_classes, args) -> None:
    """Refuse an out-of-range number or a malformed date before any work, naming the flag."""
    for cls in parser_classes:
        for f, _ in flag_fields(cls):
            rule, value = f.metadata["check"], getattr(args, dest(f))
            if rule is None or value is None:
                continue
            if rule == "date":
                try:
                    dt.date.fromisoformat(value)
                except ValueError:
                    raise StockToolError(f"{flag_name(f)} {value!r} is not a date YYYY-MM-DD") from None
            elif not rule[1](value):
                raise StockToolError(f"{flag_name(f)} {value}: must be {rule[0]}")


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
