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
    args = ["--data-dir", str(work / "prices"), "--offline", "--company-list-file", str(work / "companies.json")]
    args += ["--output-dir", str(work / "out"), "--model-dir", str(work / "adapter"), *extra]
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


def test_a_garbage_adapter_config_is_one_line(work, capsys):
    adapter = work / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}", encoding="utf-8")
    (adapter / "stock_config.json").write_text("{not json", encoding="utf-8")
    code, err = run(work, ["--train", "0", "--end-date", "2026-04-30"], capsys)
    assert code == 2 and err.startswith(f"error: {adapter / 'stock_config.json'} is not readable JSON"), err
    (adapter / "stock_config.json").write_text('{"hello": 1}', encoding="utf-8")
    code, err = run(work, ["--train", "0", "--end-date", "2026-04-30"], capsys)
    assert code == 2 and "names no base_model: it was not written by this tool" in err


def test_random_bytes_in_a_news_file_stop_the_step_before_any_file_is_written(work, shared_data, capsys):
    (work / "c.json").write_text('[{"code": "2330"}, {"code": "2317"}]', encoding="utf-8")
    shutil.copy(shared_data / "prices" / "2317.csv", work / "prices")
    news = work / "out" / "news"  # a folder of price CSVs as --data-dir keeps the news store under --output-dir
    news.mkdir(parents=True)
    (news / "2330.json").write_bytes(bytes(range(256)) * 4)
    (news / "2317.json").write_text(
        '{"name_zh": "鴻海", "news_zh": [], "news_en": [], "code": "2317"}', encoding="utf-8"
    )
    before = snapshot(news)
    headlines = str(shared_data / "news" / "headlines_2024-01.csv")
    args = ["--train", "0", "--build-events", "1", "--data-dir", str(work / "prices"), "--offline"]
    args += ["--company-list-file", str(work / "c.json"), "--output-dir", str(work / "out"), "--year", "2024"]
    args += ["--month", "1", "--end-date", "2026-04-30", "--news-csv", headlines]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: news file {news / '2330.json'} is not valid UTF-8 JSON") and "Traceback" not in err
    assert snapshot(news) == before  # the CSV import did not merge into 2317.json before failing


def test_a_prompt_longer_than_the_models_context_is_refused_before_generating():
    import model
    from forecast import check_fits as _check_fits
    from utils import StockToolError

    class Words:  # a tokenizer stand-in: one token per word
        def apply_chat_template(self, prompt, tokenize=False, add_generation_prompt=True):
            return " ".join(m["content"] for m in prompt)

        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": text.split()}

    loaded = model.LoadedModel(None, Words(), False, {}, context=100)
    short = [{"role": "user", "content": "word " * 50}]
    _check_fits(loaded, [short], 40, past=5)
    with pytest.raises(StockToolError, match="--past 500: the prompt is 90 tokens"):
        _check_fits(loaded, [short, [{"role": "user", "content": "word " * 90}]], 40, past=500)
