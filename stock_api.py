"""Client for the trading server of the spec (http://140.116.86.242:8081/stock/api/v1).

The protocol:
- GET  {base}/api_get_stock_info_from_date_json/{code}/{start YYYYMMDD}/{stop YYYYMMDD}
       → {"result": "success", "data": [{"date": unix seconds, "open", "high", "low", "close", "capacity", ...}]}
         (newest first);
- POST {base}/get_user_stocks   form account, password → {"result": "success", "data": [holdings]};
- POST {base}/buy, {base}/sell  form account, password, stock_code, stock_shares (lots of 1,000 shares),
       stock_price → {"result": ..., "status": ...} (an order reservation).

Every call has a timeout. Reads are retried with backoff; an order is sent once and never retried: when
its reply is lost, the order may or may not exist, and only the holdings can tell.
Credentials come from STOCK_API_ACCOUNT / STOCK_API_PASSWORD (or flags) and never appear in a message,
a log line or a file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import time
from collections import namedtuple
from dataclasses import dataclass, field

import pandas as pd

from market.daily_reports import to_number
from market.exchanges import ExchangeUnavailable
from market.price_files import rows_to_frame
from utils import TAIPEI, Retry, StockToolError, with_retries

log = logging.getLogger("stock.api")

DEFAULT_BASE_URL = "http://140.116.86.242:8081/stock/api/v1"
SHARES_PER_LOT = 1000


class StockApiError(StockToolError):
    """The trading server failed, refused or answered something that is not its protocol."""


class OrderOutcomeUnknown(StockApiError):
    """An order was sent but no usable reply came back: it may or may not have been placed."""


class OrderRefused(StockApiError):
    """The server answered an order with a result other than success."""

    def __init__(self, message: str, body: dict):
        super().__init__(message)
        self.body = body


@dataclass(frozen=True)
class Credentials:
    account: str = field(repr=False)
    password: str = field(repr=False)

    @classmethod
    def from_env(cls, account: str | None = None, password: str | None = None) -> Credentials:
        account = account or os.environ.get("STOCK_API_ACCOUNT", "")
        password = password or os.environ.get("STOCK_API_PASSWORD", "")
        if not account or not password:
            raise StockToolError(
                "the trading server needs an account: set STOCK_API_ACCOUNT and STOCK_API_PASSWORD "
                "(or --api-account / --api-password)"
            )
        return cls(account, password)

    @property
    def tag(self) -> str:
        """A stable, non-reversible name for the account in logs and the trade journal."""
        return "acct-" + hashlib.sha256(self.account.encode("utf-8")).hexdigest()[:12]

    def form(self) -> dict:
        return {"account": self.account, "password": self.password}


@dataclass(frozen=True)
class Holding:
    code: str
    shares: int  # in lots of 1,000 shares, as the server counts them
    raw: dict = field(repr=False, compare=False, default_factory=dict)


@dataclass(frozen=True)
class OrderResult:
    accepted: bool
    result: str
    status: str
    raw: dict


# twstock's row shape, so that `market_data.update_prices` can cache the server's prices as it caches twstock's
Row = namedtuple("Row", "date capacity turnover open high low close change transaction")

_HOLDING_CODE_KEYS = ("stock_code_id", "stock_code", "code", "stock_id")
_HOLDING_SHARE_KEYS = ("shares", "stock_shares", "amount", "lots")


@dataclass
class StockApiClient:
    base_url: str = field(default_factory=lambda: os.environ.get("STOCK_API_URL", DEFAULT_BASE_URL))
    timeout: float = 10.0
    retries: int = 3
    backoff: float = 2.0
    sleep: object = time.sleep
    requests_made: int = 0

    # ----------------------------------------------------------------- transport

    def _call(self, method: str, path: str, data: dict | None = None, retry: bool = True) -> dict:
        import requests

        url = f"{self.base_url.rstrip('/')}/{path}"
        attempts = self.retries if retry else 1

        def attempt() -> dict:
            self.requests_made += 1
            try:
                response = requests.request(method, url, data=data, timeout=self.timeout)
            except requests.Timeout as exc:
                if not retry:
                    raise OrderOutcomeUnknown(
                        f"{path}: no reply within {self.timeout:g} s; the order may or may not have been placed "
                        "(check the holdings before trying again)"
                    ) from exc
                raise Retry(f"no reply within {self.timeout:g} s") from None
            except requests.RequestException as exc:
                last = f"{type(exc).__name__}"  # the exception text may carry the form (credentials)
                if not retry:
                    raise StockApiError(f"{path}: could not reach {self.base_url} ({last}); nothing was sent") from exc
                raise Retry(last) from None
            if response.status_code != 200:
                if not retry:
                    raise OrderOutcomeUnknown(
                        f"{path}: HTTP {response.status_code}; the order may or may not have been placed "
                        "(check the holdings before trying again)"
                    )
                raise Retry(f"HTTP {response.status_code}")
            try:
                body = response.json()
            except ValueError:
                if not retry:
                    raise OrderOutcomeUnknown(
                        f"{path}: the reply is not JSON; the order may or may not have been placed"
                    ) from None
                raise Retry("the reply is not JSON") from None
            if not isinstance(body, dict):
                raise StockApiError(f"{path}: the reply is not a JSON object")
            return body

        def failure(last: str) -> StockApiError:
            return StockApiError(f"{path} on {self.base_url} failed {attempts} time(s): {last}")

        return with_retries(attempt, attempts, self.backoff, self.sleep, failure)

    @staticmethod
    def _success(body: dict, what: str) -> list:
        if body.get("result") != "success":
            raise StockApiError(f"{what}: the server answered result={body.get('result')!r} ({body.get('status', '')})")
        data = body.get("data")
        if not isinstance(data, list):
            raise StockApiError(f"{what}: the reply has no data list")
        return data

    # ----------------------------------------------------------------- reads

    def price_history(self, code: str, start: dt.date, stop: dt.date) -> pd.DataFrame:
        """The server's daily prices for [start, stop] as the canonical frame (oldest first)."""
        path = f"api_get_stock_info_from_date_json/{code}/{start:%Y%m%d}/{stop:%Y%m%d}"
        return rows_to_frame(self.fetch_rows(path, f"prices of {code}"))

    def fetch_rows(self, path: str, what: str) -> list[Row]:
        rows = []
        for item in self._success(self._call("GET", path), what):
            try:
                day = dt.datetime.fromtimestamp(int(item["date"]), TAIPEI).date()
                rows.append(
                    Row(
                        day,
                        to_number(item.get("capacity")),
                        to_number(item.get("turnover")),
                        to_number(item["open"]),
                        to_number(item["high"]),
                        to_number(item["low"]),
                        to_number(item["close"]),
                        to_number(item.get("change")),
                        to_number(item.get("transaction")),
                    )
                )
            except (KeyError, TypeError, ValueError, OverflowError) as exc:
                raise StockApiError(f"{what}: a row does not parse ({type(exc).__name__}: {exc})") from exc
        return sorted(rows, key=lambda r: r.date)  # the server sends newest first

    def holdings(self, credentials: Credentials) -> list[Holding]:
        """The account's holdings (a POST, but a read: retried like one)."""
        data = self._success(self._call("POST", "get_user_stocks", credentials.form()), "holdings")
        holdings = []
        for item in data:
            code = next((item[k] for k in _HOLDING_CODE_KEYS if k in item), None)
            shares = next((item[k] for k in _HOLDING_SHARE_KEYS if k in item), None)
            if code is None or shares is None:
                raise StockApiError(
                    f"holdings: an entry has none of {_HOLDING_CODE_KEYS} or none of {_HOLDING_SHARE_KEYS} "
                    f"(keys: {sorted(item)})"
                )
            holdings.append(Holding(str(code).strip(), int(float(shares)), item))
        return holdings

    # ----------------------------------------------------------------- orders (sent once, never retried)

    def buy(self, credentials: Credentials, code: str, lots: int, price: float) -> OrderResult:
        return self._order("buy", credentials, code, lots, price)

    def sell(self, credentials: Credentials, code: str, lots: int, price: float) -> OrderResult:
        return self._order("sell", credentials, code, lots, price)

    def _order(self, side: str, credentials: Credentials, code: str, lots: int, price: float) -> OrderResult:
        if lots < 1 or not price > 0:
            raise StockApiError(f"{side} {code}: lots must be at least 1 and the price positive")
        form = credentials.form() | {"stock_code": code, "stock_shares": lots, "stock_price": price}
        body = self._call("POST", side, form, retry=False)
        if body.get("result") != "success":
            raise OrderRefused(
                f"{side} {code}: the server refused the order: result={body.get('result')!r}, "
                f"status={body.get('status', '')!r}",
                body,
            )
        return OrderResult(True, str(body.get("result")), str(body.get("status", "")), body)


class ServerPriceSource:
    """The trading server as a price source for the pipeline: `fetch_month` like `market_data.ExchangeClient`."""

    def __init__(self, client: StockApiClient | None = None):
        self.client = client or StockApiClient()

    @property
    def requests_made(self) -> int:
        return self.client.requests_made

    def fetch_month(self, company, year: int, month: int) -> list[Row]:
        start = dt.date(year, month, 1)
        stop = (start + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(days=1)
        path = f"api_get_stock_info_from_date_json/{company.code}/{start:%Y%m%d}/{stop:%Y%m%d}"
        try:
            return self.client.fetch_rows(path, f"prices of {company.code} {year}-{month:02d}")
        except StockApiError as exc:
            raise ExchangeUnavailable(str(exc)) from exc
