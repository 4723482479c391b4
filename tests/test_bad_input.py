"""Bad input a user can type or a file can contain: one `error:` line on stderr, exit code 2, no traceback,
and every file as it was before."""

from __future__ import annotations

import codecs
import hashlib
import json
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
    try:
        code = cli.main(args)
    except SystemExit as exc:  # argparse's own refusals (a choice, a number that is no number)
        code = exc.code
    err = capsys.readouterr().err
    after = {k: v for k, v in snapshot(work).items() if not k.startswith("out/")}
    assert after == {k: v for k, v in before.items() if not k.startswith("out/")}, "input files changed"
    return code, err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--train", "1", "--end-date", "2026-13-45"], "--end-date '2026-13-45' is not a date"),
        (["--train", "0", "--evaluate", "1", "--test-end", "2026-02-30"], "--test-end '2026-02-30' is not a date"),
        (["--train", "1", "--rank", "0"], "--rank 0: must be from 1 to 4096"),
        (["--train", "1", "--rank", "-4"], "--rank -4: must be from 1 to 4096"),
        (["--train", "1", "--batch-size", "-1"], "--batch-size -1: must be at least 1"),
        (["--train", "1", "--batch-size", "0"], "--batch-size 0: must be at least 1"),
        (["--train", "1", "--learning-rate", "-1"], "--learning-rate -1.0: must be more than 0, at most 1"),
        (["--train", "1", "--learning-rate", "0"], "--learning-rate 0.0: must be more than 0, at most 1"),
        (["--train", "1", "--val-fraction", "1.5"], "--val-fraction 1.5: must be between 0 and 1"),
        (["--train", "1", "--max-steps", "-1"], "--max-steps -1: must be 0 (train --num-epochs) or more"),
        (["--train", "1", "--month", "13"], "--month 13: must be 1-12"),
        (["--train", "0", "--past", "0"], "--past 0: must be from 1 to 5000"),
        (["--train", "0", "--load_in_4bit", "1"], "--load_in_4bit / --load_in_8bit need a CUDA GPU"),
        # issue "What a user sees": numbers out of any sane range, and what transformers refused late
        (["--train", "1", "--year", "-1"], "--year -1: must be a year from 1962"),
        (["--train", "1", "--year", "99999999999999999999"], "--year 99999999999999999999: must be a year from 1962"),
        (["--train", "1", "--seed", "-1"], "--random-state -1: must be from 0 to 4294967295"),
        (["--train", "1", "--random-state", "4294967296"], "--random-state 4294967296: must be from 0 to 4294967295"),
        (["--train", "1", "--rank", "99999999999999999999"], "--rank 99999999999999999999: must be from 1 to 4096"),
        (["--train", "1", "--lora-alpha", "99999999999999999999"], "--lora-alpha 99999999999999999999: must be"),
        (["--train", "1", "--batch-size", "99999999999999999999"], "--batch-size 99999999999999999999: must be at"),
        (["--train", "1", "--max-seq-length", "99999999999999999999"], "--max-seq-length 99999999999999999999: "),
        (["--train", "0", "--future", "99999999999999999999"], "--future 99999999999999999999: must be from 1 to"),
        (["--train", "0", "--past", "2147483647"], "--past 2147483647: must be from 1 to 5000"),
        (["--train", "1", "--news-days", "2147483647"], "--news-days 2147483647: must be from 1 to 3650"),
        (["--train", "1", "--rank", "abc"], "argument --rank: invalid int value: 'abc'"),
        (["--train", "1", "--optim", "nonsense"], "argument --optim: invalid choice: 'nonsense'"),
        (["--train", "1", "--lr-scheduler-type", "nonsense"], "argument --lr-scheduler-type: invalid choice: 'nons"),
        (["--train", "1", "--weight-decay", "inf"], "--weight-decay inf: must be from 0 to 1"),
        (["--train", "1", "--weight-decay", "nan"], "--weight-decay nan: must be from 0 to 1"),
        (["--train", "1", "--learning-rate", "1e308"], "--learning-rate 1e+308: must be more than 0, at most 1"),
        (["--train", "1", "--learning-rate", "nan"], "--learning-rate nan: must be more than 0, at most 1"),
        (["--train", "1", "--num-epochs", "inf"], "--num-epochs inf: must be more than 0, at most 1000"),
        (["--train", "1", "--lora-dropout", "nan"], "--lora-dropout nan: must be from 0 up to 1"),
        (["--train", "0", "--temperature", "inf"], "--temperature inf: must be more than 0, at most 10"),
        (["--train", "0", "--samples", "99999999999999999999"], "--samples 99999999999999999999: must be from 1 to"),
        (["--train", "0", "--trade", "1", "--trade-threshold", "inf"], "--trade-threshold inf: must be from 0 up to"),
        (["--train", "0", "--evaluate", "1", "--brokerage=-inf"], "--brokerage -inf: must be from 0 up to 1"),
        (["--train", "0", "--execute"], "--execute only applies to --trade 1"),
        (["--train", "1", "--end-date", "2026-02-27", "--evaluate", "1"], "--evaluate 1 after training scores the d"),
        (
            ["--train", "1", "--end-date", "2026-02-27", "--evaluate", "1", "--test-end", "2026-02-27"],
            "--evaluate 1 after training scores the days after the training data (to 2026-02-27); with --test-end 2",
        ),
        # paths: empty, missing, a folder where a file belongs and the other way round, a file that is no GGUF
        (["--train", "1", "--output-dir", ""], "--output-dir '': give a path"),
        (["--train", "1", "--output-dir", "{work}/companies.json"], "--output-dir {work}/companies.json is a file,"),
        (["--train", "1", "--data-dir", ""], "--data-dir '': give a path"),
        (["--train", "0", "--model-dir", "{work}/companies.json"], "--model-dir {work}/companies.json is a file, no"),
        (["--train", "1", "--company-list-file", ""], "--company-list-file '': give a path"),
        (["--train", "1", "--company-list-file", "{work}/prices"], "--company-list-file {work}/prices is a folder"),
        (["--train", "1", "--company-list-file", "{work}/none.json"], "--company-list-file {work}/none.json does not"),
        (["--train", "1", "--news-csv", "{work}/none.csv"], "--news-csv {work}/none.csv does not exist"),
        (["--train", "1", "--news-csv", "{work}"], "--news-csv {work} is a folder, not a file"),
        (["--train", "1", "--market-csv", "{work}/prices"], "--market-csv {work}/prices is a folder, not a file"),
        (["--train", "1", "--model-name", "{work}/fake.gguf"], "model file {work}/fake.gguf is not a GGUF file"),
        (["--train", "1", "--model-name", "{work}/none.gguf"], "model file {work}/none.gguf does not exist"),
        (["--train", "1", "--model-name", "{work}/prices"], "model folder {work}/prices has no config.json"),
        (["--train", "1", "--model-name", "{work}/companies.json"], "model {work}/companies.json is a file but not"),
        (["--train", "1", "--model-name", "./no/such/model"], "model folder ./no/such/model does not exist"),
        (["--train", "1", "--model-name", ""], "--model-name '': give a Hub id"),
        (
            ["--train", "1", "--task", "instruct", "--dataset-file", "{work}/a.jsonl,{work}/b.jsonl:0.5"],
            "--dataset-file {work}/b.jsonl does not exist",
        ),
        (
            ["--train", "0", "--task", "instruct", "--eval-file", "{work}/prices"],
            "--eval-file {work}/prices is a folder",
        ),
        (["--train", "0", "--task", "instruct", "--compare", "base,{work}/none"], "--compare: {work}/none is not an"),
        (["--train", "0", "--export", "merged", "--export-dir", "{work}/companies.json"], "--export-dir {work}/compa"),
        (["--train", "0", "--export", "merged", "--export-dir", "{work}/prices"], "--export-dir {work}/prices exists"),
    ],
)
def test_bad_flags_are_one_line_and_change_nothing(work, extra, message, capsys):
    (work / "fake.gguf").write_text("not a model", encoding="utf-8")
    (work / "a.jsonl").write_text('{"instruction": "q", "output": "a"}\n', encoding="utf-8")
    code, err = run(work, [arg.format(work=work) for arg in extra], capsys)
    assert code == 2 and err.startswith(f"error: {message.format(work=work)}"), err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (work / "out" / "examples").exists()  # refused before any data work


