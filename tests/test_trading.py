"""The trading-server client and the decision mode, against a real HTTP server on 127.0.0.1.

The server implements the protocol of stock_api.py (its replies are shaped after the protocol, not
recorded: the real server is unreachable from here) and its failures: HTTP 500, result=failed, replies
slower than the timeout, malformed JSON.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from urllib.parse import parse_qs

import numpy as np
import pandas as pd
import pytest

import main as cli
import model
import stock_api
from config import data_args
from conftest import LocalServer, WordTokenizer, argv, candles, write_price_csv
from llm import generation
from prompts import prompt_format
from trading import trade_rules
from utils import TAIPEI

ACCOUNT, PASSWORD = "student-0042", "s3cret-pw-XYZ"


class TradingServer(LocalServer):
    def __init__(self, prices: dict[str, pd.DataFrame], holdings: list[dict]):
        self.prices, self.holdings = prices, holdings
        self.orders: list[dict] = []
        self.requests: list[str] = []
        self.failures: dict[str, list] = {}  # path → failure modes for the next calls: 500, "failed", "slow", "junk"
        super().__init__()
        self.url = self.root + "/stock/api/v1"

    def _failure(self, name: str) -> tuple[int, str] | None:
        modes = self.failures.get(name)
        mode = modes.pop(0) if modes else None
        if mode == 500:
            return 500, "internal error"
        if mode == "failed":
            return 200, json.dumps({"result": "failed", "status": "not allowed now"})
        if mode == "slow":
            time.sleep(1.0)
            return 200, json.dumps({"result": "success", "data": [], "status": "late"})
        if mode == "junk":
            return 200, "<html>oops"
        return None

    def respond(self, method, path, headers, body):
        return self._history(path) if method == "GET" else self._post(path, body)

    def _history(self, path: str):
        parts = path.split("/")
        self.requests.append("GET " + "/".join(parts[-4:]))
        failure = self._failure("history")
        if failure:
            return failure
        code, start, stop = parts[-3], parts[-2], parts[-1]
        frame = self.prices.get(code)
        rows = []
        if frame is not None:
            window = frame.loc[pd.Timestamp(start) : pd.Timestamp(stop)]
            for day, r in window.iloc[::-1].iterrows():  # newest first, as the server sends them
                stamp = int(dt.datetime(day.year, day.month, day.day, tzinfo=TAIPEI).timestamp())
                rows.append(
                    {
                        "date": stamp,
                        "open": r.Open,
                        "high": r.High,
                        "low": r.Low,
                        "close": r.Close,
                        "capacity": int(r.Volume),
                        "stock_code_id": code,
                    }
                )
        return 200, json.dumps({"result": "success", "data": rows})

    def _post(self, path: str, body: str):
        name = path.rsplit("/", 1)[-1]
        form = {k: v[0] for k, v in parse_qs(body).items()}
        self.requests.append(f"POST {name}")
        if name in ("buy", "sell"):
            self.orders.append({"side": name, **form})  # received, whatever the reply
        failure = self._failure(name)
        if failure:
            return failure
        if form.get("account") != ACCOUNT or form.get("password") != PASSWORD:
            return 200, json.dumps({"result": "failed", "status": "wrong account or password"})
        if name == "get_user_stocks":
            return 200, json.dumps({"result": "success", "data": self.holdings})
        return 200, json.dumps({"result": "success", "status": f"{name} order reserved"})


PRICES = {
    "2330": candles(np.linspace(1800, 1900, 40)),
    "2317": candles(np.linspace(200, 180, 40)),
    "2303": candles(np.full(40, 50.0)),
}


@pytest.fixture
def server():
    s = TradingServer(PRICES, holdings=[{"stock_code_id": "2317", "shares": 2, "beginning_price": 190.0}])
    yield s
    s.close()


def client(server, **kw) -> stock_api.StockApiClient:
    return stock_api.StockApiClient(base_url=server.url, timeout=kw.pop("timeout", 5.0), sleep=lambda s: None, **kw)


CREDS = stock_api.Credentials(ACCOUNT, PASSWORD)


# --------------------------------------------------------------------------- pure rules


def test_tick_sizes_and_rounding():
    assert [trade_rules.tick_size(p) for p in (9.99, 10, 49.95, 50, 99.9, 100, 499.5, 500, 999, 1000)] == [
        0.01,
        0.05,
        0.05,
        0.1,
        0.1,
        0.5,
        0.5,
        1.0,
        1.0,
        5.0,
    ]
    assert (
        trade_rules.round_to_tick(1903.2, up=False) == 1900.0 and trade_rules.round_to_tick(1903.2, up=True) == 1905.0
    )
    assert trade_rules.round_to_tick(48.93, up=False) == 48.9 and trade_rules.round_to_tick(48.93, up=True) == 48.95
    assert trade_rules.round_to_tick(499.8, up=True) == 500.0  # crosses into the 1-dollar band
    assert trade_rules.round_to_tick(9.999, up=False) == 9.99


def forecast(closes, first_open):
    index = pd.bdate_range("2026-05-04", periods=len(closes))
    return pd.DataFrame({"Open": [first_open] + list(closes[:-1]), "Close": closes}, index=index)


def test_decisions_follow_the_documented_rule():
    rules = trade_rules.TradeRules(threshold=0.01, max_lots=2, max_positions=1)
    buy = trade_rules.decide("2330", 1900.0, forecast([1950.0, 1960.0], 1912.0), (0, 0), rules)
    assert (buy.side, buy.lots, buy.price) == ("buy", 2, 1910.0)  # 1912 rounded down to the 5-dollar tick
    capped = trade_rules.decide("2330", 100.0, forecast([130.0], 125.0), (0, 0), rules)
    assert capped.price == 110.0  # never above the +10% daily limit
    full = trade_rules.decide("2330", 1900.0, forecast([1950.0], 1912.0), (0, 1), rules)
    assert full.side == "hold" and "max" in full.reason
    sell = trade_rules.decide("2317", 200.0, forecast([190.0], 197.3), (5, 1), rules)
    assert (sell.side, sell.lots, sell.price) == ("sell", 2, 197.5)  # rounded up to the half-dollar tick
    assert trade_rules.decide("2317", 200.0, forecast([190.0], 197.3), (0, 0), rules).side == "hold"  # nothing to sell
    assert (
        trade_rules.decide("2330", 1900.0, forecast([1905.0], 1900.0), (0, 0), rules).side == "hold"
    )  # below threshold
    unusable = trade_rules.decide("2330", 1900.0, None, (0, 0), rules, "unparseable answer")
    assert unusable.side == "hold" and "unparseable" in unusable.reason


# --------------------------------------------------------------------------- the client


def test_price_history_is_parsed_oldest_first_in_taipei_dates(server):
    frame = client(server).price_history("2330", dt.date(2026, 3, 2), dt.date(2026, 3, 13))
    assert list(frame.index.strftime("%Y-%m-%d"))[:3] == ["2026-03-02", "2026-03-03", "2026-03-04"]
    assert len(frame) == 10 and frame["Close"].iloc[0] == pytest.approx(1800.0)
    assert frame["Turnover"].isna().all()  # not in the server's rows: blank, never invented
    assert server.requests[-1] == "GET api_get_stock_info_from_date_json/2330/20260302/20260313"


def test_holdings_and_wrong_credentials(server):
    assert client(server).holdings(CREDS) == [stock_api.Holding("2317", 2)]
    with pytest.raises(stock_api.StockApiError, match="wrong account or password") as info:
        client(server).holdings(stock_api.Credentials(ACCOUNT, "nope"))
    assert "nope" not in str(info.value) and PASSWORD not in repr(CREDS) and ACCOUNT not in repr(CREDS)


def test_reads_are_retried_with_backoff_then_fail_clearly(server):
    waits = []
    api = stock_api.StockApiClient(base_url=server.url, retries=3, backoff=2.0, sleep=waits.append)
    server.failures["get_user_stocks"] = [500, "junk"]
    assert api.holdings(CREDS)[0].code == "2317" and waits == [2.0, 4.0]
    server.failures["history"] = [500, 500, 500]
    with pytest.raises(stock_api.StockApiError, match="failed 3 time"):
        api.price_history("2330", dt.date(2026, 3, 2), dt.date(2026, 3, 6))
    server.failures["history"] = ["slow"] * 3
    with pytest.raises(stock_api.StockApiError, match="no reply within 0.2 s"):
        client(server, timeout=0.2).price_history("2330", dt.date(2026, 3, 2), dt.date(2026, 3, 6))


def test_orders_are_sent_once_and_never_retried(server):
    api = client(server, timeout=0.3)
    assert api.buy(CREDS, "2330", 1, 1900.0).status == "buy order reserved"
    assert server.orders[-1] == {
        "side": "buy",
        "account": ACCOUNT,
        "password": PASSWORD,
        "stock_code": "2330",
        "stock_shares": "1",
        "stock_price": "1900.0",
    }
    for mode, error in (
        (500, stock_api.OrderOutcomeUnknown),
        ("junk", stock_api.OrderOutcomeUnknown),
        ("slow", stock_api.OrderOutcomeUnknown),
        ("failed", stock_api.OrderRefused),
    ):
        before = len(server.orders)
        server.failures["sell"] = [mode]
        with pytest.raises(error):
            api.sell(CREDS, "2317", 1, 190.0)
        assert len(server.orders) == before + 1  # exactly one request, whatever happened
    unreachable = stock_api.StockApiClient(base_url="http://127.0.0.1:9/stock/api/v1", timeout=0.5)
    with pytest.raises(stock_api.StockApiError, match="nothing was sent") as info:
        unreachable.buy(CREDS, "2330", 1, 1900.0)
    assert PASSWORD not in str(info.value)


# --------------------------------------------------------------------------- the decision mode


@pytest.fixture
def work(tmp_path, monkeypatch, server):
    prices = tmp_path / "prices"
    prices.mkdir()
    for code, frame in PRICES.items():
        write_price_csv(prices, code, frame)
    (tmp_path / "companies.json").write_text(json.dumps([{"code": "2330"}, {"code": "2303"}]))
    monkeypatch.setenv("STOCK_API_ACCOUNT", ACCOUNT)
    monkeypatch.setenv("STOCK_API_PASSWORD", PASSWORD)
    monkeypatch.setenv("STOCK_API_URL", server.url)
    fields = data_args.FIELD_SETS["ohlcv"]
    loaded = model.LoadedModel(None, WordTokenizer(), False, {"dataset": {"fields": fields}})
    monkeypatch.setattr(model, "load_for_inference", lambda model_dir, adapter=True: loaded)
    moves = {"台積電": 1.05, "鴻海": 0.95, "聯電": 1.0}  # 2330 up 5%, 2317 down 5%, 2303 flat

    def answer(prompt: str) -> str:
        name = prompt.split("stock price of ")[1].split(" company")[0]
        last = [line for line in prompt.splitlines() if line.startswith("Date: ")][-1]
        close = float(last.split("Close: ")[1].split(",")[0])
        target = round(close * moves[name], 1)
        row = pd.DataFrame(
            {
                "Open": [close],
                "High": [max(close, target) + 1],
                "Low": [min(close, target) - 1],
                "Close": [target],
                "Volume": [1000.0],
            },
            index=pd.DatetimeIndex(["2026-04-27"]),
        )
        return prompt_format.answer_text(row, fields)

    monkeypatch.setattr(
        generation, "generate_samples", lambda _, prompts, *a, **kw: [[answer(p[0]["content"])] for p in prompts]
    )
    return tmp_path


def trade_args(work: Path) -> list[str]:
    return argv(
        "--train 0 --trade 1 --data-dir {work}/prices --offline --end-date 2026-04-24 "
        "--company-list-file {work}/companies.json --output-dir {work}/out --past 5 --future 1",
        work=work,
    )


def journal_lines(work: Path) -> list[dict]:
    files = list((work / "out" / "trades").glob("*.jsonl"))
    return [json.loads(line) for f in files for line in f.read_text().splitlines()]


def everything_written(work: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in (work / "out").rglob("*") if p.is_file())


def test_a_dry_run_plans_and_journals_but_sends_nothing(work, server, capsys):
    assert cli.main(trade_args(work)) == 0
    out = capsys.readouterr()
    assert "DRY RUN" in out.out and "2330 BUY  1 lot(s) @ 1900" in out.out and "2317 SELL 1 lot(s)" in out.out
    assert "2303 HOLD" in out.out
    assert server.orders == [] and "POST get_user_stocks" in server.requests
    statuses = {(r["code"], r["status"]) for r in journal_lines(work)}
    assert statuses == {("2330", "dry-run"), ("2317", "dry-run"), ("2303", "hold")}
    for secret in (ACCOUNT, PASSWORD):
        assert secret not in out.out + out.err and secret not in everything_written(work)


def test_execute_sends_exactly_the_planned_orders_once(work, server, capsys, caplog):
    assert cli.main([*trade_args(work), "--execute"]) == 0
    assert [(o["side"], o["stock_code"], o["stock_shares"], o["stock_price"]) for o in server.orders] == [
        ("sell", "2317", "1", "180.0"),
        ("buy", "2330", "1", "1900.0"),
    ]
    assert cli.main([*trade_args(work), "--execute"]) == 0  # a rerun the same day
    out = capsys.readouterr()
    assert len(server.orders) == 2 and "already 'sent'" in out.out
    for secret in (ACCOUNT, PASSWORD):
        assert secret not in out.out + out.err + caplog.text and secret not in everything_written(work)


def test_a_crash_between_sending_and_logging_never_doubles_the_order(work, server, monkeypatch, capsys):
    real = stock_api.StockApiClient.buy

    def buy_then_crash(self, *args):
        real(self, *args)
        raise KeyboardInterrupt  # the process dies after the server took the order, before the reply is logged

    monkeypatch.setattr(stock_api.StockApiClient, "buy", buy_then_crash)
    assert cli.main([*trade_args(work), "--execute"]) == 130
    assert sum(o["side"] == "buy" for o in server.orders) == 1
    monkeypatch.setattr(stock_api.StockApiClient, "buy", real)
    assert cli.main([*trade_args(work), "--execute"]) == 0
    assert sum(o["side"] == "buy" for o in server.orders) == 1  # not sent again
    assert "already 'sending'" in capsys.readouterr().out


def test_refused_and_unknown_orders_are_journaled_and_block_a_resend(work, server, capsys):
    server.failures["sell"] = ["failed"]
    server.failures["buy"] = [500]
    assert cli.main([*trade_args(work), "--execute"]) == 0
    statuses = [(r["code"], r["status"]) for r in journal_lines(work) if r["status"] != "hold"]
    assert ("2317", "refused") in statuses and ("2330", "unknown") in statuses
    assert cli.main([*trade_args(work), "--execute"]) == 0
    assert len(server.orders) == 2


def test_trade_needs_credentials_and_execute_needs_trade(work, monkeypatch, capsys):
    monkeypatch.delenv("STOCK_API_PASSWORD")
    assert cli.main(trade_args(work)) == 2
    assert "STOCK_API_PASSWORD" in capsys.readouterr().err
    assert cli.main([*trade_args(work)[:2], "--execute"]) == 2
    assert "--execute only applies to --trade 1" in capsys.readouterr().err


def test_the_server_as_a_price_source(tmp_path, server, monkeypatch, capsys):
    monkeypatch.setenv("STOCK_API_URL", server.url)
    (tmp_path / "companies.json").write_text(json.dumps([{"code": "2330"}]))
    from stock_predictor import DataConfig, Settings, StockPredictor

    data = DataConfig(
        data_dir=str(tmp_path / "data"),
        company_list_file=str(tmp_path / "companies.json"),
        year=2026,
        month=3,
        end_date="2026-04-24",
        price_source="server",
    )
    predictor = StockPredictor(Settings(data=data))
    prices = predictor.fetch_prices(predictor.companies())
    assert len(prices["2330"]) == 40 and prices["2330"]["Close"].iloc[-1] == pytest.approx(1900.0)
    gets = [r.split("/", 1)[1] for r in server.requests if r.startswith("GET")]
    assert gets == ["2330/20260301/20260331", "2330/20260401/20260430"]  # one request per month, cached
    assert (tmp_path / "data" / "prices" / "2330.csv").is_file()
