"""Market-wide data: every listed stock's daily candle from the exchanges' daily reports (what
`--choose-stock` picks from) and the TAIEX index (the market's return in the events database).

One request per trading day per exchange (TWSE MI_INDEX, TPEx dailyQuotes) gives every stock's candle,
instead of one request per stock and month (`market_data.py`).
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import os
import re
from pathlib import Path

import pandas as pd

from market.exchanges import ExchangeClient, ExchangeUnavailable, month_range
from market.price_files import CSV_COLUMNS, canonical_frame
from utils import StockToolError, atomic_write_bytes, atomic_write_text, read_user_text, taipei_today

log = logging.getLogger("stock.prices")

MARKET_COLUMNS = ["code", *CSV_COLUMNS]


def to_number(text) -> float:
    """An exchange's or server's number ('45,851,963', '--', '', None) → float, NaN when there is none."""
    if text is None:
        return float("nan")
    text = str(text).replace(",", "").strip()
    if text in ("", "--", "---", "----", "X"):
        return float("nan")
    try:
        return float(text)
    except ValueError:
        return float("nan")


def _column(fields: list[str], *keys: str) -> int:
    clean = [re.sub(r"\s+", "", f) for f in fields]
    for key in keys:
        for i, name in enumerate(clean):
            if name.startswith(key):
                return i
    raise ExchangeUnavailable(f"the daily report has no column {keys[0]!r} (columns: {clean})")


def parse_twse_daily(body: dict, day: dt.date) -> list[dict]:
    """TWSE MI_INDEX (type=ALLBUT0999) → rows; [] for the exchange's "no data" (a holiday)."""
    stat = str(body.get("stat", ""))
    if "沒有符合條件" in stat:
        return []
    if stat != "OK":
        raise ExchangeUnavailable(f"TWSE answered stat={stat!r} for the daily report of {day}")
    tables = [t for t in body.get("tables", []) if "證券代號" in (t.get("fields") or [])]
    if not tables:
        raise ExchangeUnavailable(f"the TWSE daily report of {day} has no stock table")
    table = tables[0]
    f = table["fields"]
    idx = {
        "code": _column(f, "證券代號"),
        "capacity": _column(f, "成交股數"),
        "transaction": _column(f, "成交筆數"),
        "turnover": _column(f, "成交金額"),
        "open": _column(f, "開盤價"),
        "high": _column(f, "最高價"),
        "low": _column(f, "最低價"),
        "close": _column(f, "收盤價"),
        "sign": _column(f, "漲跌(+/-)"),
        "change": _column(f, "漲跌價差"),
    }
    rows = []
    for r in table.get("data", []):
        sign = -1.0 if "-" in re.sub(r"<[^>]*>", "", str(r[idx["sign"]])) else 1.0  # "<p style= color:green>-</p>"
        rows.append(
            {
                "code": str(r[idx["code"]]).strip(),
                "date": day.isoformat(),
                **{k: to_number(r[i]) for k, i in idx.items() if k not in ("code", "sign", "change")},
                "change": sign * to_number(r[idx["change"]]),
            }
        )
    return rows


def parse_tpex_daily(body: dict, day: dt.date) -> list[dict]:
    """TPEx dailyQuotes → rows; [] when the report has no data (a holiday)."""
    if str(body.get("stat", "")).lower() != "ok":
        raise ExchangeUnavailable(f"TPEx answered stat={body.get('stat')!r} for the daily report of {day}")
    tables = [t for t in body.get("tables", []) if t.get("fields")]
    if not tables or not tables[0].get("data"):
        return []
    f = tables[0]["fields"]
    idx = {
        "code": _column(f, "代號"),
        "close": _column(f, "收盤"),
        "change": _column(f, "漲跌"),
        "open": _column(f, "開盤"),
        "high": _column(f, "最高"),
        "low": _column(f, "最低"),
        "capacity": _column(f, "成交股數"),
        "turnover": _column(f, "成交金額"),
        "transaction": _column(f, "成交筆數"),
    }
    return [
        {
            "code": str(r[idx["code"]]).strip(),
            "date": day.isoformat(),
            **{k: to_number(r[i]) for k, i in idx.items() if k != "code"},
        }
        for r in tables[0]["data"]
    ]


