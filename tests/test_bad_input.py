"""Bad input a user can type or a file can contain: one `error:` line on stderr, exit code 2, no traceback,
and every file as it was before. Each case is a reproduction from issue 11."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

import main as cli


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def work(shared_data, tmp_path):
    (tmp_path / "prices").mkdir()
    shutil.copy(shared_data / "prices" / "2330.csv", tmp_path / "prices")
    (tmp_path / "companies.json").write_text('[{"code": "2330"}]', encoding="utf-8")
    return tmp_path


def run(work: Path, extra: list[str], capsys) -> tuple[int, str]:
    before = snapshot(work)
    args = ["--data-dir", str(work / "prices"), "--offline", "--company-list-file", str(work / "companies.json"),
            "--output-dir", str(work / "out"), "--model-dir", str(work / "adapter"), *extra]  # fmt: skip
    code = cli.main(args)
    err = capsys.readouterr().err
    after = {k: v for k, v in snapshot(work).items() if not k.startswith("out/")}
    assert after == {k: v for k, v in before.items() if not k.startswith("out/")}, "input files changed"
    return code, err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--train", "1", "--end-date", "2026-13-45"], "--end-date '2026-13-45' is not a date"),
        (["--train", "0", "--evaluate", "1", "--test-end", "2026-02-30"], "--test-end '2026-02-30' is not a date"),
        (["--train", "1", "--rank", "0"], "--rank 0: must be at least 1"),
        (["--train", "1", "--rank", "-4"], "--rank -4: must be at least 1"),
        (["--train", "1", "--batch-size", "-1"], "--batch-size -1: must be at least 1"),
        (["--train", "1", "--batch-size", "0"], "--batch-size 0: must be at least 1"),
        (["--train", "1", "--learning-rate", "-1"], "--learning-rate -1.0: must be a positive number"),
        (["--train", "1", "--learning-rate", "0"], "--learning-rate 0.0: must be a positive number"),
        (["--train", "1", "--val-fraction", "1.5"], "--val-fraction 1.5: must be between 0 and 1"),
        (["--train", "1", "--max-steps", "-1"], "--max-steps -1: must be 0 (train --num-epochs) or more"),
        (["--train", "1", "--month", "13"], "--month 13: must be 1-12"),
        (["--train", "0", "--past", "0"], "--past 0: must be at least 1"),
        (["--train", "0", "--load_in_4bit", "1"], "--load_in_4bit / --load_in_8bit need a CUDA GPU"),
    ],
)
def test_bad_flags_are_one_line_and_change_nothing(work, extra, message, capsys):
    code, err = run(work, extra, capsys)
    assert code == 2 and err.startswith(f"error: {message}"), err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def insert(at: int, row: str):
    return lambda lines: lines[:at] + [row] + lines[at:]


def replace_in(at: int, old: str, new: str):
    return lambda lines: lines[:at] + [lines[at].replace(old, new)] + lines[at + 1 :]


def repeat_last_with_close(close: str):
    return lambda lines: lines + [lines[-1].replace(",2135,", f",{close},")]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (insert(5, "2025-XX-YY,1,1,1,1,1,1,0,1,x"), "line 6: date '2025-XX-YY' is not"),
        (insert(3, "this is garbage,,,"), "line 4: date 'this is garbage' is not"),
        (repeat_last_with_close("9999"), "the date 2026-04-30 appears twice"),
        (replace_in(2, "584,585,576,578", "584,570,576,578"), "line 3: an impossible candle"),
        (replace_in(2, ",578,", ",five,"), "line 3: close 'five' is not a number"),
    ],
)
def test_bad_price_rows_are_refused_with_file_and_line(work, edit, message, capsys):
    path = work / "prices" / "2330.csv"
    path.write_text("\n".join(edit(path.read_text(encoding="utf-8").splitlines())) + "\n", encoding="utf-8")
    code, err = run(work, ["--train", "1", "--end-date", "2026-04-30"], capsys)
    assert code == 2 and err.startswith(f"error: price file {path}"), err
    assert message in err and "Traceback" not in err
    assert not (work / "out" / "examples").exists()  # nothing reached the examples


def test_an_unwritable_output_dir_is_refused_before_any_work(work, capsys):
    blocker = work / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")
    code = cli.main(
        ["--train", "1", "--data-dir", str(work / "prices"), "--offline", "--output-dir", str(blocker / "out")]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --output-dir") and "not writable" in err
