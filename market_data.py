"""Prices from the exchanges: company resolution, twstock month fetches, and the on-disk CSV cache.

This is the I/O boundary of the pipeline. Raw exchange strings ("45,851,963", "--", ROC dates) are
parsed here by twstock's own parsers and never leave this module: callers get one canonical frame
(DatetimeIndex `Date`; Open/High/Low/Close/Volume plus Turnover/Change/Transaction), which is what
mplfinance takes and what `dataset.py` windows. A price file may also be in the common layout of other
markets' data, `Date,Open,High,Low,Close,Volume` (docs/data.md): it is read into the same frame, without
turnover, change and transaction, and used as given, never fetched or rewritten.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

import company_names
from utils import (
    Retry,
    StockToolError,
    atomic_write_text,
    read_user_text,
    taipei_today,
    with_retries,
    write_json,
)

log = logging.getLogger("stock.prices")

# Columns of the cache CSV: twstock's order (the spec's CSV), plus the optional `source` that
# ../shared/data adds. Canonical frame columns map onto them one to one.
CSV_COLUMNS = ["date", "capacity", "turnover", "open", "high", "low", "close", "change", "transaction"]
FRAME_COLUMNS = {
    "open": "Open",
    "high": "High",
    "low": "Low",
    "close": "Close",
    "capacity": "Volume",
    "turnover": "Turnover",
    "change": "Change",
    "transaction": "Transaction",
}
# The common layout of other markets' daily prices (Yahoo's CSV): header names matched case-insensitively, with
# spaces or underscores alike (`Adj Close`, `adj_close`), each mapped onto the twstock column it fills. `Adj
# Close` may be there too; candles are the traded prices, so it is not used.
COMMON_LAYOUT = {"date": "date", "open": "open", "high": "high", "low": "low", "close": "close", "volume": "capacity"}
COMMON_LAYOUT_NAME = "Date,Open,High,Low,Close,Volume"
ADJ_CLOSE = "adj close"
NOT_IN_COMMON_LAYOUT = ("turnover", "change", "transaction")  # prompt fields such a file cannot give
# a date as written, optionally with a time and an offset (yfinance writes "2024-01-02 00:00:00-05:00")
COMMON_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?")
TWSE_BASE_URL = "https://www.twse.com.tw/"
TPEX_BASE_URL = "https://www.tpex.org.tw/"
DEFAULT_COMPANY_FILE = Path(__file__).with_name("data") / "companies.json"  # the spec's 41 companies


@dataclass(frozen=True)
class Company:
    code: str
    name_zh: str
    market: str  # "twse" (上市) or "tpex" (上櫃)
    name_en: str = ""
    listed: dt.date | None = None

    @classmethod
    def from_saved(cls, saved: dict) -> Company:
        """Back from `asdict` + JSON (as in an adapter's stock_config.json)."""
        listed = saved.get("listed")
        listed = dt.date.fromisoformat(listed) if isinstance(listed, str) else listed
        return cls(saved["code"], saved["name_zh"], saved["market"], saved.get("name_en", ""), listed)


# --------------------------------------------------------------------------- companies


def _code_table() -> dict[str, object]:
    """twstock's bundled TWSE + TPEx code tables (no network)."""
    from twstock.codes import codes

    return codes


def _parse_listing_date(text: str) -> dt.date | None:
    try:
        return dt.datetime.strptime(text, "%Y/%m/%d").date()
    except (TypeError, ValueError):
        return None


def _company_from_row(row, name_en: str = "") -> Company:
    return Company(
        code=row.code,
        name_zh=row.name,
        market=row.data_source,
        name_en=name_en,
        listed=_parse_listing_date(row.start),
    )


def _normalize_code(raw) -> str:
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        raise StockToolError(f"company code {raw!r} must be a string or an integer")
    code = str(raw).strip()
    # JSON integers lose leading zeros (0050 -> 50); exchange codes have at least four characters.
    if isinstance(raw, int) and len(code) < 4:
        code = code.zfill(4)
    return code


def resolve_company(entry: dict, cache: PriceCache | None = None) -> Company:
    """Turn a company-list entry (`{"name_zh": ...}` and/or `{"code": ...}`) into a Company.

    Names match twstock's table exactly, or by a unique prefix either way ("日月光" is listed as
    "日月光投控"; the spec writes "益登科技" for the listed "益登"), as typed or in traditional characters
    (`company_names`: 台积电 is 台積電). Only common stocks match by name.
    A code twstock does not know is another market's when `cache` holds its prices in the common layout
    (market "csv"; its name is the entry's `name_zh`, else the code).
    """
    table = _code_table()
    name_en = str(entry.get("name_en", "") or "")
    if entry.get("code") not in (None, ""):
        code = _normalize_code(entry["code"])
        if code not in table and cache is not None and cache.is_given(code):
            return Company(code, str(entry.get("name_zh") or "").strip() or code, "csv", name_en)
        if code not in table:
            close = difflib.get_close_matches(code, list(table), n=3)
            hint = f" Close codes: {', '.join(close)}." if close else ""
            raise StockToolError(f"unknown stock code {code!r} (not in twstock's TWSE/TPEx tables).{hint}")
        company = _company_from_row(table[code], name_en)
        given = str(entry.get("name_zh") or "").strip()
        if given and not (given.startswith(company.name_zh) or company.name_zh.startswith(given)):
            log.warning("code %s is %s in twstock's table, not %s; using the code", code, company.name_zh, given)
        return company
    name = str(entry.get("name_zh") or "").strip()
    if not name:
        raise StockToolError(f"company entry {entry!r} has neither 'code' nor 'name_zh'")
    stocks = [row for row in table.values() if row.type == "股票"]
    matches = company_names.matches(name, stocks)  # as typed, or in traditional characters (台积电 → 台積電)
    if len(matches) == 1:
        return _company_from_row(matches[0], name_en)
    if len(matches) > 1:
        listed = ", ".join(f"{r.name} ({r.code})" for r in company_names.by_prominence(matches)[:8])
        raise StockToolError(f"company name {name!r} is ambiguous: {listed}. Give its 'code' instead.")
    close = company_names.suggestions(name, stocks)
    hint = f" Close matches: {', '.join(f'{r.name} ({r.code})' for r in close)}." if close else ""
    raise StockToolError(f"unknown company name {name!r} (not a listed stock in twstock's tables).{hint}")


def load_company_list(path: str | os.PathLike, cache: PriceCache | None = None) -> list[Company]:
    """Read and resolve a company-list JSON file (the spec's format). Every problem is reported at once. Codes
    of other markets resolve when `cache` holds their prices in the common layout (`resolve_company`)."""
    path = Path(path)
    if not path.is_file():
        raise StockToolError(f"company list file {str(path)!r} does not exist")
    try:
        entries = json.loads(read_user_text(path, "company list file"))  # UTF-8, UTF-16 or Big5
    except json.JSONDecodeError as exc:
        raise StockToolError(f"company list file {str(path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise StockToolError(
            f"company list file {str(path)!r} must be a non-empty JSON array of objects such as "
            '{"name_zh": "台積電"} or {"code": "2330"}'
        )
    companies, errors = [], []
    for entry in entries:
        try:
            companies.append(resolve_company(entry, cache))
        except StockToolError as exc:
            errors.append(str(exc))
    if errors:
        raise StockToolError(f"{len(errors)} problem(s) in {path}:\n  " + "\n  ".join(errors))
    unique = list({c.code: c for c in companies}.values())
    if len(unique) < len(companies):
        log.warning("company list names %d companies twice; using each once", len(companies) - len(unique))
    return unique


# --------------------------------------------------------------------------- the cache


def parse_price_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Read a price CSV into the canonical frame: the cache's twstock columns (extra columns such as `source`
    ignored), or the common Date,Open,High,Low,Close,Volume layout of other markets (`from_common_layout`).

    Blank turnover/change/transaction stay NaN (the common layout has none). Days without prices (no trades:
    capacity 0, blank OHLC) are dropped, since there is nothing to learn or plot for them.
    """
    try:
        raw = pd.read_csv(path, dtype={"date": str})
    except pd.errors.EmptyDataError:
        raise StockToolError(f"price file {path} is empty: expected a header and one row per trading day") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise StockToolError(f"price file {path} is not a readable CSV: {exc}") from exc
    if price_layout(raw.columns) == "common":
        raw = from_common_layout(raw, path)
    missing = [c for c in ("date", "open", "high", "low", "close", "capacity") if c not in raw.columns]
    if missing:
        raise StockToolError(
            f"price file {path} lacks column(s) {missing}; expected the twstock columns {CSV_COLUMNS} "
            f"or {COMMON_LAYOUT_NAME}"
        )
    check_price_rows(raw, path)
    return canonical_frame(raw)


def _header_key(name) -> str:
    """A header name as the common layout matches it: 'Adj_Close ' → 'adj close'."""
    return re.sub(r"[\s_]+", " ", str(name).strip().lower())


def price_layout(columns) -> str:
    """The layout of a price file's header: "twstock" (the cache's columns) or "common"
    (Date,Open,High,Low,Close,Volume, any case). A header with a volume column and no `capacity` is common."""
    keys = {_header_key(c) for c in columns}
    return "common" if "volume" in keys and "capacity" not in keys else "twstock"


def from_common_layout(raw: pd.DataFrame, path) -> pd.DataFrame:
    """Rows in the common layout → the same rows in the twstock columns (Volume → capacity; no turnover,
    change or transaction). Dates are YYYY-MM-DD, optionally with a time (the date as written is kept);
    anything else is left for `check_price_rows` to refuse with its line."""
    keys = [_header_key(c) for c in raw.columns]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise StockToolError(f"price file {path}: column(s) {twice} appear twice (header names match in any case)")
    by_key = dict(zip(keys, raw.columns, strict=True))
    missing = [k for k in COMMON_LAYOUT if k not in by_key]
    if missing:
        raise StockToolError(f"price file {path} lacks column(s) {missing} of the {COMMON_LAYOUT_NAME} layout")
    if raw.empty:
        raise StockToolError(f"price file {path} has a header but no rows")
    if ADJ_CLOSE in by_key:
        log.debug("%s: its %r column is not used (candles are the traded prices)", path, by_key[ADJ_CLOSE])
    out = pd.DataFrame({column: raw[by_key[key]] for key, column in COMMON_LAYOUT.items()})
    text = out["date"].astype(str).str.strip()
    dated = text.map(lambda t: COMMON_DATE.fullmatch(t) is not None)
    out["date"] = text.where(~dated, text.str[:10])
    return out


def check_price_rows(raw: pd.DataFrame, path) -> None:
    """Refuse a price CSV whose rows would reach the examples wrong, naming the file and its line: a date that
    is not YYYY-MM-DD, a date twice (which one is right?), a price that is not a number, or a candle that
    cannot be (high below low, open or close outside them). A blank price row (a day without trades) is fine."""

    def refuse(mask: pd.Series, what) -> None:
        if mask.any():
            first = int(mask.to_numpy().nonzero()[0][0])
            more = f" (and {int(mask.sum()) - 1} more line(s))" if mask.sum() > 1 else ""
            raise StockToolError(f"price file {path}, line {first + 2}: {what(first)}{more}; fix or remove the row")

    dates = pd.to_datetime(raw["date"], format="%Y-%m-%d", errors="coerce")
    refuse(dates.isna(), lambda i: f"date {raw['date'].iloc[i]!r} is not YYYY-MM-DD")
    refuse(dates.duplicated(keep="first"), lambda i: f"the date {raw['date'].iloc[i]} appears twice")
    prices = {}
    for column in ("open", "high", "low", "close", "capacity"):
        text = raw[column].astype(str).str.strip()
        blank = raw[column].isna() | text.isin(["", "--"])  # "--": the exchanges' no-trade mark
        prices[column] = pd.to_numeric(text.where(~blank), errors="coerce")
        refuse(prices[column].isna() & ~blank, lambda i, c=column: f"{c} {raw[c].iloc[i]!r} is not a number")
    o, h, low, c = (prices[k] for k in ("open", "high", "low", "close"))
    impossible = (h < low) | (low > o) | (low > c) | (h < o) | (h < c)  # comparisons with a blank are False
    refuse(impossible, lambda i: "an impossible candle (high below low, or open or close outside low…high)")


def canonical_frame(raw: pd.DataFrame) -> pd.DataFrame:
    """Rows in the twstock columns (date as YYYY-MM-DD text) → the canonical frame, days with prices only."""
    raw = raw.copy()
    for col in CSV_COLUMNS:
        if col not in raw.columns:
            raw[col] = float("nan")
    frame = raw[CSV_COLUMNS].rename(columns=FRAME_COLUMNS)
    frame.index = pd.DatetimeIndex(pd.to_datetime(raw["date"], format="%Y-%m-%d"), name="Date")
    frame = frame.drop(columns="date").apply(pd.to_numeric, errors="coerce")[list(FRAME_COLUMNS.values())].astype(float)
    frame = frame[~frame.index.duplicated(keep="last")].sort_index()
    return frame.dropna(subset=["Open", "High", "Low", "Close"])


def frame_to_csv_text(frame: pd.DataFrame) -> str:
    out = frame.rename(columns={v: k for k, v in FRAME_COLUMNS.items()}).copy()
    out.insert(0, "date", frame.index.strftime("%Y-%m-%d"))
    for col in ("capacity", "turnover", "transaction"):
        out[col] = out[col].astype("Int64")
    return out[CSV_COLUMNS].to_csv(index=False)


def rows_to_frame(rows) -> pd.DataFrame:
    """twstock DATATUPLE rows (already parsed by twstock) → canonical frame."""
    records = [
        {
            "Date": pd.Timestamp(r.date),
            "Open": r.open,
            "High": r.high,
            "Low": r.low,
            "Close": r.close,
            "Volume": r.capacity,
            "Turnover": r.turnover,
            "Change": r.change,
            "Transaction": r.transaction,
        }
        for r in rows
    ]
    columns = list(FRAME_COLUMNS.values())
    if not records:
        return pd.DataFrame(columns=columns, index=pd.DatetimeIndex([], name="Date"), dtype=float)
    frame = pd.DataFrame.from_records(records).set_index("Date")[columns].astype(float)
    return frame


def resolve_price_dir(data_dir: str | os.PathLike) -> Path:
    """`<data-dir>/prices` when it exists or `data-dir` holds no CSVs; else `data-dir` itself.

    The second case lets `--data-dir ../shared/data/prices` (a folder of price CSVs) act as the cache.
    """
    data_dir = Path(data_dir)
    sub = data_dir / "prices"
    if sub.is_dir() or not any(data_dir.glob("*.csv")):
        return sub
    return data_dir


@dataclass
class PriceCache:
    """`<dir>/<code>.csv` plus `<dir>/<code>.meta.json` recording when each month was fetched."""

    directory: Path

    def csv_path(self, code: str) -> Path:
        return self.directory / f"{code}.csv"

    def meta_path(self, code: str) -> Path:
        return self.directory / f"{code}.meta.json"

    def load(self, code: str) -> pd.DataFrame | None:
        path = self.csv_path(code)
        return parse_price_csv(path) if path.is_file() else None

    def is_given(self, code: str) -> bool:
        """Whether `code`'s file is in the common layout (another market's prices): used as it is, never fetched
        or rewritten."""
        path = self.csv_path(code)
        if not path.is_file():
            return False
        try:
            header = pd.read_csv(path, nrows=0).columns
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError):
            return False  # reading it says what is wrong
        return price_layout(header) == "common"

    def check_fields(self, code: str, fields: list[str]) -> None:
        """Refuse prompt fields a common-layout file cannot give (turnover, change, transaction)."""
        missing = [f for f in fields if f in NOT_IN_COMMON_LAYOUT]
        if missing and self.is_given(code):
            raise StockToolError(
                f"the prompt fields {missing} are not in {self.csv_path(code)} (the {COMMON_LAYOUT_NAME} layout "
                "has no turnover, change or transaction); use --fields ohlcv, or an adapter trained with it"
            )

    def load_meta(self, code: str) -> dict:
        path = self.meta_path(code)
        if not path.is_file():
            return {"fetched": {}, "empty": []}
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            log.warning("%s is corrupt; treating its months as not fetched", path)
            return {"fetched": {}, "empty": []}
        meta.setdefault("fetched", {})
        meta.setdefault("empty", [])
        return meta

    def save(self, code: str, frame: pd.DataFrame, meta: dict) -> None:
        atomic_write_text(self.csv_path(code), frame_to_csv_text(frame))
        write_json(self.meta_path(code), meta)


# --------------------------------------------------------------------------- fetching


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
        frame = frame[~frame.index.duplicated(keep="last")].sort_index()
        cache.save(company.code, frame, meta)
    sliced = None
    if frame is not None:
        sliced = frame.loc[pd.Timestamp(start) : pd.Timestamp(end)].dropna(subset=["Open", "High", "Low", "Close"])
    if sliced is None or sliced.empty:
        raise StockToolError(f"no prices for {company.code} {company.name_zh} between {start} and {end}")
    return sliced
