"""Prices: twstock's parsers on recorded real exchange replies, served over real HTTP; the cache; companies."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest

from config import data_args
from conftest import ROOT, recorded
from market import company_list, exchanges, price_files
from market.company_list import Company
from market.exchanges import ExchangeUnavailable, Throttle
from market.price_files import PriceCache
from utils import StockToolError

TSMC = Company("2330", "台積電", "twse")
ESLITE = Company("2926", "誠品生活", "tpex")
FPC = Company("1301", "台塑", "twse")


# --------------------------------------------------------------------------- one month over HTTP


def test_twse_month_parsed_from_recorded_reply(exchange, client_for):
    exchange.routes[("STOCK_DAY", "2330|20241101")] = recorded("twse_STOCK_DAY_2330_202411_partial_to_1108.json")
    rows = client_for().fetch_month(TSMC, 2024, 11)
    assert len(rows) == 6
    first, second = rows[0], rows[1]
    assert first.date == dt.datetime(2024, 11, 1)  # ROC 113/11/01
    assert first.capacity == 61_545_741 and first.turnover == 62_269_386_415  # thousands separators
    assert (first.open, first.high, first.low, first.close) == (996.0, 1030.0, 996.0, 1025.0)
    assert first.change == -5.0 and second.change == 15.0  # "+15.00"
    assert first.transaction == 77_404


def test_tpex_month_parsed_from_recorded_reply(exchange, client_for):
    exchange.routes[("tradingStock", "2926|2025/05/01")] = recorded(
        "tpex_tradingStock_2926_202505_partial_to_0516.json"
    )
    rows = client_for().fetch_month(ESLITE, 2025, 5)
    assert len(rows) == 11
    assert rows[0].date == dt.datetime(2025, 5, 2)
    assert rows[0].capacity == 10_000  # TPEx reports lots of 1,000 shares
    assert rows[2].turnover == 1_330_000  # and thousands of NTD
    assert rows[0].close == 47.2


def test_no_data_reply_is_an_empty_month(exchange, client_for):
    exchange.routes[("STOCK_DAY", "2330|20260201")] = recorded("twse_MI_INDEX_20260212_nodata.json")
    assert client_for().fetch_month(TSMC, 2026, 2) == []


def test_no_trade_rows_become_blank_prices(exchange, client_for):
    # The real 1301 reply with its prices replaced by the exchange's "--" (a day without trades).
    body = json.loads(recorded("twse_STOCK_DAY_1301_202508_trimmed1row.json"))
    body["data"][0][1:8] = ["0", "0", "--", "--", "--", "--", "X0.00"]
    exchange.routes[("STOCK_DAY", "1301|20250801")] = json.dumps(body, ensure_ascii=False)
    (row,) = client_for().fetch_month(FPC, 2025, 8)
    assert row.open is None and row.close is None and row.change == 0.0


@pytest.mark.parametrize("body", ["<html>請稍後再試</html>", ""])
def test_html_or_empty_reply_is_a_failure_not_an_empty_month(exchange, client_for, body):
    exchange.routes[("STOCK_DAY", "2330|20241101")] = body
    with pytest.raises(ExchangeUnavailable, match="not JSON"):
        client_for(retries=3).fetch_month(TSMC, 2024, 11)
    assert len(exchange.calls) == 3


def test_server_error_is_retried(exchange, client_for):
    exchange.routes[("STOCK_DAY", "2330|20241101")] = [
        500,
        recorded("twse_STOCK_DAY_2330_202411_partial_to_1108.json"),
    ]
    assert len(client_for(retries=3).fetch_month(TSMC, 2024, 11)) == 6
    assert len(exchange.calls) == 2


def test_unreachable_exchange_raises(client_for, exchange):
    client = client_for(retries=2)
    client.twse_url = "http://127.0.0.1:9/"  # discard port: connection refused
    with pytest.raises(ExchangeUnavailable, match="failed 2 time"):
        client.fetch_month(TSMC, 2024, 11)


def test_backoff_between_retries(exchange, client_for):
    waits = []
    exchange.routes[("STOCK_DAY", "2330|20241101")] = 503
    client = client_for(retries=3)
    client.sleep = waits.append
    with pytest.raises(ExchangeUnavailable):
        client.fetch_month(TSMC, 2024, 11)
    assert waits == [client.backoff, client.backoff * 2]


def test_throttle_spaces_requests():
    now, slept = [0.0], []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    throttle = Throttle(2.0, clock=lambda: now[0], sleep=sleep)
    throttle.wait()
    now[0] += 0.5
    throttle.wait()
    now[0] += 5.0
    throttle.wait()
    assert slept == [1.5]


# --------------------------------------------------------------------------- the cache


def _serve_2330(exchange):
    exchange.routes[("STOCK_DAY", "2330|20241101")] = recorded("twse_STOCK_DAY_2330_202411_partial_to_1108.json")
    exchange.routes[("STOCK_DAY", "2330|20250501")] = recorded("twse_STOCK_DAY_2330_202505_partial_to_0516.json")


def test_cache_fetches_only_missing_months(tmp_path, exchange, client_for):
    _serve_2330(exchange)
    cache, client = PriceCache(tmp_path), client_for()
    today = dt.date(2026, 11, 22)
    frame = exchanges.update_prices(TSMC, cache, dt.date(2024, 11, 1), dt.date(2024, 11, 30), client, today)
    assert len(frame) == 6 and len(exchange.calls) == 1
    # Same range again: served from the cache, no request.
    exchanges.update_prices(TSMC, cache, dt.date(2024, 11, 1), dt.date(2024, 11, 30), client, today)
    assert len(exchange.calls) == 1
    # A longer range: only the months not cached are asked for (Dec 2024 .. May 2025).
    frame = exchanges.update_prices(TSMC, cache, dt.date(2024, 11, 1), dt.date(2025, 5, 31), client, today)
    assert [c[1] for c in exchange.calls[1:]] == [
        "2330|20241201",
        "2330|20250101",
        "2330|20250201",
        "2330|20250301",
        "2330|20250401",
        "2330|20250501",
    ]
    assert frame.index.min() == pd.Timestamp("2024-11-01") and frame.index.max() == pd.Timestamp("2025-05-16")
    on_disk = (tmp_path / "2330.csv").read_text().splitlines()
    assert on_disk[0] == ",".join(price_files.CSV_COLUMNS)
    assert on_disk[1] == "2024-11-01,61545741,62269386415,996.0,1030.0,996.0,1025.0,-5.0,77404"


def test_current_month_is_refreshed(tmp_path, exchange, client_for):
    _serve_2330(exchange)
    cache, client = PriceCache(tmp_path), client_for()
    today = dt.date(2025, 5, 16)
    exchanges.update_prices(TSMC, cache, dt.date(2025, 5, 1), today, client, today)
    exchanges.update_prices(TSMC, cache, dt.date(2025, 5, 1), today, client, today)
    assert len(exchange.calls) == 2  # the month in progress is never taken as complete


def test_partial_month_is_refetched_after_it_ends(tmp_path, exchange, client_for):
    _serve_2330(exchange)
    cache, client = PriceCache(tmp_path), client_for()
    exchanges.update_prices(TSMC, cache, dt.date(2025, 5, 1), dt.date(2025, 5, 16), client, dt.date(2025, 5, 16))
    exchanges.update_prices(TSMC, cache, dt.date(2025, 5, 1), dt.date(2025, 5, 31), client, dt.date(2025, 7, 1))
    assert len(exchange.calls) == 2  # fetched on 2025-05-16, so May was incomplete


def test_failed_fetch_is_never_cached(tmp_path, exchange, client_for):
    exchange.routes[("STOCK_DAY", "2330|20241101")] = "<html>busy</html>"
    cache = PriceCache(tmp_path)
    with pytest.raises(StockToolError, match="--data-dir"):
        exchanges.update_prices(
            TSMC, cache, dt.date(2024, 11, 1), dt.date(2024, 11, 30), client_for(), dt.date(2026, 1, 1)
        )
    assert not (tmp_path / "2330.csv").exists() and not (tmp_path / "2330.meta.json").exists()
    assert not list(tmp_path.glob(".*tmp"))  # no half-written file either


def test_empty_reply_for_a_listed_month_is_recorded(tmp_path, exchange, client_for):
    cache = PriceCache(tmp_path)
    _serve_2330(exchange)  # December 2024 answers "no data"
    exchanges.update_prices(TSMC, cache, dt.date(2024, 11, 1), dt.date(2024, 12, 31), client_for(), dt.date(2026, 1, 1))
    assert cache.load_meta("2330")["empty"] == ["2024-12"]
    exchanges.update_prices(TSMC, cache, dt.date(2024, 11, 1), dt.date(2024, 12, 31), client_for(), dt.date(2026, 1, 1))
    assert len(exchange.calls) == 2


def test_offline_reads_shared_csvs_without_requests(shared_data):
    price_dir = price_files.resolve_price_dir(shared_data / "prices")
    assert price_dir == shared_data / "prices"
    frame = exchanges.update_prices(
        Company("2353", "宏碁", "twse"), PriceCache(price_dir), dt.date(2024, 12, 1), dt.date(2026, 4, 30), None
    )
    assert frame.index[0] == pd.Timestamp("2024-12-09") and frame.index[-1] == pd.Timestamp("2026-04-30")
    assert frame.loc["2024-12-09", "Turnover"] != frame.loc["2024-12-09", "Turnover"]  # blank stays NaN
    assert list(frame.columns) == list(data_args.FRAME_COLUMNS.values())


def test_no_trade_day_in_shared_data_is_dropped(shared_data):
    frame = price_files.parse_price_csv(shared_data / "prices" / "2317.csv")
    assert pd.Timestamp("2025-07-30") not in frame.index
    assert not frame[["Open", "High", "Low", "Close"]].isna().any().any()


def test_offline_without_cache_says_what_to_do(tmp_path):
    with pytest.raises(StockToolError, match="--data-dir"):
        exchanges.update_prices(TSMC, PriceCache(tmp_path), dt.date(2025, 1, 1), dt.date(2025, 2, 1), None)


# --------------------------------------------------------------------------- companies


def test_spec_company_list_resolves():
    companies = company_list.load_company_list(ROOT / "data" / "companies.json")
    by_code = {c.code: c for c in companies}
    assert len(companies) == 41
    assert sorted(c.code for c in companies if c.market == "tpex") == sorted(
        ["3088", "5371", "6125", "6245", "8234", "3540", "6569", "5474"]
    )
    assert by_code["3048"].name_zh == "益登" and by_code["6569"].name_zh == "醫揚"
    assert all(c.name_en for c in companies)


@pytest.mark.parametrize(
    "entry, code",
    [
        ({"name_zh": "台積電"}, "2330"),
        ({"name_zh": "日月光"}, "3711"),  # listed as 日月光投控
        ({"name_zh": "益登科技"}, "3048"),  # listed as 益登
        ({"code": 3711}, "3711"),
        ({"code": "6569"}, "6569"),
        ({"code": 50}, "0050"),  # a JSON integer loses the leading zero
    ],
)
def test_resolve_company(entry, code):
    assert company_list.resolve_company(entry).code == code


def test_unknown_name_suggests_close_matches():
    with pytest.raises(StockToolError, match="台積電"):
        company_list.resolve_company({"name_zh": "台積店"})


def test_unknown_code_is_an_error():
    with pytest.raises(StockToolError, match="unknown stock code '99999'"):
        company_list.resolve_company({"code": "99999"})


def test_company_list_reports_every_bad_entry(tmp_path):
    path = tmp_path / "list.json"
    path.write_text(json.dumps([{"name_zh": "台積電"}, {"code": "99999"}, {"name_zh": "不存在公司"}, {}]))
    with pytest.raises(StockToolError) as err:
        company_list.load_company_list(path)
    assert "3 problem(s)" in str(err.value)


@pytest.mark.parametrize("text", ["{not json", "{}", "[]", '["2330"]'])
def test_malformed_company_list(tmp_path, text):
    path = tmp_path / "list.json"
    path.write_text(text)
    with pytest.raises(StockToolError, match="company list file"):
        company_list.load_company_list(path)


def test_the_one_retry_loop_backs_off_and_stops_at_once_on_another_error():
    from utils import Retry, with_retries

    sleeps, calls = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise Retry(f"attempt {len(calls)} failed")
        return "ok"

    assert with_retries(flaky, 3, 2.0, sleeps.append, StockToolError) == "ok" and sleeps == [2.0, 4.0]

    def failing():
        raise Retry("HTTP 500")

    with pytest.raises(StockToolError, match="^gave up: HTTP 500$"):
        with_retries(failing, 2, 1.0, sleeps.append, lambda last: StockToolError(f"gave up: {last}"))

    def refused():
        calls.append(1)
        raise StockToolError("refused the key")

    calls.clear()
    with pytest.raises(StockToolError, match="refused the key"):
        with_retries(refused, 5, 1.0, sleeps.append, StockToolError)
    assert len(calls) == 1
