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

from utils import append_jsonl

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
