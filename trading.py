"""Forecasts → buy / sell / hold decisions, and the trade journal that keeps an order from being sent twice.

The rule (documented in the README, pure functions here):
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
from dataclasses import asdict, dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path

from utils import append_jsonl, taipei_today

DAILY_LIMIT = 0.10  # TWSE/TPEx daily price limit
BLOCKING = {"sending", "sent", "refused", "unknown"}


@dataclass(frozen=True)
class TradeRules:
    threshold: float = 0.01  # expected return beyond which to act (above a round trip's ~0.59% costs)
    max_lots: int = 1
    max_positions: int = 5


@dataclass(frozen=True)
class Decision:
    code: str
    side: str  # buy, sell, hold
    lots: int
    price: float | None
    reason: str
    last_close: float | None = None
    expected_return: float | None = None


def tick_size(price: float) -> float:
    """TWSE/TPEx stock tick sizes by price band."""
    for limit, tick in ((10, 0.01), (50, 0.05), (100, 0.1), (500, 0.5), (1000, 1.0)):
        if price < limit:
            return tick
    return 5.0


def round_to_tick(price: float, up: bool) -> float:
    """The nearest valid price at or below (up=False) / at or above (up=True) `price`."""
    tick = Decimal(str(tick_size(price)))
    steps = (Decimal(str(price)) / tick).to_integral_value(rounding=ROUND_CEILING if up else ROUND_FLOOR)
    rounded = float(steps * tick)
    if tick_size(rounded) != float(tick):  # crossed into another band: round there again
        return round_to_tick(rounded, up)
    return rounded


def decide(
    code: str, last_close: float, forecast, held_lots: int, positions: int, rules: TradeRules, problem: str = ""
) -> Decision:
    """One stock's decision. `forecast` is a parsed, validated forecast frame, or None with `problem`."""
    if forecast is None or len(forecast) == 0:
        return Decision(code, "hold", 0, None, f"no usable forecast ({problem or 'none'})", last_close)
    expected = float(forecast["Close"].iloc[-1]) / last_close - 1
    first_open = float(forecast["Open"].iloc[0])
    base = dict(last_close=last_close, expected_return=round(expected, 6))
    if held_lots <= 0 and expected > rules.threshold:
        if positions >= rules.max_positions:
            return Decision(code, "hold", 0, None, f"buy signal, but {positions} positions held (max)", **base)
        price = round_to_tick(min(first_open, last_close * (1 + DAILY_LIMIT)), up=False)
        reason = f"forecast {expected:+.2%} over {len(forecast)} day(s) > +{rules.threshold:.2%}"
        return Decision(code, "buy", rules.max_lots, price, reason, **base)
    if held_lots > 0 and expected < -rules.threshold:
        price = round_to_tick(max(first_open, last_close * (1 - DAILY_LIMIT)), up=True)
        reason = f"forecast {expected:+.2%} over {len(forecast)} day(s) < -{rules.threshold:.2%}"
        return Decision(code, "sell", min(held_lots, rules.max_lots), price, reason, **base)
    return Decision(code, "hold", 0, None, f"forecast {expected:+.2%}: no action", **base)


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


# --------------------------------------------------------------------------- the trading stage


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
            code, last, f.forecast if f.ok else None, held.get(code, 0), positions, rules, "; ".join(f.problems)[:200]
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
