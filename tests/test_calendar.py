"""The exchange's calendar (`trading_calendar`, exchange-calendars' XTAI): live forecasts are dated on the days
the exchange trades, checked on literal dates and against every day of the real prices in ../shared/data."""

from __future__ import annotations

import re
import subprocess
import sys

import pandas as pd
import pytest

import main as cli
import model
from config import data_args
from config.cli import parse
from conftest import ROOT, WordTokenizer, argv, candles, write_price_csv
from forecasting.reading import Question, read_forecast
from llm import generation
from market import trading_calendar
from market.trading_calendar import next_trading_days
from prompts import prompt_format
from utils import StockToolError

OHLCV = data_args.parse_fields("ohlcv")


def days(*texts) -> list[pd.Timestamp]:
    return [pd.Timestamp(t) for t in texts]


# --------------------------------------------------------------------------- literal dates


def test_a_forecast_after_april_30_2026_skips_labour_day():
    assert list(next_trading_days("2026-04-30", 3)) == days("2026-05-04", "2026-05-05", "2026-05-06")


def test_a_forecast_after_february_10_2026_skips_the_lunar_new_year():
    # TWSE's 2026 calendar: the last session before the holidays is 2026-02-11, trading resumes on 2026-02-23
    assert list(next_trading_days("2026-02-10", 3)) == days("2026-02-11", "2026-02-23", "2026-02-24")
    assert list(next_trading_days(pd.Timestamp("2026-02-11"), 1)) == days("2026-02-23")


def test_weekends_new_year_and_other_calendars():
    assert list(next_trading_days("2026-03-06", 1)) == days("2026-03-09")  # a Friday → the Monday
    assert list(next_trading_days("2025-12-31", 1)) == days("2026-01-02")  # New Year's Day
    assert list(next_trading_days("2026-05-02", 1)) == days("2026-05-04")  # from a day without a session
    # New York: Independence Day 2025 was a Friday; XTAI trades that day
    assert list(next_trading_days("2025-07-03", 1, "XNYS")) == days("2025-07-07")
    assert list(next_trading_days("2025-07-03", 1, "XTAI")) == days("2025-07-04")
    dates = next_trading_days("2026-04-30", 2)
    assert dates.name == "Date" and dates.freq is None


def test_closed_days_are_those_without_a_session():
    assert trading_calendar.closed_days(days("2026-04-30", "2026-05-01", "2026-05-02", "2026-05-04")) == days(
        "2026-05-01", "2026-05-02"
    )
    assert trading_calendar.closed_days(days("2025-07-04"), "XNYS") == days("2025-07-04")


def test_an_unknown_calendar_is_one_clear_error():
    with pytest.raises(
        StockToolError,
        match=r"--calendar XTWSE: must be a calendar of exchange-calendars.*"
        r"get_calendar_names",
    ):
        next_trading_days("2026-04-30", 1, "XTWSE")


def test_past_the_calendars_known_range_is_an_error_not_a_traceback():
    last = trading_calendar.calendar("XTAI").last_session
    with pytest.raises(StockToolError, match="knows trading days only up to " + f"{last:%Y-%m-%d}"):
        next_trading_days(last - pd.Timedelta(days=3), 10)


