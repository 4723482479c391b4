"""The events database and the instructions built from it: timing rules, real returns, idempotent rebuilds."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sqlite3

import pandas as pd
import pytest

import main as cli
from conftest import argv
from instruct import events_db
from market import daily_reports
from utils import TAIPEI, StockToolError

DAYS = pd.DatetimeIndex(pd.to_datetime(["2026-03-02", "2026-03-03", "2026-03-04", "2026-03-05", "2026-03-06"]))
CLOSES = pd.Series([100.0, 110.0, 99.0, 121.0, 100.0], index=DAYS)
TAIEX = pd.Series([1000.0, 1010.0, 1020.0, 1030.0, 1040.0], index=DAYS)


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=TAIPEI)


def test_when_a_news_item_lands():
    assert events_db.first_trading_index(DAYS, at("2026-03-03 09:00")) == 1  # during the session: that day
    assert events_db.first_trading_index(DAYS, at("2026-03-03 14:00")) == 2  # after the close: the next day
    assert events_db.first_trading_index(DAYS, at("2026-03-01 20:00")) == 0  # a Sunday: Monday
    utc_evening = dt.datetime(2026, 3, 2, 17, 0, tzinfo=dt.UTC)  # 01:00 on 03-03 in Taipei
    assert events_db.first_trading_index(DAYS, utc_evening) == 1


def test_impacts_are_real_returns_from_the_close_before():
    rows = events_db.impacts(CLOSES, TAIEX, at("2026-03-03 10:00"), windows=(1, 3, 5))
    assert [r["window"] for r in rows] == [1, 3]  # no 5-day window yet
    assert rows[0]["stock_return"] == pytest.approx(110 / 100 - 1) and rows[0]["end_day"] == "2026-03-03"
    assert rows[1]["stock_return"] == pytest.approx(121 / 100 - 1) and rows[1]["end_day"] == "2026-03-05"
    assert rows[1]["market_return"] == pytest.approx(1030 / 1000 - 1)
    assert events_db.impacts(CLOSES, None, at("2026-03-02 10:00")) == []  # no close before the first day
    assert events_db.impacts(CLOSES, None, at("2026-03-02 14:00"), windows=(1,))[0]["market_return"] is None


def items():
    return [
        {"code": "2330", "publishedAt": "2026-03-03T10:00:00+08:00", "title": "A", "source": "CNA"},
        {"code": "2330", "publishedAt": "2026-03-03T10:00:00+08:00", "title": "A", "source": "CNA"},  # twice
        {"code": "9999", "publishedAt": "2026-03-03T10:00:00+08:00", "title": "no prices"},
    ]


def test_rebuild_is_idempotent_and_atomic(tmp_path):
    frame = pd.DataFrame({"Close": CLOSES})
    path = tmp_path / "events.sqlite"
    first = events_db.build(path, items(), {"2330": frame}, TAIEX)
    snapshot = sqlite3.connect(path).execute("SELECT * FROM event_impacts ORDER BY window").fetchall()
    second = events_db.build(path, items(), {"2330": frame}, TAIEX)
    assert first == second == {"events": 2, "impacts": 1, "without_prices": 1}  # 5 and 20 days not yet
    assert sqlite3.connect(path).execute("SELECT * FROM event_impacts ORDER BY window").fetchall() == snapshot
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.sqlite"]
    [event] = events_db.read_impacts(path)
    assert event["code"] == "2330" and set(event["impacts"]) == {1}
    row = events_db.news_impact_instruction(event, "台積電")
    assert "「A」" in row["instruction"] and "1 個交易日後，台積電 +10.00%，加權指數 +1.00%" in row["output"]


def test_unreadable_databases_fail_clearly(tmp_path):
    corrupt = tmp_path / "events.sqlite"
    corrupt.write_bytes(b"not a database at all" * 100)
    with pytest.raises(StockToolError, match="cannot read the events database"):
        events_db.read_impacts(corrupt)
    old = tmp_path / "old.sqlite"
    with sqlite3.connect(old) as db:
        db.execute("PRAGMA user_version = 7")
    with pytest.raises(StockToolError, match="schema version 7"):
        events_db.read_impacts(old)
    with pytest.raises(StockToolError, match="build it with --build-events 1"):
        events_db.read_impacts(tmp_path / "missing.sqlite")


def test_market_analysis_and_the_mix():
    frame = pd.DataFrame({"Close": [100.0 + i for i in range(30)]}, index=pd.bdate_range("2026-01-01", periods=30))
    taiex = pd.Series([1000.0] * 30, index=frame.index)
    row = events_db.market_analysis_instruction(frame, taiex, "甲", "1234")
    assert row["output"].startswith("過去 20 個交易日 甲 累計 +18.35%，趨勢為上漲") and "強於大盤" in row["output"]
    assert events_db.market_analysis_instruction(frame.iloc[:10], taiex, "甲", "1234") is None
    news_rows = [
        {"code": "1234", "date": "2026-01-05", "title": f"t{i}", "impacts": {1: (0.01, 0.0)}} for i in range(9)
    ]
    mix = events_db.Mix({"news": 3, "market": 1}, total=8, seed=0, stride=2)
    built = events_db.build_instructions(news_rows, {"1234": frame}, taiex, {"1234": "甲"}, mix)
    assert (
        sum(r["kind"] == "news_impact" for r in built) == 6 and sum(r["kind"] == "market_analysis" for r in built) == 2
    )


def test_fmtqik_gives_taiex_closes(shared_data):
    body = json.loads((shared_data / "twse_responses" / "twse_FMTQIK_202510_partial_to_1003.json").read_text())
    series = daily_reports.parse_fmtqik(body)
    assert series[pd.Timestamp("2025-10-01")] == 25982.91 and len(series) == len(body["data"])


def test_build_events_from_real_headlines_and_prices(shared_data, tmp_path, capsys):
    shutil.copytree(shared_data / "prices", tmp_path / "prices")
    (tmp_path / "c.json").write_text(json.dumps([{"code": "2330"}, {"code": "2317"}]))
    args = argv(
        "--train 0 --build-events 1 --data-dir {tmp_path} --offline --company-list-file "
        "{tmp_path}/c.json --year 2024 --month 1 --end-date 2026-04-30 --instruct-rows 100",
        tmp_path=tmp_path,
    )
    assert cli.main(args) == 2
    assert "no stored news" in capsys.readouterr().err
    args += ["--news-csv", str(shared_data / "news" / "headlines_2024-01.csv")]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "news-impact" in out and (tmp_path / "events.sqlite").is_file()
    rows = [json.loads(x) for x in (tmp_path / "instructions" / "events_instructions.jsonl").read_text().splitlines()]
    assert len(rows) == 100 and sum(r["kind"] == "news_impact" for r in rows) == 60
    impact = next(r for r in rows if r["kind"] == "news_impact")
    assert "加權指數" in impact["output"]  # TAIEX.csv in the price folder gives the market's return
    assert cli.main(args) == 0  # rebuilding is idempotent
    assert [
        json.loads(x) for x in (tmp_path / "instructions" / "events_instructions.jsonl").read_text().splitlines()
    ] == rows
