"""The whole market as training data (`--universe market`): every listed common stock's daily candles over the
training period, from a market-wide CSV (`--market-csv`) or, online, the exchanges' daily reports (one request
per exchange and trading day, cached by date, as `--choose-stock` fetches them)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from market import company_list, daily_reports
from market.exchanges import ExchangeClient
from utils import StockToolError


def market_stocks(data, span: tuple[dt.date, dt.date], exclude, client: ExchangeClient | None, market_dir: Path):
    """{code: (Company, price frame)} of every listed common stock with prices in `span` (first, last day), but
    those in `exclude` (the company list's: they have their own prices). `data`: the `DataConfig`."""
    start, end = span
    if data.market_csv:
        rows, origin = daily_reports.read_market_csv(data.market_csv), data.market_csv
    elif data.offline or client is None:
        raise StockToolError("--universe market with --offline needs --market-csv (a market-wide daily CSV)")
    else:
        days = int(np.busday_count(start, end + dt.timedelta(days=1)))
        rows = daily_reports.collect_market_days(client, market_dir, end, days)
        origin = f"the exchanges' daily reports ({market_dir})"
    rows = rows[(rows["date"] >= start.isoformat()) & (rows["date"] <= end.isoformat())]
    if rows.empty:
        raise StockToolError(f"the market data ({origin}) has no trading day between {start} and {end}")
    out, skipped = {}, 0
    for code, frame in daily_reports.market_frames(rows).items():
        company = None if code in exclude else company_list.listed_common_stock(code)
        if company is None:
            skipped += code not in exclude
            continue
        out[code] = (company, frame)
    days = sum(len(f) for _, f in out.values())
    print(
        f"universe: {len(out):,} listed common stocks besides the company list, {days:,} "
        f"trading days ({start} → {end}) from {origin}; {skipped:,} other codes (ETFs, warrants, delisted) left out"
    )
    if not out:
        raise StockToolError(f"the market data ({origin}) has no listed common stock besides the company list")
    return out
