"""Forecasts → buy / sell / hold decisions, and the trade journal that keeps an order from being sent twice.

The rule (documented in docs/trading.md, pure functions here):
- expected return = the forecast's last close / the last known close − 1;
- BUY when it is above `threshold`, the stock is not held and fewer than `max_positions` are held:
  `max_lots` lots at a limit of the forecast's first open (never above the +10% daily limit), rounded
  down to the exchange's tick;
- SELL when the stock is held and the expected return is below −`threshold`: the held lots (at most
  `max_lots`) at a limit of the forecast's first open (never below the −10% limit), rounded up;
- HOLD otherwise, and always when the forecast is unusable.

The journal, `outputs/trades/<day>.jsonl`, gets a line for every decision and every server reply. Before
an order is sent, a `sending` line is written and synced; a decision (account, day, code, side) with a
`sending`, `sent`, `refused` or `unknown` line is never sent again, so a crash between sending and
logging, or a rerun, cannot double an order.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
from dataclasses import asdict
from pathlib import Path

from trading.trade_rules import Decision, TradeRules, decide
from utils import append_jsonl, taipei_today

BLOCKING = {"sending", "sent", "refused", "unknown"}


class TradeJournal:
    """Append-only JSON lines for one trading day, fsynced line by line."""

    def __init__(self, directory: str | os.PathLike, day: dt.date, account_tag: str):
        self.path = Path(directory) / f"{day:%Y-%m-%d}.jsonl"
        self.day, self.account_tag = day, account_tag

    def key(self, code: str, side: str) -> str:
        text = f"{self.account_tag}|{self.day:%Y-%m-%d}|{code}|{side}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def records(self) -> list[dict]:
        if not self.path.is_file():
            return []
        rows = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line torn by a crash: the `sending` line before it still blocks a resend
        return rows

    def already(self, code: str, side: str) -> str | None:
        """The blocking status of this decision today, if it was (or may have been) sent."""
        key = self.key(code, side)
        statuses = [r["status"] for r in self.records() if r.get("key") == key and r.get("status") in BLOCKING]
        return statuses[-1] if statuses else None

    def append(self, decision: Decision, status: str, **extra) -> dict:
        record = {
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "day": f"{self.day:%Y-%m-%d}",
            "account": self.account_tag,
            "key": self.key(decision.code, decision.side),
            "status": status,
            **{k: v for k, v in asdict(decision).items() if not (isinstance(v, float) and math.isnan(v))},
            **extra,
        }
        append_jsonl(self.path, [record])
        return record


def run(cfg, credentials, candidates: list[str], forecast, api=None) -> list[dict]:
    """Holdings → forecasts (holdings and candidates) → buy/sell/hold per stock → orders (only with execute).

    `forecast(codes)` returns one `Forecast` per code. Every decision and server reply goes to the day's
    journal; a decision already sent (or possibly sent) today is never sent again.
    """
    import stock_api

    api = api or stock_api.StockApiClient(**({"base_url": cfg.api_url} if cfg.api_url else {}))
    rules = TradeRules(cfg.threshold, cfg.max_lots, cfg.max_positions)
    held = {}
    for h in api.holdings(credentials):
        held[h.code] = held.get(h.code, 0) + h.shares
    codes = list(dict.fromkeys([c for c in held if held[c] > 0] + candidates))
    forecasts = {f.code: f for f in forecast(codes)}
    positions = sum(1 for lots in held.values() if lots > 0)
    decisions = []
    for code in codes:
        f = forecasts[code]
        last = float(f.past["Close"].iloc[-1])
        d = decide(
            code, last, f.forecast if f.ok else None, (held.get(code, 0), positions), rules, "; ".join(f.problems)[:200]
        )
        positions += d.side == "buy"
        decisions.append(d)
    journal = TradeJournal(cfg.journal_dir, taipei_today(), credentials.tag)
    mode = "EXECUTE" if cfg.execute else "DRY RUN (nothing is sent; add --execute to send the orders)"
    print(f"trade plan, {journal.day} ({mode}); holdings: {held or 'none'}")
    outcomes = []
    for d in decisions:
        line = f"  {d.code} {d.side.upper():4s} {d.lots} lot(s)" + (f" @ {d.price:g}" if d.price else "")
        print(f"{line:34s} {d.reason}")
        outcomes.append(carry_out(d, cfg.execute, journal, api, credentials))
    sent = sum(o["status"] == "sent" for o in outcomes)
    print(f"journal: {journal.path} ({sent} order(s) sent)")
    return outcomes


def carry_out(decision, execute: bool, journal, api, credentials) -> dict:
    """One decision: journalled as hold or dry run, or sent once (a `sending` line first), with the reply."""
    import stock_api

    if decision.side == "hold":
        return journal.append(decision, "hold")
    if not execute:
        return journal.append(decision, "dry-run")
    earlier = journal.already(decision.code, decision.side)
    if earlier:
        print(f"    not sent: this {decision.side} of {decision.code} is already {earlier!r} in today's journal")
        return journal.append(decision, "duplicate-skipped", earlier=earlier)
    journal.append(decision, "sending")  # written and synced before the request: a crash cannot double it
    send = api.buy if decision.side == "buy" else api.sell
    try:
        result = send(credentials, decision.code, decision.lots, decision.price)
    except stock_api.OrderRefused as exc:
        print(f"    refused: {exc}")
        return journal.append(decision, "refused", reply=exc.body)
    except stock_api.OrderOutcomeUnknown as exc:
        print(f"    UNKNOWN: {exc}")
        return journal.append(decision, "unknown", error=str(exc))
    except stock_api.StockApiError as exc:  # the request never reached the server
        print(f"    not sent: {exc}")
        return journal.append(decision, "not-sent", error=str(exc))
    print(f"    sent: {result.status or result.result}")
    return journal.append(decision, "sent", reply=result.raw)
