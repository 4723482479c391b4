"""The exchanges: one month of one stock from TWSE (STOCK_DAY) or TPEx (tradingStock), parsed by twstock,
throttled and retried; and topping up the price cache with the months it lacks.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from dataclasses import dataclass, field

import pandas as pd

from market.company_list import Company
from market.price_files import COMMON_LAYOUT_NAME, PriceCache, rows_to_frame
from utils import (
    Retry,
    StockToolError,
    taipei_today,
    with_retries,
)

log = logging.getLogger("stock.prices")


TWSE_BASE_URL = "https://www.twse.com.tw/"


TPEX_BASE_URL = "https://www.tpex.org.tw/"


class Throttle:
    """At most one request per `interval` seconds: the exchanges ban clients above ~3 requests / 5 s."""

    def __init__(self, interval: float, clock=time.monotonic, sleep=time.sleep):
        self.interval = interval
        self._clock, self._sleep = clock, sleep
        self._last: float | None = None

    def wait(self) -> None:
        if self._last is not None:
            remaining = self.interval - (self._clock() - self._last)
            if remaining > 0:
                self._sleep(remaining)
        self._last = self._clock()


class ExchangeUnavailable(StockToolError):
    """The exchange could not be reached or kept failing."""


@dataclass
class ExchangeClient:
    """One month of one stock from TWSE (STOCK_DAY) or TPEx (tradingStock), parsed by twstock.

    twstock's own `fetch` has no timeout and, after failed retries, returns an empty list that looks
    exactly like "no trades this month". We issue the request ourselves (timeout, throttle, backoff)
    and hand the JSON to twstock's parsers, so a failure is raised, never cached as "no data".
    """

    twse_url: str = field(default_factory=lambda: os.environ.get("TWSE_BASE_URL", TWSE_BASE_URL))
    tpex_url: str = field(default_factory=lambda: os.environ.get("TPEX_BASE_URL", TPEX_BASE_URL))
    timeout: float = 15.0
    retries: int = 3
    backoff: float = 5.0
    throttle: Throttle = field(default_factory=lambda: Throttle(2.0))
    sleep: object = time.sleep
    requests_made: int = 0

    def _session(self):
        from twstock.proxy import get_session  # twstock's session: it copes with the exchanges' certificates

        return get_session()

    def _request(self, url: str, params: dict) -> dict:
        import requests

        def attempt() -> dict:
            self.throttle.wait()
            self.requests_made += 1
            try:
                response = self._session().get(url, params=params, timeout=self.timeout)
            except requests.RequestException as exc:
                raise Retry(f"{type(exc).__name__}: {exc}") from None
            if response.status_code != 200:
                raise Retry(f"HTTP {response.status_code}")
            try:
                body = response.json()
            except ValueError:
                raise Retry("the reply was not JSON (the exchange answers HTML when it throttles a client)") from None
            if not isinstance(body, dict):
                raise Retry("the reply was not a JSON object")
            return body

        def failure(last: str) -> ExchangeUnavailable:
            return ExchangeUnavailable(f"{url} failed {self.retries} time(s): {last}")

        return with_retries(attempt, self.retries, self.backoff, self.sleep, failure)

    @staticmethod
    def _parse(purify, body: dict, company: Company, year: int, month: int) -> list:
        try:
            return purify(body)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise ExchangeUnavailable(
                f"the reply for {company.code} {year}-{month:02d} did not parse ({type(exc).__name__}: {exc})"
            ) from exc

    def fetch_month(self, company: Company, year: int, month: int) -> list:
        """twstock DATATUPLE rows for one month; [] only when the exchange says there is no data."""
        from twstock.stock import TPEXFetcher, TWSEFetcher

        if company.market == "tpex":
            url = self.tpex_url.rstrip("/") + "/www/zh-tw/afterTrading/tradingStock"
            body = self._request(url, {"date": f"{year}/{month:02d}/01", "code": company.code, "response": "json"})
            if str(body.get("stat", "")).lower() != "ok":
                raise ExchangeUnavailable(
                    f"TPEx answered stat={body.get('stat')!r} for {company.code} {year}-{month:02d}"
                )
            return self._parse(TPEXFetcher().purify, body, company, year, month)
        url = self.twse_url.rstrip("/") + "/exchangeReport/STOCK_DAY"
        body = self._request(url, {"date": f"{year}{month:02d}01", "stockNo": company.code, "response": "json"})
        stat = str(body.get("stat", ""))
        if stat == "OK":
            return self._parse(TWSEFetcher().purify, body, company, year, month)
        if "沒有符合條件" in stat:  # the exchange's own "no matching data" answer
            return []
        raise ExchangeUnavailable(f"TWSE answered stat={stat!r} for {company.code} {year}-{month:02d}")


def month_range(start: dt.date, end: dt.date) -> list[tuple[int, int]]:
    months, y, m = [], start.year, start.month
    while (y, m) <= (end.year, end.month):
        months.append((y, m))
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return months


def months_to_fetch(
    frame: pd.DataFrame | None, meta: dict, start: dt.date, end: dt.date, today: dt.date
) -> list[tuple[int, int]]:
    """Months in [start, end] the cache does not hold completely.

    A month counts as held when the CSV has rows in it (or the exchange said it had none), unless it
    is the current month (always refreshed) or was fetched before it ended (partial).
    """
    have = set() if frame is None else {(d.year, d.month) for d in frame.index}
    needed = []
    for y, m in month_range(start, end):
        key = f"{y}-{m:02d}"
        if (y, m) == (today.year, today.month):
            needed.append((y, m))
            continue
        if (y, m) not in have and key not in meta["empty"]:
            needed.append((y, m))
            continue
        fetched_at = meta["fetched"].get(key)
        next_month = dt.date(y + (m == 12), 1 if m == 12 else m + 1, 1)
        if fetched_at and dt.date.fromisoformat(fetched_at[:10]) < next_month:
            needed.append((y, m))
    return needed


def _fetch_months(company: Company, client: ExchangeClient, cached: tuple, needed: list, today: dt.date):
    """The cached frame with the months `needed` fetched anew in place of theirs; `meta` (of `cached` =
    (frame, meta)) records each month's fetch date and whether it came back empty."""
    frame, meta = cached
    parts = [] if frame is None else [frame]
    for y, m in needed:
        try:
            rows = client.fetch_month(company, y, m)
        except ExchangeUnavailable as exc:
            raise StockToolError(
                f"could not fetch {company.code} {company.name_zh} {y}-{m:02d}: {exc}. The exchange is "
                "unreachable or refusing requests; retry later, or use cached prices with --data-dir "
                "(and --offline to skip fetching)"
            ) from exc
        key = f"{y}-{m:02d}"
        month = rows_to_frame(rows)
        if parts:
            parts = [p[~((p.index.year == y) & (p.index.month == m))] for p in parts]
        parts.append(month)
        meta["fetched"][key] = today.isoformat()  # Taipei date: a month fetched before it ended is partial
        if month.empty:
            meta["empty"] = sorted(set(meta["empty"]) | {key})
        else:
            meta["empty"] = [k for k in meta["empty"] if k != key]
    frame = pd.concat([p for p in parts if not p.empty]) if any(not p.empty for p in parts) else rows_to_frame([])
    return frame[~frame.index.duplicated(keep="last")].sort_index()