def _headlines(encode) -> bytes:
    return encode("code,date,title\n2330,2024-01-02,台積電法說會將恢復實體舉辦\n2330,2024-01-03,外資賣超台積電\n")


@pytest.mark.parametrize(
    "encode",
    [
        lambda text: text.encode("big5"),  # what Excel in Taiwan saves
        lambda text: text.encode("cp950"),
        lambda text: text.encode("utf-16"),  # with its BOM
        lambda text: codecs.BOM_UTF16_BE + text.encode("utf-16-be"),
        lambda text: text.encode("utf-8-sig"),
        lambda text: text.replace("\n", "\r\n").encode("utf-8"),
    ],
    ids=["big5", "cp950", "utf-16", "utf-16-be", "utf-8-bom", "utf-8-crlf"],
)
def test_a_news_csv_in_big5_or_utf16_is_read_as_written(work, encode, capsys):
    news = work / "news.csv"
    news.write_bytes(_headlines(encode))
    args = ["--train", "0", "--build-events", "1", "--year", "2024", "--month", "1", "--end-date", "2026-04-30"]
    code, err = run(work, [*args, "--news-csv", str(news)], capsys)
    assert code == 0 and "Traceback" not in err, err
    stored = json.loads((work / "out" / "news" / "2330.json").read_text(encoding="utf-8"))
    assert sorted(a["title"] for a in stored["news_zh"]) == ["台積電法說會將恢復實體舉辦", "外資賣超台積電"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            b"code,date,title\n2330,2024-01-02,\x80\xff\x80\n",
            "line 2: not readable as text (tried utf-8, cp950, big5hkscs)",
        ),
        ("code,date,title\n".encode("utf-16-le"), "line 1: a NUL character: a binary file, or UTF-16 without a BOM?"),
        (codecs.BOM_UTF16_LE + b"\x00\xd8", "line 1: not readable as text (tried utf-16)"),
    ],
    ids=["no-encoding", "utf-16-without-bom", "broken-utf-16"],
)
def test_a_text_file_no_encoding_reads_is_refused_with_its_line(work, data, message, capsys):
    news = work / "news.csv"
    news.write_bytes(data)
    args = ["--train", "0", "--build-events", "1", "--year", "2024", "--month", "1", "--end-date", "2026-04-30"]
    code, err = run(work, [*args, "--news-csv", str(news)], capsys)
    assert code == 2 and err.startswith(f"error: news CSV {news} {message}"), err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("encoding", ["big5", "utf-16", "utf-8-sig"])
def test_company_lists_and_instruction_files_are_read_in_the_same_encodings(tmp_path, encoding):
    from instruct import instruction_data
    from market import company_list, daily_reports

    names = tmp_path / "companies.json"
    names.write_bytes('[{"name_zh": "台積電"}, {"name_zh": "聯發科"}]'.encode(encoding))
    assert [c.code for c in company_list.load_company_list(names)] == ["2330", "2454"]
    rows = tmp_path / "rows.jsonl"
    rows.write_bytes('{"instruction": "台積電的代號？", "output": "2330"}\n'.encode(encoding))
    assert instruction_data.read_rows(rows)[0][0].instruction == "台積電的代號？"
    market = tmp_path / "market.csv"
    market.write_bytes(
        "code,name,date,open,high,low,close,capacity\n2330,台積電,2026-04-30,1,2,1,2,9\n".encode(encoding)
    )
    assert daily_reports.read_market_csv(market)["name"].tolist() == ["台積電"]


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
    from forecasting.latest import check_fits as _check_fits
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
