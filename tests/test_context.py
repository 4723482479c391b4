"""Context in the prompts: twstock signals (cross-checked), news (store, newsapi client, CSV import,
no look-ahead) and --choose-stock on market-wide data."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

import dataset
import utils
from config import data_args
from config.context_args import ContextConfig
from conftest import LocalServer, argv
from market import daily_reports, exchanges, news, price_files, twstock_signals
from market.company_list import Company
from stock_predictor import DataConfig, Settings, StockPredictor

TSMC = Company("2330", "台積電", "twse", "TSMC")
ACER = Company("2353", "宏碁", "twse", "Acer")


# --------------------------------------------------------------------------- signals


def test_best_four_points_match_twstock_on_real_prices(shared_data):
    """Our per-day values against twstock's own BestFourPoint on the same real prices (its 31-day window)."""
    from twstock.analytics import Analytics, BestFourPoint

    class Series(Analytics):  # the three lists twstock's Stock exposes to BestFourPoint
        def __init__(self, frame):
            self.price, self.open, self.capacity = list(frame["Close"]), list(frame["Open"]), list(frame["Volume"])

    checked = 0
    for code in ("2330", "6569"):
        frame = price_files.parse_price_csv(shared_data / "prices" / f"{code}.csv")
        ours = twstock_signals.best_four_points(frame)
        assert ours[:5] == [None] * 5
        for t in range(5, len(frame)):
            theirs = BestFourPoint(Series(frame.iloc[max(0, t - 30) : t + 1]))
            mine = ours[t]
            assert mine["buy"] == [
                bool(theirs.best_buy_1()),
                bool(theirs.best_buy_2()),
                bool(theirs.best_buy_3()),
                bool(theirs.best_buy_4()),
            ]
            assert mine["sell"] == [
                bool(theirs.best_sell_1()),
                bool(theirs.best_sell_2()),
                bool(theirs.best_sell_3()),
                bool(theirs.best_sell_4()),
            ]
            expected = theirs.best_four_point()
            assert (None if mine["signal"] is None else (mine["signal"] == "buy", ", ".join(mine["why"]))) == expected
            checked += 1
    assert checked > 800


def test_a_days_signal_never_depends_on_later_days(shared_data):
    frame = price_files.parse_price_csv(shared_data / "prices" / "2330.csv")
    full = twstock_signals.best_four_points(frame)
    cut = twstock_signals.best_four_points(frame.iloc[:300])
    assert cut == full[:300]
    assert twstock_signals.signal_text(full[299]).startswith("twstock best four points: ")
    assert "fewer than 6 days" in twstock_signals.signal_text(None)


# --------------------------------------------------------------------------- news lines (as of)


def test_news_lines_take_only_articles_known_by_the_window_end():
    articles = [
        {"publishedAt": "2026-03-12T01:00:00Z", "title": "old", "source": "A"},
        {"publishedAt": "2026-03-12T15:30:00Z", "title": "after midnight in Taipei"},  # 2026-03-12 23:30 Taipei
        {"publishedAt": "2026-03-12T16:30:00Z", "title": "next Taipei day"},  # 2026-03-13 00:30 Taipei
        {"publishedAt": "2026-03-20T00:00:00Z", "title": "much later"},
    ]
    for a in articles:
        a["taipei_time"] = news.taipei_time(a["publishedAt"])
        a["taipei_date"] = a["taipei_time"].date()
    lines = news.news_lines(articles, dt.date(2026, 3, 12), max_articles=5, max_tokens=500)
    assert lines == ["- 2026-03-12 after midnight in Taipei", "- 2026-03-12 [A] old"]
    assert news.news_lines(articles, dt.date(2026, 3, 12), max_articles=1, max_tokens=500) == lines[:1]
    assert news.news_lines(articles, dt.date(2026, 3, 12), max_articles=5, max_tokens=12) == lines[:1]
    assert news.approx_tokens("台積電 up") == 3 + 1


