"""The house's shape: every module in its capability's layer, imports (lazy ones included) only from its own layer or
the layers below, no import cycles, only the LLM stack importing torch, only `main` importing the facade; small
modules and functions; the installed package holding exactly these modules."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# lowest first: a module may import from its own layer and the layers before it, never from a later one
LAYERS = [
    {"utils"},
    {"config"},
    {"market"},
    {"stock_api"},
    {"prompts"},
    {"dataset"},
    {"llm", "model"},
    {"forecasting"},
    {"evaluation"},
    {"instruct", "trading"},
    {"stock_predictor"},
    {"main"},
]
GPU_STACK = {"torch", "unsloth", "unsloth_zoo", "transformers", "peft", "trl", "bitsandbytes", "accelerate"}
TORCH_ALLOWED = {"llm", "model"}  # the LLM stack (and the LSTM baseline's network, in llm/lstm.py)


def modules() -> dict[str, Path]:
    """Every module of the project by dotted name: the design card's top-level files and the capability folders."""
    found = {p.stem: p for p in ROOT.glob("*.py")}
    for unit in set().union(*LAYERS):
        folder = ROOT / unit
        if folder.is_dir():
            found |= {f"{unit}.{p.stem}": p for p in folder.glob("*.py") if p.stem != "__init__"}
    return found


def imports(path: Path, names: set[str]) -> set[str]:
    """The project's modules that `path` imports anywhere in it (top level or inside functions), by dotted name
    (`from llm import generation` is `llm.generation`)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {name for name in found if name in names}


def third_party(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(path, set(found)) - {name} for name, path in found.items()}


def layer(name: str) -> int:
    unit = name.split(".")[0]
    return next(i for i, units in enumerate(LAYERS) if unit in units)


def upward(edges: dict[str, set[str]]) -> list[str]:
    """Every import from a module to one of a later layer, as 'a → b'."""
    return sorted(f"{a} → {b}" for a, targets in edges.items() for b in targets if layer(b) > layer(a))


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path, or None (depth-first search with colours)."""
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for dep in sorted(edges.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep) :] + [dep]
            if dep not in state and (found := visit(dep, path + [dep])):
                return found
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_the_checks_catch_a_reversed_import_and_a_cycle():
    literal = {"utils": set(), "config.flags": {"utils"}, "market.prices": {"config.flags"}}
    assert upward(literal) == [] and cycle(literal) is None
    reversed_ = literal | {"config.flags": {"utils", "market.prices"}}  # the settings reaching up into market data
    assert upward(reversed_) == ["config.flags → market.prices"]
    assert cycle(reversed_) == ["config.flags", "market.prices", "config.flags"]
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]


def test_every_module_sits_in_a_layer_and_imports_only_downward_without_cycles():
    edges = graph()
    assert {"main", "stock_predictor", "llm.generation", "evaluation.walk_forward", "config.flags"} <= set(edges)
    assert upward(edges) == []
    assert cycle(edges) is None, " → ".join(cycle(edges))


def test_only_the_llm_stack_imports_torch_and_only_main_imports_the_facade():
    found = modules()
    heavy = {name: sorted(third_party(path) & GPU_STACK) for name, path in found.items()}
    assert {n for n, libs in heavy.items() if libs and n.split(".")[0] not in TORCH_ALLOWED} == set()
    assert {name for name, deps in graph().items() if "stock_predictor" in deps} == {"main"}


def test_the_top_level_holds_the_design_cards_files_and_the_capability_folders():
    top = {p.stem for p in ROOT.glob("*.py")}
    assert top == {"main", "stock_predictor", "dataset", "model", "stock_api", "utils"}
    folders = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    assert folders == {"config", "market", "prompts", "llm", "forecasting", "evaluation", "instruct", "trading"} | {
        "benchmarks"  # the measuring scripts (`python -m benchmarks.NAME`), not part of the installed tool
    }
    names = [name.split(".")[-1] for name in modules()]
    assert len(names) == len(set(names)), sorted({n for n in names if names.count(n) > 1})


MAX_LINES, MAX_FUNCTION_LINES, MAX_PARAMETERS = 400, 50, 6


def code_files() -> list[Path]:
    """Every Python file of the tool and its benchmarks (the tests are not held to the size rules)."""
    return sorted(modules().values()) + sorted((ROOT / "benchmarks").glob("*.py"))


def size_problems(path: Path) -> list[str]:
    """Where `path` breaks the size rules: over MAX_LINES lines, a function over MAX_FUNCTION_LINES lines or with
    more than MAX_PARAMETERS parameters (self and cls not counted), a `# fmt: skip` or a `sys.path` edit."""
    text = path.read_text(encoding="utf-8")
    lines, name = text.splitlines(), path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    found = [f"{name}: {len(lines)} lines"] if len(lines) > MAX_LINES else []
    found += [f"{name}:{i + 1}: fmt: skip" for i, line in enumerate(lines) if "fmt: skip" in line]
    found += [f"{name}:{i + 1}: sys.path edit" for i, line in enumerate(lines) if "sys.path.insert" in line]
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                found.append(f"{name}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines")
            a = node.args
            named = [*a.posonlyargs, *a.args, *a.kwonlyargs]
            count = len(named) + bool(a.vararg) + bool(a.kwarg) - bool(named and named[0].arg in ("self", "cls"))
            if count > MAX_PARAMETERS:
                found.append(f"{name}:{node.lineno} {node.name}: {count} parameters")
    return found


def test_size_rules_catch_a_long_function_many_parameters_and_fmt_skip(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    bad = tmp_path / "bad.py"
    bad.write_text(f"def long():\n{body}\n\n\ndef wide(a, b, c, d, e, f, g):\n    return a  # fmt: skip\n")
    assert size_problems(bad) == [
        "bad.py:55: fmt: skip",
        f"bad.py:1 long: {MAX_FUNCTION_LINES + 1} lines",
        "bad.py:54 wide: 7 parameters",
    ]
    fine = tmp_path / "fine.py"
    fine.write_text("class A:\n    def method(self, a, b, c, d, e, f):\n        return a\n")
    assert size_problems(fine) == []


def test_every_module_and_function_is_small():
    assert [problem for path in code_files() for problem in size_problems(path)] == []


def test_the_installed_package_holds_exactly_the_tools_modules():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    setup = project["tool"]["setuptools"]
    assert set(setup["py-modules"]) == {p.stem for p in ROOT.glob("*.py")}
    assert set(setup["packages"]) == set().union(*LAYERS) - {p.stem for p in ROOT.glob("*.py")}
    module, _, function = project["project"]["scripts"]["twstock-llm"].partition(":")
    assert (module, function) == ("main", "main")
