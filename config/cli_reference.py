"""docs/cli.md, every flag in full, generated from the settings groups' fields (their one default, help, rule and
CPU-demonstration default), so that it cannot drift from the code: `tests/test_cli_reference.py` fails when the
file is not what this module writes.

    python3 -m config.cli_reference --write docs/cli.md
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import MISSING
from pathlib import Path

from config import flags
from config.cli import COMMANDS, GROUP_CLASSES, GROUPS, PROG, Modes, Other, Secrets, _classes
from utils import atomic_write_text

HEAD = """# Every flag

Generated from the settings groups (`config/*_args.py`) by `python3 -m config.cli_reference --write docs/cli.md`;
a test fails when this page is not current. How the command line reads what you type (ranges, dates, lists,
refusals): [input.md](input.md).

`python3 main.py COMMAND --help` shows one command's flags on a screen. The spec's form, `python3 main.py
--train {0,1} [options]`, takes every flag of every command. A *default* written "GPU a, CPU demo b" is the
field's default on a CUDA machine and the one a CPU demonstration takes when the flag is not given.
"""


def _cell(value) -> str:
    text = " ".join(str(value).split()).replace("%%", "%").replace("|", "\\|").replace("<", "&lt;")
    return text if value not in (None, "") else ""


def _value(f, kind) -> str:
    meta = f.metadata
    if meta["switch"]:
        return "(switch)"
    listed = ", ".join(f"`{c}`" for c in meta["choices"] or ())
    if listed and len(listed) <= 60:
        return listed
    if listed:
        return "a name (listed in the help)"
    if kind is bool:
        return "`[1\\|0]`" if meta["bare"] else "`1\\|0`"
    if meta["check"] == "date":
        return "YYYY-MM-DD"
    return meta["metavar"] or {int: "integer", float: "number"}.get(
        kind, "path" if f.name.endswith(("_dir", "_file", "_csv")) else "text"
    )


def _default(f) -> str:
    meta = f.metadata
    if f.default is MISSING:
        return "required"
    if meta["auto"]:
        return "from the other flags (see its text)"
    gpu = "unset" if f.default is None else f"`{_text(f, flags.default_text(f))}`"
    if meta["cpu"] is not flags.NO_CPU:
        cpu = "unset" if meta["cpu"] is None else f"`{_text(f, flags.shown(f, meta['cpu']))}`"
        return f"GPU {gpu}, CPU demo {cpu}"
    return "—" if meta["switch"] else gpu


def _text(f, value) -> str:
    """A default as it is typed: 1/0 for a yes/no flag, text for a typed one."""
    if isinstance(value, bool) and not f.metadata["switch"]:
        return str(int(value))
    return str(value) if value != "" else "(empty)"


def _rule(f) -> str:
    check = f.metadata["check"]
    return "" if check is None or check == "date" else f" Must be {check[0]}."


def _commands_taking() -> dict[str, list[str]]:
    """flag → the commands that take it."""
    taken: dict[str, list[str]] = {}
    for name, command in COMMANDS.items():
        for cls, shown in _classes(command.groups) + [(Other, None)]:
            for f, _ in flags.flag_fields(cls):
                used = taken.setdefault(flags.flag_name(f), [])
                if (shown is None or f.name in shown) and name not in used:
                    used.append(name)
    return taken


def _rows(classes) -> dict[str, list[tuple]]:
    """group key → (field, flag type) of every flag of `classes`, each flag once, in their order."""
    rows: dict[str, list[tuple]] = {key: [] for key in GROUPS}
    seen = set()
    for cls in classes:
        for f, kind in flags.flag_fields(cls):
            if flags.flag_name(f) not in seen:
                seen.add(flags.flag_name(f))
                rows[f.metadata["group"]].append((f, kind))
    return rows


def _table(rows, taken) -> list[str]:
    lines = ["| flag | value | default | commands | what it does |", "| --- | --- | --- | --- | --- |"]
    for f, kind in rows:
        name = flags.flag_name(f)
        spelled = ", ".join(f"`{s}`" for s in (name, *f.metadata["aliases"]))
        used = ", ".join(taken.get(name, [])) or "spec form"
        text = _cell(f.metadata["help"])
        text = (text if text.endswith((".", "?", "!")) else text + ".") + _rule(f)
        lines.append(f"| {spelled} | {_value(f, kind)} | {_default(f)} | {used} | {text} |")
    return lines


def markdown() -> str:
    """The whole page."""
    lines = [HEAD, "## Commands", "", "| command | what it does |", "| --- | --- |"]
    lines += [f"| `{PROG} {name}` | {_cell(command.summary)} |" for name, command in COMMANDS.items()]
    taken = _commands_taking()
    for key, rows in _rows((Modes, *GROUP_CLASSES, Secrets, Other)).items():
        if rows:
            title = GROUPS[key]
            lines += ["", f"## {title[0].upper() + title[1:]}", ""] + _table(rows, taken)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="write docs/cli.md, every flag in full")
    parser.add_argument("--write", metavar="PATH", help="write the page there (atomically) instead of printing it")
    args = parser.parse_args(argv)
    if args.write:
        atomic_write_text(Path(args.write), markdown())
    else:
        sys.stdout.write(markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