def test_no_headline_after_a_window_end_reaches_its_prompt(shared_data, tmp_path):
    """Real January 2024 headlines and prices of 2330: every news line in a prompt is dated ≤ the window's end."""
    store = news.NewsStore(tmp_path / "news")
    counts = news.import_csv(shared_data / "news" / "headlines_2024-01.csv", store, {"2330": TSMC})
    assert counts["imported"] > 100 and counts["unknown_code"] > 0
    frame = price_files.parse_price_csv(shared_data / "prices" / "2330.csv").loc[:"2024-02-29"]
    predictor = StockPredictor(Settings(data=DataConfig(data_dir=str(tmp_path))))
    config = ContextConfig(signals=True, news_max_articles=20)
    context = predictor.workspace.context_builder(config, {"2330": frame})
    examples, _ = dataset.build_examples(
        frame,
        "台積電",
        "2330",
        data_args.WindowType(5, 5),
        data_args.parse_fields("ohlcv"),
        dataset.ExampleStyle(1, context("2330")),
    )
    with_news = [e for e in examples if e["meta"]["context"] == "prices+signals+news"]
    assert len(with_news) > 10
    for e in examples:
        text = e["prompt"][0]["content"]
        dated = [line[2:12] for line in text.splitlines() if line.startswith("- 20")]
        assert all(d <= e["meta"]["input_end"] for d in dated), (e["meta"], dated)
    first = min(e["meta"]["input_end"] for e in with_news)
    assert first >= "2024-01-01"  # no window before the first headline claims news


# --------------------------------------------------------------------------- the store and newsapi.org


def test_store_merges_deduplicates_and_keeps_the_spec_format(tmp_path):
    store = news.NewsStore(tmp_path)
    a = news.normalize_article(
        {"publishedAt": "2026-03-01T02:00:00Z", "title": "T1", "url": "u1", "source": {"id": None, "name": "Reuters"}}
    )
    b = news.normalize_article({"publishedAt": "2026-03-02T02:00:00Z", "title": "T2", "url": "u2"})
    assert store.merge(ACER, "en", [a, b]) == 2
    assert store.merge(ACER, "en", [a, None]) == 0  # refetching adds nothing twice
    record = json.loads((tmp_path / "2353.json").read_text())
    assert set(record) == {"name_zh", "name_en", "news_zh", "news_en", "code"}
    assert record["name_en"] == "Acer" and [x["title"] for x in record["news_en"]] == ["T2", "T1"]
    assert record["news_en"][1]["source"] == "Reuters" and record["news_zh"] == []


class NewsServer(LocalServer):
    """Answers /v2/everything in newsapi.org's documented JSON shape (shaped, not recorded: the API is
    unreachable from here). `replies` is a list of (status, body) used in turn; the last one repeats."""

    def __init__(self):
        self.replies: list[tuple[int, dict | str]] = []
        self.calls: list[dict] = []
        super().__init__()
        self.url = self.root

    def respond(self, method, path, headers, body):
        url = urlparse(path)
        self.calls.append(
            {"path": url.path, **{k: v[0] for k, v in parse_qs(url.query).items()}, "key": headers.get("Authorization")}
        )
        status, reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        return status, reply if isinstance(reply, str) else json.dumps(reply)


@pytest.fixture
def newsapi(monkeypatch):
    server = NewsServer()
    monkeypatch.setenv("NEWSAPI_BASE_URL", server.url)
    yield server
    server.close()


def ok(*titles):
    articles = [
        {
            "source": {"id": None, "name": "CNA"},
            "author": None,
            "title": t,
            "description": "d",
            "url": f"https://x/{t}",
            "publishedAt": "2026-04-20T03:00:00Z",
            "content": "...",
        }
        for t in titles
    ]
    return 200, {"status": "ok", "totalResults": len(articles), "articles": articles}


KEY = "nk-0123456789abcdef"


