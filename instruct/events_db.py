"""The news-impact events database (SQLite) and the instructions built from it and from price windows.

`<data-dir>/events.sqlite`, schema version 1 (`PRAGMA user_version`):
- `events`: one row per stored news item — id, time (ISO), taipei_date, code, source, title, content;
- `event_impacts`: per event and window (1/5/20 trading days) — the stock's return and TAIEX's return over the
  same days, from the real closes.

When a news item lands: published before the 13:30 close (Taiwan time) on a trading day, that day is its
first trading day and the reference is the previous close; published after the close or on a day without
trading, the first trading day is the next one and the reference is the last close before it. The return over
N days is the close of the N-th trading day from the first one over the reference close.

A rebuild writes a new file and renames it over the old one: idempotent, never half-written.
Instructions are built only from these real figures (and real price windows); nothing is simulated.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import os
import random
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from market.news import taipei_time
from utils import TAIPEI, StockToolError

SCHEMA_VERSION = 1
WINDOWS = (1, 5, 20)
MARKET_CLOSE = dt.time(13, 30)
SCHEMA = """
CREATE TABLE events (
    id TEXT PRIMARY KEY,
    time TEXT NOT NULL,
    taipei_date TEXT NOT NULL,
    code TEXT NOT NULL,
    source TEXT,
    title TEXT NOT NULL,
    content TEXT
);
CREATE TABLE event_impacts (
    event_id TEXT NOT NULL REFERENCES events(id),
    code TEXT NOT NULL,
    window INTEGER NOT NULL,
    first_day TEXT NOT NULL,
    end_day TEXT NOT NULL,
    stock_return REAL NOT NULL,
    market_return REAL,
    PRIMARY KEY (event_id, code, window)
);
CREATE INDEX events_code_date ON events(code, taipei_date);
"""


def event_id(code: str, time: str, title: str) -> str:
    return hashlib.sha1(f"{code}|{time}|{title}".encode()).hexdigest()[:16]


def first_trading_index(days: pd.DatetimeIndex, published: dt.datetime) -> int:
    """Index in `days` of the first trading day on which the news could move the price."""
    local = published.astimezone(TAIPEI)
    day = pd.Timestamp(local.date())
    i = int(days.searchsorted(day))
    if i < len(days) and days[i] == day and local.time() >= MARKET_CLOSE:
        i += 1  # after the close: the next session is the first to react
    return i


def impacts(closes: pd.Series, market: pd.Series | None, published: dt.datetime, windows=WINDOWS) -> list[dict]:
    """Real returns of the stock (and of TAIEX over the same days) after a news item, per window."""
    days = closes.index
    first = first_trading_index(days, published)
    out = []
    if first == 0 or first >= len(days):
        return out  # no close before it, or no trading after it yet
    reference = float(closes.iloc[first - 1])
    for window in windows:
        end = first + window - 1
        if end >= len(days):
            break
        row = {
            "window": window,
            "first_day": days[first].strftime("%Y-%m-%d"),
            "end_day": days[end].strftime("%Y-%m-%d"),
            "stock_return": float(closes.iloc[end]) / reference - 1,
            "market_return": None,
        }
        if market is not None and days[first - 1] in market.index and days[end] in market.index:
            row["market_return"] = float(market[days[end]]) / float(market[days[first - 1]]) - 1
        out.append(row)
    return out


def build(path: Path, events: list[dict], prices: dict[str, pd.DataFrame], taiex: pd.Series | None) -> dict:
    """(Re)build the database from news items {code, publishedAt, source, title, description} and closes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staging.unlink(missing_ok=True)
    counts = {"events": 0, "impacts": 0, "without_prices": 0}
    try:
        with sqlite3.connect(staging) as db:
            db.executescript(SCHEMA)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            for item in events:
                _insert(db, item, (prices.get(item["code"]), taiex), counts)
        db.close()
        os.replace(staging, path)
    except sqlite3.Error as exc:
        staging.unlink(missing_ok=True)
        raise StockToolError(f"could not build the events database {path}: {exc}") from exc
    return counts


def _insert(db, item: dict, closes: tuple, counts: dict) -> None:
    """One news item and its impacts (from `closes` = (the company's price frame or None, the TAIEX closes))."""
    frame, taiex = closes
    published = taipei_time(item["publishedAt"])
    eid = event_id(item["code"], item["publishedAt"], item["title"])
    inserted = db.execute(
        "INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            eid,
            item["publishedAt"],
            published.astimezone(TAIPEI).date().isoformat(),
            item["code"],
            item.get("source") or "",
            item["title"],
            item.get("description") or "",
        ),
    ).rowcount
    counts["events"] += inserted
    if not inserted:
        return  # the same item twice (e.g. in both languages' lists)
    if frame is None:
        counts["without_prices"] += 1
        return
    for row in impacts(frame["Close"], taiex, published):
        db.execute(
            "INSERT INTO event_impacts VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                eid,
                item["code"],
                row["window"],
                row["first_day"],
                row["end_day"],
                row["stock_return"],
                row["market_return"],
            ),
        )
        counts["impacts"] += 1


