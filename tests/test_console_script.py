"""The installed command (`pip install -e .`, as setup.sh does) is the same program as `python3 main.py`."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("argv", [["--help"], ["forecast", "--help"], ["train", "--rank", "0"]])
def test_twstock_llm_says_what_main_py_says(argv, tmp_path):
    script = shutil.which("twstock-llm")
    if script is None:
        pytest.skip("twstock-llm is not installed here (setup.sh installs it with pip install -e .)")
    installed = subprocess.run([script, *argv], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    direct = subprocess.run([sys.executable, "main.py", *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert (installed.returncode, installed.stdout, installed.stderr) == (
        direct.returncode,
        direct.stdout,
        direct.stderr,
    )
    assert installed.returncode in (0, 2) and (installed.stdout or installed.stderr)