def update_prices(
    company: Company,
    cache: PriceCache,
    start: dt.date,
    end: dt.date,
    client: ExchangeClient | None,
    today: dt.date | None = None,
) -> pd.DataFrame:
    """Bring one company's cache up to date for [start, end] and return that slice of it.

    `client=None` means offline: the cache is used as it is and gaps are reported, not filled. A file in the
    common layout (another market's prices, `PriceCache.is_given`) is used as it is online too: it is never
    fetched from the exchanges nor rewritten.
    """
    today = today or taipei_today()
    if company.listed and company.listed > start:
        start = company.listed
    frame = cache.load(company.code)
    meta = cache.load_meta(company.code)
    needed = months_to_fetch(frame, meta, start, end, today)
    if cache.is_given(company.code):
        if needed and client is not None:
            path = cache.csv_path(company.code)
            log.info("%s: %s is in the %s layout: used as given, not fetched", company.code, path, COMMON_LAYOUT_NAME)
        needed = []
    if needed and client is None:
        if frame is None or frame.empty:
            raise StockToolError(
                f"no cached prices for {company.code} {company.name_zh} in {cache.directory} and --offline is set; "
                "point --data-dir at a folder of price CSVs or drop --offline"
            )
        log.info("%s: offline, %d month(s) not in the cache are skipped", company.code, len(needed))
    elif needed:
        frame = _fetch_months(company, client, (frame, meta), needed, today)
        cache.save(company.code, frame, meta)
    sliced = None
    if frame is not None:
        sliced = frame.loc[pd.Timestamp(start) : pd.Timestamp(end)].dropna(subset=["Open", "High", "Low", "Close"])
    if sliced is None or sliced.empty:
        raise StockToolError(f"no prices for {company.code} {company.name_zh} between {start} and {end}")
    return sliced