def test_collector_queries_both_names_within_the_daily_budget(newsapi, tmp_path):
    newsapi.replies = [ok("台積電營收"), ok("TSMC sales"), ok("宏碁")]
    store = news.NewsStore(tmp_path / "news")
    summary = news.NewsCollector(KEY, store, daily_limit=3).collect([TSMC, ACER], days=30, today=dt.date(2026, 4, 30))
    assert summary["requests"] == 3 and summary["skipped"] == ["2353 en"] and summary["new_articles"] == 3
    assert [(c["q"], c["language"], c["from"]) for c in newsapi.calls] == [
        ('"台積電"', "zh", "2026-03-31"),
        ('"TSMC"', "en", "2026-03-31"),
        ('"宏碁"', "zh", "2026-03-31"),
    ]
    assert all(c["key"] == KEY and c["path"] == "/v2/everything" for c in newsapi.calls)
    record = store.load("2330")
    assert record["news_zh"][0]["title"] == "台積電營收" and record["news_en"][0]["source"] == "CNA"
    again = news.NewsCollector(KEY, store, daily_limit=3).collect([TSMC], today=dt.date(2026, 4, 30))
    assert again["requests"] == 0 and again["skipped"] == ["2330 zh", "2330 en"]  # the day's budget is spent
    assert KEY not in "".join(p.read_text() for p in (tmp_path / "news").iterdir())


@pytest.mark.parametrize(
    "status, body, message",
    [
        (401, {"status": "error", "code": "apiKeyInvalid", "message": "Your API key is invalid."}, "refused the key"),
        (429, {"status": "error", "code": "rateLimited", "message": "You have made too many requests."}, "rate limit"),
        (
            426,
            {
                "status": "error",
                "code": "parameterInvalid",
                "message": "You are trying to request results too far in the past.",
            },
            "outside your plan",
        ),
        (500, "<html>down</html>", "not JSON"),
    ],
)
def test_collector_errors_are_clear_and_lose_nothing(newsapi, tmp_path, status, body, message):
    store = news.NewsStore(tmp_path / "news")
    store.merge(TSMC, "zh", [news.normalize_article({"publishedAt": "2026-04-01T00:00:00Z", "title": "kept"})])
    before = (tmp_path / "news" / "2330.json").read_text()
    newsapi.replies = [(status, body)]
    with pytest.raises(utils.StockToolError, match=message) as info:
        news.NewsCollector(KEY, store).collect([TSMC], today=dt.date(2026, 4, 30))
    assert KEY not in str(info.value)
    assert (tmp_path / "news" / "2330.json").read_text() == before


def test_collector_reports_an_unreachable_network(tmp_path, monkeypatch):
    monkeypatch.setenv("NEWSAPI_BASE_URL", "http://127.0.0.1:9")
    with pytest.raises(utils.StockToolError, match="could not be reached"):
        news.NewsCollector(KEY, news.NewsStore(tmp_path)).collect([TSMC], today=dt.date(2026, 4, 30))


def test_csv_import_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("code,when,title\n2330,2026-01-01,x\n")
    with pytest.raises(utils.StockToolError, match=r"lacks column\(s\) \['date'\]"):
        news.import_csv(bad, news.NewsStore(tmp_path), {"2330": TSMC})
    rows = tmp_path / "rows.csv"
    rows.write_text("code,date,title,source\n2330,2026-01-05,Chip news,CNA\n2330,yesterday,x,\n9999,2026-01-05,y,\n")
    counts = news.import_csv(rows, news.NewsStore(tmp_path / "n"), {"2330": TSMC})
    assert counts == {"rows": 3, "imported": 1, "unknown_code": 1, "bad_rows": 1}
    record = news.NewsStore(tmp_path / "n").load("2330")
    assert record["news_en"][0]["publishedAt"].startswith("2026-01-05T00:00:00+08:00")


# --------------------------------------------------------------------------- market-wide data and --choose-stock


