"""A refusal and the help come before the heavy imports (issue "What a user sees"): `python3 main.py` with a bad
flag, a bad path or --help never imports torch, transformers or the rest of the training stack. Asserted on the
imports (`-X importtime`), not on timing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "unsloth", "trl", "peft", "datasets", "accelerate", "matplotlib", "mplfinance")


def imported(args: list[str], cwd: Path) -> tuple[int, str, set[str]]:
    """(exit code, stderr less the import lines, top-level modules imported) of `python3 -X importtime main.py`."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", str(ROOT / "main.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = done.stderr.splitlines()
    modules = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in lines if line.startswith("import time:")}
    rest = "\n".join(line for line in lines if not line.startswith("import time:"))
    return done.returncode, rest, modules


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--help"], None),
        (["--train", "1", "--month", "13"], "error: --month 13: must be 1-12"),
        (["--train", "1", "--optim", "nonsense"], "error: argument --optim: invalid choice: 'nonsense'"),
        (["--train", "1", "--rank", "99999999999999999999"], "error: --rank 99999999999999999999: must be"),
        (["--train", "1", "--weight-decay", "inf"], "error: --weight-decay inf: must be"),
        (["--train", "1", "--output-dir", ""], "error: --output-dir '': give a path"),
        (["--train", "1", "--model-name", "fake.gguf"], "error: model file fake.gguf is not a GGUF file"),
        (["--train", "1", "--news-csv", "none.csv"], "error: --news-csv none.csv does not exist"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else "",
)
def test_refusals_and_the_help_import_nothing_heavy(args, message, tmp_path):
    (tmp_path / "fake.gguf").write_bytes(b"PK\x03\x04 not a model")
    code, err, modules = imported(args, tmp_path)
    assert code == (0 if message is None else 2), err
    if message is not None:
        assert err.startswith(message) and len(err.strip().splitlines()) == 1, err
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))