def fetch_market_day(client: ExchangeClient, day: dt.date) -> list[dict]:
    """Both exchanges' daily reports for one day (two requests)."""
    twse = client._request(
        client.twse_url.rstrip("/") + "/exchangeReport/MI_INDEX",
        {"date": f"{day:%Y%m%d}", "type": "ALLBUT0999", "response": "json"},
    )
    tpex = client._request(
        client.tpex_url.rstrip("/") + "/www/zh-tw/afterTrading/dailyQuotes",
        {"date": f"{day:%Y/%m/%d}", "response": "json"},
    )
    return parse_twse_daily(twse, day) + parse_tpex_daily(tpex, day)


def market_frames(rows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Market-wide rows (code + twstock columns) → canonical frame per code, trading days only."""
    return {str(code): canonical_frame(group) for code, group in rows.groupby("code", sort=False)}


def read_market_csv(path: str | os.PathLike) -> pd.DataFrame:
    """A market-wide CSV (../shared/data/broad's format: code + the twstock columns, .gz allowed)."""
    try:
        try:
            raw = pd.read_csv(path, dtype={"code": str, "date": str})
        except UnicodeDecodeError:  # not UTF-8: UTF-16 (with its BOM) or Big5, as files in Taiwan come
            raw = pd.read_csv(io.StringIO(read_user_text(path, "market CSV")), dtype={"code": str, "date": str})
    except (OSError, pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise StockToolError(f"market CSV {path} is not readable: {exc}") from exc
    missing = [c for c in ("code", "date", "open", "high", "low", "close", "capacity") if c not in raw.columns]
    if missing:
        raise StockToolError(f"market CSV {path} lacks column(s) {missing}; expected {MARKET_COLUMNS}")
    return raw


def last_days(rows: pd.DataFrame, end: dt.date, days: int) -> pd.DataFrame:
    """The rows of the last `days` trading days on or before `end`."""
    rows = rows[rows["date"] <= end.isoformat()]
    dates = sorted(rows["date"].unique())[-days:]
    if not dates:
        raise StockToolError(f"the market data has no trading day on or before {end}")
    return rows[rows["date"].isin(dates)]


def collect_market_days(client: ExchangeClient, directory: Path, end: dt.date, days: int) -> pd.DataFrame:
    """The last `days` trading days up to `end`, one request per exchange and day, cached by date."""
    directory.mkdir(parents=True, exist_ok=True)
    frames, day, looked = [], end, 0
    while len(frames) < days and looked < days * 3 + 10:
        path = directory / f"{day:%Y-%m-%d}.csv"
        if path.is_file():
            part = pd.read_csv(path, dtype={"code": str, "date": str})
        elif day.weekday() >= 5:
            part = None
        else:
            rows = fetch_market_day(client, day)
            part = pd.DataFrame(rows, columns=[c for c in MARKET_COLUMNS if c != "sign"])
            if day < taipei_today():  # today's report may not be final yet: not cached
                atomic_write_bytes(path, part.to_csv(index=False).encode("utf-8"))
        if part is not None and not part.empty:
            frames.append(part)
        day -= dt.timedelta(days=1)
        looked += 1
    if len(frames) < days:
        raise StockToolError(f"found only {len(frames)} trading day(s) of market-wide data before {end}")
    return pd.concat(frames[::-1], ignore_index=True)


# --------------------------------------------------------------------------- TAIEX (the market's return)


def parse_fmtqik(body: dict) -> pd.Series:
    """TWSE FMTQIK (a month of market statistics) → TAIEX closes by date."""
    if body.get("stat") != "OK":
        raise ExchangeUnavailable(f"TWSE answered stat={body.get('stat')!r} for FMTQIK")
    fields = body.get("fields") or []
    day, close = _column(fields, "日期"), _column(fields, "發行量加權股價指數")
    values = {}
    for row in body.get("data", []):
        y, m, d = (int(x) for x in str(row[day]).split("/"))
        values[pd.Timestamp(dt.date(y + 1911, m, d))] = to_number(row[close])
    return pd.Series(values, name="Close", dtype=float).sort_index()


def update_taiex(directory: Path, start: dt.date, end: dt.date, client: ExchangeClient | None) -> pd.Series | None:
    """TAIEX closes from `<directory>/TAIEX.csv` (date, close[, ...]), months missing fetched from FMTQIK when
    online and written back. None when there is neither a file nor a client."""
    path = Path(directory) / "TAIEX.csv"
    series = pd.Series(dtype=float, name="Close")
    if path.is_file():
        raw = pd.read_csv(path, dtype={"date": str})
        if not {"date", "close"} <= set(raw.columns):
            raise StockToolError(f"{path} needs columns date and close")
        series = pd.Series(
            pd.to_numeric(raw["close"], errors="coerce").to_numpy(),
            index=pd.DatetimeIndex(pd.to_datetime(raw["date"])),
            name="Close",
        ).dropna()
    if client is not None:
        have = {(d.year, d.month) for d in series.index}
        today = taipei_today()
        wanted = [
            (y, m)
            for y, m in month_range(start, min(end, today))
            if (y, m) not in have or (y, m) == (today.year, today.month)
        ]
        for y, m in wanted:
            body = client._request(
                client.twse_url.rstrip("/") + "/exchangeReport/FMTQIK", {"date": f"{y}{m:02d}01", "response": "json"}
            )
            month = parse_fmtqik(body)
            series = pd.concat([series[~((series.index.year == y) & (series.index.month == m))], month]).sort_index()
        if wanted and os.access(path.parent if path.parent.exists() else Path("."), os.W_OK):
            out = pd.DataFrame({"date": series.index.strftime("%Y-%m-%d"), "close": series.to_numpy()})
            atomic_write_text(path, out.to_csv(index=False))
    return series if len(series) else None


# --------------------------------------------------------------------------- --choose-stock


def choose_stocks(data, end: dt.date, client: ExchangeClient | None, market_dir: Path, seed: int):
    """(N listed stocks for each of twstock's four buy and four sell points on the latest market day, and
    their price frames when the days come from --market-csv, else None). `data`: the `DataConfig`."""
    import random

    from market import company_list, twstock_signals

    n = data.choose_stock
    if n < 1:
        raise StockToolError("--choose-stock must be at least 1")
    days = 10  # enough trading days for the 6-day average and the turns of the 3-day one
    full = None
    if data.market_csv:
        full = read_market_csv(data.market_csv)
        rows = last_days(full, end, days)
        origin = data.market_csv
    elif data.offline:
        raise StockToolError("--choose-stock with --offline needs --market-csv (a market-wide daily CSV)")
    else:
        rows = collect_market_days(
            client if isinstance(client, ExchangeClient) else ExchangeClient(), market_dir, end, days
        )
        origin = f"the exchanges' daily reports ({market_dir})"
    frames = market_frames(rows)
    latest = max(f.index[-1] for f in frames.values() if len(f))
    points = {}
    for code, frame in sorted(frames.items()):
        if len(frame) < 7 or frame.index[-1] != latest or not _is_common_stock(code):
            continue
        points[code] = twstock_signals.best_four_points(frame)[-1]
    rng = random.Random(seed)
    chosen: dict = {}
    print(f"choose-stock: {len(points):,} listed stocks on {latest:%Y-%m-%d} from {origin}")
    for side, names in (("buy", twstock_signals.BEST_BUY_WHY), ("sell", twstock_signals.BEST_SELL_WHY)):
        for i, why in enumerate(names):
            pool = [c for c, p in points.items() if p and p[side][i]]
            named = []
            for code in rng.sample(pool, min(n, len(pool))):
                try:
                    company = chosen.get(code) or company_list.resolve_company({"code": code})
                except StockToolError:
                    continue  # not in twstock's table (a new listing): cannot be fetched by code
                chosen[code] = company
                named.append(f"{code} {company.name_zh}")
            print(f"  {side} {i + 1} ({why}): {', '.join(named) or 'none'}  [{len(pool):,} stocks meet it]")
    if not chosen:
        raise StockToolError(f"--choose-stock: no stock meets any best-four-point condition on {latest:%Y-%m-%d}")
    market_prices = market_frames(full[full["code"].isin(list(chosen))]) if full is not None else None
    return list(chosen.values()), market_prices


def _is_common_stock(code: str) -> bool:
    """A listed common stock per twstock's table (not an ETF, warrant or bond)."""
    from twstock.codes import codes

    info = codes.get(code)
    return info is not None and info.type == "股票"