def test_the_calendar_flag_defaults_to_xtai_and_refuses_an_unknown_name(capsys):
    assert parse(["--train", "0"]).settings(cuda=False).data.calendar == "XTAI"
    assert cli.main(["--train", "0", "--calendar", "TAIWAN"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: --calendar TAIWAN: must be a calendar")
    assert "get_calendar_names" in err


def test_importing_main_does_not_import_exchange_calendars():
    code = "import sys, main; assert 'exchange_calendars' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_a_free_answer_dated_on_a_holiday_is_noted():
    history = candles([100, 101, 102, 103], start="2026-04-27")  # ends Thursday 2026-04-30
    future = candles([104], start="2026-05-01")  # Labour Day
    result = read_forecast(
        Question("2330", "台積電", history, tuple(OHLCV), 1),
        [prompt_format.answer_text(future, OHLCV)],
        calendar="XTAI",
    )
    assert result.ok and "2026-05-01 (Friday) is not a trading day of the XTAI calendar" in result.notes


def fake_model(monkeypatch, seen: dict):
    """An injected model answering the last candle for the grammar's dates (read back from the regex)."""
    loaded = model.LoadedModel(model=None, tokenizer=WordTokenizer(), cuda=False, config={"dataset": {"fields": OHLCV}})
    monkeypatch.setattr(model, "load_for_inference", lambda *a, **kw: loaded)

    def generate(_, prompts, max_new_tokens, how=None, regexes=None, stats=None):
        seen["regexes"], seen["prompts"] = regexes, prompts
        answers = []
        for prompt, regex in zip(prompts, regexes, strict=True):
            last = [line for line in prompt[0]["content"].splitlines() if line.startswith("Date: ")][-1]
            dates = re.findall(r"Date: (\d{4}-\d{2}-\d{2})", regex.replace("\\", ""))
            answers.append([prompt_format.answer_lines([f"Date: {d}" + last[16:] for d in dates])])
        return answers

    monkeypatch.setattr(generation, "generate_samples", generate)


def test_a_live_forecast_is_dated_on_the_exchanges_sessions(tmp_path, monkeypatch, capsys):
    """End to end on literal prices ending 2026-04-30: the grammar's dates and the printed forecast skip
    Labour Day; with --calendar XNYS the same forecast takes New York's days."""
    (tmp_path / "prices").mkdir()
    frame = candles([600 + i for i in range(8)], start="2026-04-21")  # 2026-04-21 → 2026-04-30
    write_price_csv(tmp_path / "prices", "2330", frame)
    seen: dict = {}
    fake_model(monkeypatch, seen)
    args = argv(
        "--train 0 --code 2330 --past 3 --future 2 --data-dir {tmp_path} --offline --end-date "
        "2026-04-30 --output-dir {tmp_path}/out --model-dir {tmp_path}/a",
        tmp_path=tmp_path,
    )
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    regex = seen["regexes"][0]
    good = prompt_format.answer_text(
        frame.iloc[[-1, -1]].set_axis(pd.DatetimeIndex(days("2026-05-04", "2026-05-05"))), OHLCV
    )
    assert re.fullmatch(regex, good) and not re.fullmatch(regex, good.replace("2026-05-04", "2026-05-01"))
    assert "2026-05-04" in out and "2026-05-05" in out and "2026-05-01" not in out
    assert "2026-05-01" not in regex.replace("\\", "")
    assert cli.main([*args, "--calendar", "XNYS"]) == 0  # New York trades on 2026-05-01
    assert "2026-05-01" in capsys.readouterr().out and "2026-05-01" in seen["regexes"][0].replace("\\", "")


# --------------------------------------------------------------------------- the real data

# Days on which the real data and exchange-calendars 4.13.2's XTAI disagree, each with why. The test fails
# when the list is incomplete or out of date, so a new version of the package is checked against the data.
KNOWN_EXCEPTIONS = {
    # Typhoon Kong-rey: TWSE and TPEx were closed on Thursday 2024-10-31 (a typhoon day declared by the
    # government; TAIEX has no row either), but exchange-calendars lists only the 2024 typhoon days of July and
    # early October, so it counts 2024-10-31 as a session.
    "2024-10-31": "session in XTAI, no trades in the data",
}


def traded_days(shared_data) -> set[str]:
    """Days on which any of the 41 companies traded (a positive volume)."""
    traded = set()
    for path in sorted((shared_data / "prices").glob("*.csv")):
        if path.stem == "TAIEX":
            continue
        rows = pd.read_csv(path, dtype={"date": str})
        traded |= set(rows.loc[pd.to_numeric(rows["capacity"], errors="coerce") > 0, "date"])
    return traded


def test_xtai_matches_every_weekday_of_the_real_data(shared_data):
    """2024-01-01 → 2026-04-30: a weekday on which none of the 41 companies traded is closed in XTAI, and a day
    on which any traded is a session (2024: seven companies' prices; from 2024-12-09: all 41)."""
    traded = traded_days(shared_data)
    weekdays = pd.bdate_range("2024-01-01", "2026-04-30")
    cal = trading_calendar.calendar("XTAI")
    sessions = set(cal.sessions_in_range("2024-01-01", "2026-04-30").strftime("%Y-%m-%d"))
    assert not {d for d in traded if "2024-01-01" <= d <= "2026-04-30"} - set(weekdays.strftime("%Y-%m-%d"))
    mismatches = {}
    for day in weekdays.strftime("%Y-%m-%d"):
        if (day in traded) != (day in sessions):
            mismatches[day] = "session in XTAI, no trades in the data" if day in sessions else "traded, closed in XTAI"
    assert mismatches == KNOWN_EXCEPTIONS
    assert len(sessions) == len([d for d in traded if "2024-01-01" <= d <= "2026-04-30"]) + len(KNOWN_EXCEPTIONS)


def test_every_real_next_trading_day_of_2330_is_the_calendars(shared_data):
    """From every day of 2330's real prices, the calendar's next session is the next day of the data (but after
    the eve of the typhoon closure the library lacks), so a forecast made then would have been dated right."""
    dates = [d for d in pd.read_csv(shared_data / "prices" / "2330.csv", dtype={"date": str})["date"]]
    dates = [d for d in dates if d >= "2024-01-01"]
    wrong = {}
    for day, following in zip(dates, dates[1:], strict=False):
        (predicted,) = next_trading_days(day, 1)
        if f"{predicted:%Y-%m-%d}" != following:
            wrong[day] = f"{predicted:%Y-%m-%d}"
    assert wrong == {"2024-10-30": "2024-10-31"}  # the real next day was 2024-11-01 (KNOWN_EXCEPTIONS)
    assert dates[-1] == "2026-04-30" and list(next_trading_days(dates[-1], 1)) == days("2026-05-04")
    after = dates[dates.index("2026-02-10") :][:4]
    assert after == ["2026-02-10", "2026-02-11", "2026-02-23", "2026-02-24"]  # the real Lunar New Year week
    assert [f"{d:%Y-%m-%d}" for d in next_trading_days("2026-02-10", 3)] == after[1:]
