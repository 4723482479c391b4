"""The documentation stays true to the tree: a user's README of at most 300 lines whose test command is the one CI
runs; every file path, module path and page link in the README and docs/ names something that exists; no issue
numbers anywhere in the project (say what was measured instead)."""

from __future__ import annotations

import importlib
import importlib.util
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FILE_TYPES = {"json", "jsonl", "csv", "md", "png", "html", "py", "txt", "gguf", "sqlite", "safetensors"}
ISSUE = re.compile(r"(?i)\bissues?[ -]?#?\d+\b")


def missing_paths(page: Path) -> list[str]:
    """The backticked `*.py` paths (globs allowed) and the relative links of `page` that name nothing."""
    text = page.read_text(encoding="utf-8")
    found = [m.group(1) for m in re.finditer(r"`([\w./*\-]+\.py)\b", text) if not list(ROOT.glob(m.group(1)))]
    links = (m.group(1) for m in re.finditer(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text))
    found += [link for link in links if not link.startswith(("http:", "https:")) and not (page.parent / link).exists()]
    return found


def missing_modules(page: Path) -> list[str]:
    """Backticked dotted names that start with one of the project's folders (`forecasting.chart.plot_forecast`)
    and do not resolve to a module and an attribute."""
    units = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()} | {p.stem for p in ROOT.glob("*.py")}
    found = []
    for name in re.findall(r"`(?:python3 -m )?([a-z_]\w*(?:\.[A-Za-z_]\w*)+)", page.read_text(encoding="utf-8")):
        if name.split(".")[0] not in units or name.rsplit(".", 1)[1] in FILE_TYPES:  # `config.json` is a file
            continue
        if not resolves(name):
            found.append(name)
    return found


def resolves(name: str) -> bool:
    """A dotted name is a module of the project, or an attribute of one."""
    try:
        if importlib.util.find_spec(name) is not None:
            return True
    except (ImportError, ValueError):
        pass
    module, _, attribute = name.rpartition(".")
    try:
        return hasattr(importlib.import_module(module), attribute)
    except Exception:  # a module that does not import is a name that does not resolve
        return False


def test_the_checks_find_a_dead_path_a_dead_link_and_a_wrong_module(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "`llm/generation.py` `llm/nothing.py` [a](nowhere.md) [b](https://x.org/y.md) "
        "`forecasting.chart.plot_forecast` `forecasting.chart.no_such` `forecasting.nothing.x` `utils.no_such` "
        "`llm.generation` `python3 -m benchmarks.generate_speed` `python3 -m benchmarks.no_such` `config.json`"
    )
    assert missing_paths(page) == ["llm/nothing.py", "nowhere.md"]
    assert missing_modules(page) == [
        "forecasting.chart.no_such",
        "forecasting.nothing.x",
        "utils.no_such",
        "benchmarks.no_such",
    ]
    assert ISSUE.search("as " + "issue" + " 10 asked") and not ISSUE.search("the issues of 2025")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_path_link_and_module_named_exists(page):
    assert missing_paths(page) == []
    assert missing_modules(page) == []


def test_no_issue_numbers_anywhere_in_the_project():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout: the tracked files cannot be listed")
    hits = []
    for name in tracked:
        path = ROOT / name
        if path.suffix in {".py", ".md", ".sh", ".toml", ".txt", ".cfg"} or name == ".ci/run":
            text = path.read_text(encoding="utf-8", errors="replace")
            hits += [f"{name}: {m.group(0)}" for m in ISSUE.finditer(text)]
    assert hits == []


def test_the_readme_is_short_and_its_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 300
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert ci[-1] == "python3 -m pytest -q"
    assert re.search(r"^bash setup.sh && python3 -m pytest -q +# the tests$", readme, re.M)