def read_impacts(path: Path) -> list[dict]:
    """Events joined with their impacts, one dict per event: {code, date, title, source, impacts: {window: ...}}."""
    if not path.is_file():
        raise StockToolError(f"no events database at {path}: build it with --build-events 1")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                raise StockToolError(
                    f"{path} has schema version {version}, this tool reads {SCHEMA_VERSION}: rebuild it"
                )
            rows = db.execute(
                "SELECT e.id, e.code, e.taipei_date, e.title, e.source, i.window, i.stock_return, i.market_return "
                "FROM events e JOIN event_impacts i ON i.event_id = e.id ORDER BY e.taipei_date, e.id, i.window"
            ).fetchall()
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:  # locked, corrupt, not a database
        raise StockToolError(
            f"cannot read the events database {path}: {exc}; rebuild it with --build-events 1"
        ) from exc
    events: dict[str, dict] = {}
    for eid, code, day, title, source, window, stock, market in rows:
        entry = events.setdefault(eid, {"code": code, "date": day, "title": title, "source": source, "impacts": {}})
        entry["impacts"][window] = (stock, market)
    return list(events.values())


# --------------------------------------------------------------------------- instructions


def news_impact_instruction(event: dict, name: str) -> dict:
    """A headline → what really happened to the stock and to TAIEX after it (Alpaca row)."""
    parts = []
    for window, (stock, market) in sorted(event["impacts"].items()):
        text = f"{window} 個交易日後，{name} {stock:+.2%}"
        if market is not None:
            text += f"，加權指數 {market:+.2%}，相對大盤 {stock - market:+.2%}"
        parts.append(text)
    return {
        "instruction": f"{name}（{event['code']}）在 {event['date']} 有一則新聞：「{event['title']}」。"
        "這則新聞發布後，股價與大盤實際如何變動？",
        "input": "",
        "output": "；".join(parts) + "。",
        "kind": "news_impact",
    }


def market_analysis_instruction(frame: pd.DataFrame, taiex: pd.Series | None, name: str, code: str, days: int = 20):
    """Trend, volatility and strength against TAIEX over the last `days` trading days of `frame` (Alpaca row)."""
    window = frame.iloc[-(days + 1) :]
    if len(window) < days + 1:
        return None
    closes = window["Close"]
    returns = closes.pct_change().dropna()
    total = float(closes.iloc[-1] / closes.iloc[0] - 1)
    volatility = float(returns.std(ddof=1) * math.sqrt(252))
    trend = "上漲" if total > 0.02 else "下跌" if total < -0.02 else "盤整"
    lines = [f"{d:%Y-%m-%d} 收盤 {c:g}" for d, c in closes.iloc[1:].items()]
    output = f"過去 {days} 個交易日 {name} 累計 {total:+.2%}，趨勢為{trend}；日報酬年化波動度 {volatility:.1%}"
    if taiex is not None and closes.index[0] in taiex.index and closes.index[-1] in taiex.index:
        market = float(taiex[closes.index[-1]] / taiex[closes.index[0]] - 1)
        stronger = "強於" if total > market else "弱於"
        output += f"；同期加權指數 {market:+.2%}，相對強弱 {total - market:+.2%}（{stronger}大盤）"
    ask = "分析趨勢、波動度與相對大盤強弱。"
    return {
        "instruction": f"根據 {name}（{code}）截至 {closes.index[-1]:%Y-%m-%d} 的 {days} 個交易日收盤價，{ask}",
        "input": "\n".join(lines),
        "output": output + "。",
        "kind": "market_analysis",
    }


@dataclass(frozen=True)
class Mix:
    """How many instructions of each kind: shares ({"news": 0.6, "market": 0.4}), `total` rows at most, drawn with
    `seed`; market-analysis rows every `stride` trading days."""

    shares: dict
    total: int
    seed: int
    stride: int = 5


def build_instructions(events_rows: list[dict], prices: dict[str, pd.DataFrame], taiex, names: dict, mix: Mix):
    """A mix of news-impact and market-analysis rows."""
    rng, total, stride = random.Random(mix.seed), mix.total, mix.stride
    news_rows = [news_impact_instruction(e, names.get(e["code"], e["code"])) for e in events_rows]
    market_rows = []
    for code, frame in prices.items():
        for end in range(21, len(frame) + 1, stride):
            row = market_analysis_instruction(frame.iloc[:end], taiex, names.get(code, code), code)
            if row:
                market_rows.append(row)
    weights = {k: v for k, v in mix.shares.items() if v > 0}
    share = sum(weights.values()) or 1
    out = []
    for kind, pool in (("news", news_rows), ("market", market_rows)):
        want = round(total * weights.get(kind, 0) / share)
        out += rng.sample(pool, min(want, len(pool)))
    rng.shuffle(out)
    return out
