"""docs/cli.md is generated from the settings groups and must be current; it names every flag of the command line."""

from pathlib import Path

from config import cli, cli_reference

PAGE = Path(__file__).resolve().parent.parent / "docs" / "cli.md"


def test_docs_cli_md_is_current():
    assert PAGE.read_text(encoding="utf-8") == cli_reference.markdown(), (
        "docs/cli.md is stale: run python3 -m config.cli_reference --write docs/cli.md"
    )


def test_every_flag_of_every_parser_is_on_the_page():
    page = cli_reference.markdown()
    parsers = [cli.spec_parser()] + [cli.command_parser(name) for name in cli.COMMANDS]
    flags = {s for p in parsers for a in p._actions for s in a.option_strings if s.startswith("--")} - {"--help"}
    missing = sorted(f for f in flags if f"`{f}`" not in page)
    assert not missing
    assert len(flags) > 90


def test_a_flag_row_says_its_rule_and_both_defaults():
    page = cli_reference.markdown()
    row = next(line for line in page.splitlines() if line.startswith("| `--max-steps`"))
    assert "GPU `60`, CPU demo `16`" in row and "Must be 0 (train --num-epochs) or more." in row
    assert "train, instruct" in row


def test_write_is_what_it_prints(tmp_path, capsys):
    assert cli_reference.main(["--write", str(tmp_path / "cli.md")]) == 0
    assert cli_reference.main([]) == 0
    assert (tmp_path / "cli.md").read_text(encoding="utf-8") == capsys.readouterr().out
