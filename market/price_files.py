"""Price files: the cache's CSV (twstock's columns) or another market's common layout, parsed once into the
canonical frame (DatetimeIndex `Date`; Open/High/Low/Close/Volume plus Turnover/Change/Transaction).
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from config.data_args import FRAME_COLUMNS
from utils import (
    StockToolError,
    atomic_write_text,
    write_json,
)

log = logging.getLogger("stock.prices")


# Columns of the cache CSV: twstock's order (the spec's CSV), plus the optional `source` that
# ../shared/data adds. Canonical frame columns map onto them one to one.
CSV_COLUMNS = ["date", "capacity", "turnover", "open", "high", "low", "close", "change", "transaction"]


# The common layout of other markets' daily prices (Yahoo's CSV): header names matched case-insensitively, with
# spaces or underscores alike (`Adj Close`, `adj_close`), each mapped onto the twstock column it fills. `Adj
# Close` may be there too; candles are the traded prices, so it is not used.
COMMON_LAYOUT = {"date": "date", "open": "open", "high": "high", "low": "low", "close": "close", "volume": "capacity"}


COMMON_LAYOUT_NAME = "Date,Open,High,Low,Close,Volume"


ADJ_CLOSE = "adj close"


NOT_IN_COMMON_LAYOUT = ("turnover", "change", "transaction")  # prompt fields such a file cannot give


# a date as written, optionally with a time and an offset (yfinance writes "2024-01-02 00:00:00-05:00")
COMMON_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?")


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
