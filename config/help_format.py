"""How the command line reads: argparse's refusals in one line, and a help of one line per flag."""

from __future__ import annotations

import argparse

from config import flags


class Parser(argparse.ArgumentParser):
    """argparse's refusals as one line, like every other refusal of the tool (exit code 2); a help without the
    blank lines between its sections, so that a command's fits a screen."""

    def error(self, message):
        self.exit(2, f"error: {message} ({self.prog} --help lists the flags)\n")

    def format_help(self):
        head, _, sections = super().format_help().partition("\n\n")
        description, _, rest = sections.partition("\n\n")
        return head + "\n" + description + "\n" + rest.replace("\n\n", "\n")


class CompactHelp(argparse.HelpFormatter):
    """One line per flag: its main spelling, a short value name, its help cut to the line and its default."""

    def __init__(self, prog):
        super().__init__(prog, max_help_position=36, width=110)

    def _format_action_invocation(self, action):
        if not action.option_strings:
            return super()._format_action_invocation(action)
        if action.nargs == 0:
            return action.option_strings[0]
        return f"{action.option_strings[0]} {_value_name(action)}"

    def _get_help_string(self, action):
        text = " ".join((action.help or "").split())
        shown = action.default not in (None, False, argparse.SUPPRESS) and "default" not in text.lower()
        return text + (" [" + str(action.default).replace("%", "%%") + "]" if shown else "")

    def _split_lines(self, text, width):
        if len(text) <= width:
            return [text]
        default = text[text.rfind(" [") :] if text.endswith("]") and " [" in text else ""
        return [text[: width - len(default) - 1].rstrip() + "…" + default]


def _value_name(action) -> str:
    if action.metavar:
        return action.metavar
    if action.choices is not None:
        listed = "|".join(map(str, action.choices))
        return listed if len(listed) <= 24 else "NAME"
    if action.type is flags.flag01:
        return "1|0" if action.nargs != "?" else "[1|0]"
    return {int: "N", float: "X"}.get(
        action.type, "PATH" if action.dest.endswith(("_dir", "_file", "_csv")) else "TEXT"
    )
