"""Any market's CSV: price files in the common Date,Open,High,Low,Close,Volume layout are read into the same
canonical frame as the twstock layout, used as given (never fetched), and forecast and evaluated alike."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import main as cli
import model
from config import data_args
from config.data_args import DataConfig, ExamplesConfig
from conftest import WordTokenizer, argv, candles
from llm import generation
from market import company_list, exchanges, price_files
from market.company_list import Company
from market.price_files import PriceCache
from market.workspace import Workspace
from prompts import prompt_format
from utils import StockToolError

OHLCV = data_args.parse_fields("ohlcv")
COLUMNS = ["Open", "High", "Low", "Close", "Volume"]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def common_text(frame: pd.DataFrame, header=("Date", "Open", "High", "Low", "Close", "Adj Close", "Volume")) -> str:
    """A canonical frame in the common layout (Adj Close made different, to show it is not used)."""
    rows = [",".join(header)]
    for day, r in frame.iterrows():
        values = {
            "date": f"{day:%Y-%m-%d}",
            "open": r.Open,
            "high": r.High,
            "low": r.Low,
            "close": r.Close,
            "adj close": round(r.Close * 0.9, 4),
            "volume": int(r.Volume),
        }
        rows.append(",".join(str(values[re.sub(r"[\s_]+", " ", h.strip().lower())]) for h in header))
    return "\n".join(rows) + "\n"


# --------------------------------------------------------------------------- literal files

LITERAL = candles([100.0, 101.5, 99.0, 102.0], start="2026-03-02", volume=12345.0)


@pytest.mark.parametrize(
    "header",
    [
        ("Date", "Open", "High", "Low", "Close", "Volume"),
        ("date", "open", "high", "low", "close", "volume"),
        ("Date", "Open", "High", "Low", "Close", "Adj Close", "Volume"),
        (" DATE ", "OPEN", "High", "low", "Close", "adj_close", "VOLUME"),
        ("Volume", "Close", "Date", "Adj_Close", "Low", "High", "Open"),  # any order
    ],
)
def test_common_layout_headers_match_case_insensitively(tmp_path, header):
    path = write(tmp_path / "X.csv", common_text(LITERAL, header))
    frame = price_files.parse_price_csv(path)
    pd.testing.assert_frame_equal(frame[COLUMNS], LITERAL[COLUMNS], check_freq=False)
    assert frame[["Turnover", "Change", "Transaction"]].isna().all().all()  # absent, not invented


def test_dates_with_a_time_keep_the_date_as_written_and_rows_are_sorted(tmp_path):
    text = (
        "Date,Open,High,Low,Close,Adj Close,Volume\n"
        "2024-01-03 00:00:00-05:00,184.2,185.9,183.4,184.3,183.1,58414500\n"
        "2024-01-02 00:00:00-05:00,187.1,188.4,183.9,185.6,184.3,82488700\n"
    )
    frame = price_files.parse_price_csv(write(tmp_path / "AAPL.csv", text))
    assert list(frame.index.strftime("%Y-%m-%d")) == ["2024-01-02", "2024-01-03"]
    assert frame["Close"].tolist() == [185.6, 184.3] and frame["Volume"].tolist() == [82488700.0, 58414500.0]


HEADER = "Date,Open,High,Low,Close,Volume\n"


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "is empty"),
        (HEADER, "has a header but no rows"),
        ("Date,Open,High,Low,Volume\n2026-03-02,1,2,0.5,10\n", "lacks column(s) ['close']"),
        ("Date,Open,High,Low,Close,Close ,Volume\n2026-03-02,1,2,0.5,1,1,10\n", "column(s) ['close'] appear twice"),
        (HEADER + "03/02/2026,1,2,0.5,1.5,10\n", "line 2: date '03/02/2026' is not YYYY-MM-DD"),
        (HEADER + "2026-03-02,1,2,0.5,1.5,10\n2026-03-03,abc,2,0.5,1.5,10\n", "line 3: open 'abc' is not a number"),
        (HEADER + "2026-03-02,1,2,0.5,1.5,1e3x\n", "capacity '1e3x' is not a number"),
        (HEADER + "2026-03-02,1,2,0.5,1.5,10\n2026-03-02,1,2,0.5,1.5,10\n", "the date 2026-03-02 appears twice"),
        (HEADER + "2026-03-02,1,0.9,0.5,1.5,10\n", "an impossible candle"),
    ],
)
def test_a_bad_file_is_one_error_naming_the_file_and_the_problem(tmp_path, text, message):
    path = write(tmp_path / "BAD.csv", text)
    with pytest.raises(StockToolError) as caught:
        price_files.parse_price_csv(path)
    assert str(path) in str(caught.value) and message in str(caught.value)


def test_a_file_in_neither_layout_names_both(tmp_path):
    path = write(tmp_path / "X.csv", "day,price\n2026-03-02,1\n")
    with pytest.raises(StockToolError, match=r"twstock columns .* or Date,Open,High,Low,Close,Volume"):
        price_files.parse_price_csv(path)


def test_a_common_layout_file_is_never_fetched_or_rewritten_even_online(tmp_path, exchange, client_for):
    path = write(tmp_path / "2330.csv", common_text(LITERAL))
    before = path.read_bytes()
    cache = PriceCache(tmp_path)
    assert cache.is_given("2330") and not PriceCache(tmp_path / "none").is_given("2330")
    tsmc = Company("2330", "台積電", "twse")
    client = client_for()
    online = exchanges.update_prices(tsmc, cache, pd.Timestamp("2026-01-01").date(), LITERAL.index[-1].date(), client)
    offline = exchanges.update_prices(tsmc, cache, pd.Timestamp("2026-01-01").date(), LITERAL.index[-1].date(), None)
    assert exchange.calls == [] and client.requests_made == 0  # the months it lacks are not asked for
    assert path.read_bytes() == before and not cache.meta_path("2330").exists()
    pd.testing.assert_frame_equal(online, offline)


def test_fields_the_common_layout_lacks_are_refused_clearly(tmp_path):
    write(tmp_path / "prices" / "AAPL.csv", common_text(LITERAL))
    ws = Workspace(
        DataConfig(data_dir=str(tmp_path), offline=True, end_date="2026-03-31"), ExamplesConfig(fields="all")
    )
    apple = ws.company("AAPL")
    assert apple == Company("AAPL", "AAPL", "csv")  # another market's code, known from its file
    start, end = pd.Timestamp("2026-03-01").date(), pd.Timestamp("2026-03-31").date()
    with pytest.raises(
        StockToolError,
        match=r"prompt fields \['turnover', 'change', 'transaction'\] are not in .*"
        r"AAPL.csv.*use --fields ohlcv",
    ):
        ws.update_prices(apple, start, end)
    assert len(ws.update_prices(apple, start, end, OHLCV)) == len(LITERAL)


def test_company_lists_name_other_markets_codes_with_their_files(tmp_path):
    write(tmp_path / "AAPL.csv", common_text(LITERAL))
    listing = write(tmp_path / "list.json", json.dumps([{"code": "AAPL", "name_en": "Apple"}, {"code": 2330}]))
    apple, tsmc = company_list.load_company_list(listing, PriceCache(tmp_path))
    assert apple == Company("AAPL", "AAPL", "csv", "Apple") and tsmc.name_zh == "台積電"
    with pytest.raises(StockToolError, match="unknown stock code 'AAPL'"):
        company_list.load_company_list(listing)  # without its file it is still unknown


def fake_model(monkeypatch, fields=OHLCV, answer_format="absolute"):
    """An injected model answering the last known candle again, on the grammar's dates (read from its regex);
    returns the prompts it was given."""
    seen: list = []
    config = {"dataset": {"fields": fields, "answer_format": answer_format}}
    loaded = model.LoadedModel(model=None, tokenizer=WordTokenizer(), cuda=False, config=config)
    monkeypatch.setattr(model, "load_for_inference", lambda *a, **kw: loaded)

    def generate(_, prompts, max_new_tokens, how=None, regexes=None, stats=None):

        answers = []
        for prompt, regex in zip(prompts, regexes, strict=True):
            seen.append(prompt[0]["content"])
            last = [line for line in prompt[0]["content"].splitlines() if line.startswith("Date: ")][-1]
            dates = re.findall(r"Date: (\d{4}-\d{2}-\d{2})", regex.replace("\\", ""))
            answers.append([prompt_format.answer_lines([f"Date: {d}" + last[16:] for d in dates])])
        return answers

    monkeypatch.setattr(generation, "generate_samples", generate)
    return seen


def test_another_markets_stock_is_forecast_on_its_exchanges_calendar(tmp_path, monkeypatch, capsys):
    frame = candles([190.0 + i for i in range(6)], start="2025-06-26")  # 2025-06-26 → 2025-07-03
    write(tmp_path / "prices" / "AAPL.csv", common_text(frame))
    prompts = fake_model(monkeypatch)
    args = argv(
        "--train 0 --code AAPL --past 3 --future 2 --data-dir {tmp_path} --offline --year 2025 "
        "--month 6 --end-date 2025-07-03 --output-dir {tmp_path}/out --model-dir {tmp_path}/adapter",
        tmp_path=tmp_path,
    )
    assert cli.main([*args, "--calendar", "XNYS"]) == 0
    out = capsys.readouterr().out
    assert prompts[0].startswith("Here is past 3 day stock price of AAPL company.")
    assert "2025-07-07" in out and "2025-07-08" in out and "2025-07-04" not in out  # Independence Day
    assert list((tmp_path / "out" / "forecasts").glob("AAPL_20250703_3to2.png"))


def test_an_adapter_whose_fields_the_file_lacks_and_a_bad_file_are_one_line(tmp_path, monkeypatch, capsys):
    frame = candles([190.0 + i for i in range(6)], start="2025-06-26")
    write(tmp_path / "prices" / "AAPL.csv", common_text(frame))
    args = argv(
        "--train 0 --code AAPL --past 3 --future 2 --data-dir {tmp_path} --offline --end-date "
        "2025-07-03 --output-dir {tmp_path}/out --model-dir {tmp_path}/adapter --calendar XNYS",
        tmp_path=tmp_path,
    )
    fake_model(monkeypatch, fields=data_args.parse_fields("all"))
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "are not in" in err and "use --fields ohlcv" in err
    fake_model(monkeypatch)
    write(tmp_path / "prices" / "AAPL.csv", common_text(frame).replace("2025-07-01", "July 1"))
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "AAPL.csv, line 5: date 'July 1' is not YYYY-MM-DD" in err


# --------------------------------------------------------------------------- the real 2330, in both layouts


@pytest.fixture
def two_layouts(shared_data, tmp_path):
    """The real 2330 prices as given (twstock layout) and the same in the common layout, each in its data dir."""
    twstock = tmp_path / "twstock"
    (twstock / "prices").mkdir(parents=True)
    shutil.copy(shared_data / "prices" / "2330.csv", twstock / "prices")
    real = pd.read_csv(shared_data / "prices" / "2330.csv", dtype=str, keep_default_na=False)
    common = pd.DataFrame(
        {
            "Date": real["date"],
            "Open": real["open"],
            "High": real["high"],
            "Low": real["low"],
            "Close": real["close"],
            "Adj Close": pd.to_numeric(real["close"]).mul(0.97).round(2),
            "Volume": real["capacity"],
        }
    )
    write(tmp_path / "common" / "prices" / "2330.csv", common.to_csv(index=False))
    return twstock, tmp_path / "common"


def test_the_common_layout_reads_as_the_twstock_one_on_ohlcv(two_layouts):
    twstock, common = (price_files.parse_price_csv(d / "prices" / "2330.csv") for d in two_layouts)
    assert len(twstock) > 500 and twstock.index[-1] == pd.Timestamp("2026-04-30")
    pd.testing.assert_frame_equal(common[COLUMNS], twstock[COLUMNS])
    assert common["Turnover"].isna().all() and twstock["Turnover"].notna().any()


def test_a_forecast_is_the_same_from_either_layout(two_layouts, monkeypatch, capsys):
    outputs = []
    for work in two_layouts:
        prompts = fake_model(monkeypatch)
        args = argv(
            "--train 0 --code 2330 --past 5 --future 3 --data-dir {work} --offline --end-date "
            "2026-04-30 --output-dir {work}/out --model-dir {work}/adapter",
            work=work,
        )
        assert cli.main(args) == 0
        capsys.readouterr()
        (csv,) = (work / "out" / "forecasts").glob("2330_*.csv")
        record = json.loads(csv.with_suffix(".json").read_text())
        outputs.append((prompts, csv.name, csv.read_text(), record))
    assert outputs[0] == outputs[1]
    assert [row["date"] for row in outputs[0][3]["forecast"]] == ["2026-05-04", "2026-05-05", "2026-05-06"]


def adapter_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text("{}")
    config = {
        "base_model": "fake",
        "data": {"year": 2025, "month": 10, "end_date": "2026-03-31", "stride": 1, "val_fraction": 0.2},
        "dataset": {
            "fields": OHLCV,
            "windows": ["1:1", "5:5"],
            "cutoff": "2026-02-02",
            "last_date": "2026-03-31",
            "answer_format": "change",
        },
        "companies": [{"code": "2330", "name_zh": "台積電", "market": "twse"}],
    }
    (path / "stock_config.json").write_text(json.dumps(config, ensure_ascii=False))
    return path


def test_an_evaluation_is_the_same_from_either_layout(two_layouts, monkeypatch, capsys):
    results = []
    for work in two_layouts:
        prompts = fake_model(monkeypatch, answer_format="change")
        args = [
            "--train",
            "0",
            "--evaluate",
            "1",
            "--data-dir",
            str(work),
            "--offline",
            "--end-date",
            "2026-04-30",
            "--output-dir",
            str(work / "out"),
            "--model-dir",
            str(adapter_dir(work / "adapter")),
            "--eval-models",
            "tuned",
            "--test-start",
            "2026-04-01",
            "--test-end",
            "2026-04-30",
            "--bootstrap",
            "20",
        ]
        assert cli.main(args) == 0
        capsys.readouterr()
        run = work / "out" / "eval_2026-04-01_2026-04-30"
        metrics = json.loads((run / "metrics.json").read_text())["metrics"]
        results.append((prompts, metrics, (run / "forecasts.csv").read_text()))
    assert results[0] == results[1]
    prompts, metrics, _ = results[0]
    assert len(prompts) > 20 and metrics["tuned"]["5:5"]["all"]["validity"] == 1.0
    persistence = metrics["persistence"]["1:1"]["all"]["mape_close"]
    assert np.isclose(metrics["tuned"]["1:1"]["all"]["mape_close"], persistence)  # the fake is persistence
