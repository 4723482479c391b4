"""The decision rule: a forecast's expected return → buy, sell or hold, in whole lots at the exchange's
ticks.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

DAILY_LIMIT = 0.10  # TWSE/TPEx daily price limit


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


def decide(code: str, last_close: float, forecast, holding: tuple[int, int], rules: TradeRules, problem: str = ""):
    """One stock's decision. `forecast` is a parsed, validated forecast frame, or None with `problem`; `holding`:
    (the lots of it held, the positions held in all)."""
    held_lots, positions = holding
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