def test_twse_daily_report_parses_the_recorded_reply(shared_data):
    body = json.loads((shared_data / "twse_responses" / "twse_MI_INDEX_ALLBUT0999_20260211.json").read_text())
    rows = daily_reports.parse_twse_daily(body, dt.date(2026, 2, 11))
    tsmc = next(r for r in rows if r["code"] == "2330")
    real = price_files.parse_price_csv(shared_data / "prices" / "2330.csv").loc["2026-02-11"]
    assert (tsmc["open"], tsmc["high"], tsmc["low"], tsmc["close"]) == (real.Open, real.High, real.Low, real.Close)
    assert tsmc["capacity"] == real.Volume and tsmc["change"] == real.Change
    holiday = json.loads((shared_data / "twse_responses" / "twse_MI_INDEX_20260212_nodata.json").read_text())
    assert daily_reports.parse_twse_daily(holiday, dt.date(2026, 2, 12)) == []


def test_tpex_daily_report_parses_its_documented_shape():
    """Shaped after TPEx's dailyQuotes JSON (no recorded reply is available here)."""
    body = {
        "stat": "ok",
        "date": "20260211",
        "tables": [
            {
                "fields": [
                    "代號",
                    "名稱",
                    "收盤 ",
                    "漲跌",
                    "開盤 ",
                    "最高 ",
                    "最低",
                    "均價 ",
                    "成交股數  ",
                    "成交金額(元)",
                    "成交筆數 ",
                ],
                "data": [argv("6569 醫揚 101.50 -1.50 103.00 103.50 101.00 102.1 123,000 12,558,300 150")],
            }
        ],
    }
    [row] = daily_reports.parse_tpex_daily(body, dt.date(2026, 2, 11))
    assert row == {
        "code": "6569",
        "date": "2026-02-11",
        "close": 101.5,
        "change": -1.5,
        "open": 103.0,
        "high": 103.5,
        "low": 101.0,
        "capacity": 123000.0,
        "turnover": 12558300.0,
        "transaction": 150.0,
    }
    with pytest.raises(exchanges.ExchangeUnavailable):
        daily_reports.parse_tpex_daily({"stat": "error"}, dt.date(2026, 2, 11))


@pytest.fixture
def broad(shared_data) -> Path:
    path = shared_data / "broad" / "twse_tpex_daily_2025-01-02_2026-04-30.csv.gz"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


def test_choose_stock_picks_reproducibly_by_each_point(broad, tmp_path, capsys):
    def choose(seed):
        from config.model_args import LoraConfig

        data = DataConfig(
            data_dir=str(tmp_path), offline=True, end_date="2026-04-30", choose_stock=2, market_csv=str(broad)
        )
        predictor = StockPredictor(Settings(data=data, lora=LoraConfig(random_state=seed)))
        return predictor, predictor.companies()

    predictor, first = choose(7)
    out = capsys.readouterr().out
    assert "choose-stock:" in out and "buy 1 (量大收紅)" in out and "sell 4 (三日均價小於六日均價)" in out
    assert 2 <= len(first) <= 16
    assert [c.code for c in choose(7)[1]] == [c.code for c in first]  # --random-state makes it reproducible
    assert [c.code for c in choose(8)[1]] != [c.code for c in first]
    # every pick meets the condition it was picked for, on the latest day of the market data
    rows = daily_reports.last_days(daily_reports.read_market_csv(broad), dt.date(2026, 4, 30), 10)
    frames = daily_reports.market_frames(rows)
    for line in out.splitlines()[1:17]:
        side, number = line.split()[0], int(line.split()[1]) - 1
        codes = [part.split()[0] for part in line.split("): ")[1].split("  [")[0].split(", ") if part != "none"]
        for code in codes:
            assert twstock_signals.best_four_points(frames[code])[-1][side][number], (line, code)
    prices = predictor.fetch_prices(first)  # offline: the market CSV is the chosen stocks' price history
    assert all(len(f) > 200 for f in prices.values())


def test_choose_stock_offline_needs_market_data(tmp_path):
    data = DataConfig(data_dir=str(tmp_path), offline=True, choose_stock=1, end_date="2026-04-30")
    predictor = StockPredictor(Settings(data=data))
    with pytest.raises(utils.StockToolError, match="needs --market-csv"):
        predictor.companies()


# --------------------------------------------------------------------------- --universe market


def _market_csv(path: Path, codes, days: int = 80) -> Path:
    """A market-wide CSV (code + twstock columns) of `codes`, each rising 0.1 a day from 50 (synthetic)."""
    import pandas as pd

    dates = pd.bdate_range("2025-01-02", periods=days).strftime("%Y-%m-%d")
    rows = [
        {
            "code": code,
            "date": d,
            "capacity": 1000 + i,
            "turnover": 5e4,
            "open": 50 + 0.1 * i,
            "high": 51 + 0.1 * i,
            "low": 49 + 0.1 * i,
            "close": 50.05 + 0.1 * i,
            "change": 0.1,
            "transaction": 10,
        }
        for code in codes
        for i, d in enumerate(dates)
    ]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _universe(tmp_path, market_csv, end_date: str, **more) -> DataConfig:
    """Offline data settings from 2025-01 to `end_date` with --universe market over `market_csv`."""
    return DataConfig(
        data_dir=str(tmp_path),
        offline=True,
        year=2025,
        month=1,
        end_date=end_date,
        market_csv=str(market_csv),
        universe="market",
        **more,
    )


def test_the_universe_adds_every_other_listed_stock_as_training_windows_only(tmp_path, capsys):
    """2330 is the company list's (its own windows, its validation); 1101 and 2603 are other listed common stocks
    (windows every --universe-stride days, all ending before the cutoff); 0050 (an ETF) is left out."""
    from llm import sft_data

    market = _market_csv(tmp_path / "market.csv", ["2330", "1101", "2603", "0050"], days=100)
    data = _universe(tmp_path, market, "2025-05-30", output_dir=str(tmp_path / "out"), universe_stride=10)
    predictor = StockPredictor(Settings(data=data, examples=data_args.ExamplesConfig(windows="5:5")))
    ws = predictor.workspace
    companies = [Company("2330", "台積電", "twse")]
    prices = {"2330": daily_reports.market_frames(daily_reports.read_market_csv(market))["2330"]}
    others = ws.market_stocks({"2330"})
    assert sorted(others) == ["1101", "2603"] and others["1101"][0].name_zh == "台泥"
    assert "universe: 2 listed common stocks besides the company list" in capsys.readouterr().out
    train, val, record = sft_data.build(ws, companies, prices, others)
    cutoff = record["cutoff"]
    theirs = [e for e in train if e["meta"]["code"] == "1101"]
    assert record["universe"] == "market" and record["market_stocks"] == 2
    assert record["market_train_examples"] == len(theirs) * 2 and {e["meta"]["code"] for e in val} == {"2330"}
    assert all(e["meta"]["target_end"] < cutoff for e in theirs)
    starts = [dt.date.fromisoformat(e["meta"]["input_start"]) for e in theirs]
    assert len(theirs) >= 5 and all(int(np.busday_count(a, b)) == 10 for a, b in zip(starts, starts[1:], strict=False))
    ours = [e for e in train if e["meta"]["code"] == "2330"]
    assert len(ours) > 5 * len(theirs)  # the company list keeps every window (--stride 1)


def test_the_universe_offline_needs_a_market_csv(tmp_path):
    data = DataConfig(data_dir=str(tmp_path), offline=True, universe="market")
    with pytest.raises(utils.StockToolError, match="--universe market with --offline needs --market-csv"):
        StockPredictor(Settings(data=data)).workspace.market_stocks(set())


def test_the_universe_of_the_real_market(broad, tmp_path, capsys):
    data = _universe(tmp_path, broad, "2026-02-27")
    others = StockPredictor(Settings(data=data)).workspace.market_stocks({"2330", "2317"})
    assert 1700 <= len(others) <= 1970 and "2330" not in others and "0050" not in others
    assert all(f.index[-1] <= dt.datetime(2026, 2, 27) for _, f in others.values())
