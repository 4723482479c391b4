"""twstock's best four points (`BestFourPoint`), recomputed per day from that day and the days before it."""

from __future__ import annotations

import pandas as pd

from config.defaults import DEFAULT_WINDOWS  # noqa: F401 (the default of --windows, kept beside its flag)

BEST_BUY_WHY = ["量大收紅", "量縮價不跌", "三日均價由下往上", "三日均價大於六日均價"]  # twstock's reasons


BEST_SELL_WHY = ["量大收黑", "量縮價跌", "三日均價由上往下", "三日均價小於六日均價"]


def _moving_average(values: list[float], days: int) -> list[float]:
    """twstock's `Analytics.moving_average`: left-to-right sums, Python rounding to 2 decimals."""
    return [round(sum(values[i - days + 1 : i + 1]) / days, 2) for i in range(days - 1, len(values))]


def best_four_points(frame: pd.DataFrame) -> list[dict | None]:
    """twstock's BestFourPoint for every day of `frame`, each from that day and the days before it only.

    Per day: {"buy": [conditions 1-4], "sell": [...], "signal": "buy"/"sell"/None, "why": [reasons]}, or
    None for the first five days (a six-day average is needed). As in twstock 1.5.1, `best_four_point`
    says buy when any buy condition holds, else sell when any sell condition holds: its bias-ratio
    check tests a tuple, which is always true, so it never blocks a signal. We reproduce that, so that
    the prompt carries exactly what twstock reports.
    """
    close = [float(v) for v in frame["Close"]]
    opens = [float(v) for v in frame["Open"]]
    volume = [float(v) for v in frame["Volume"]]
    ma3, ma6 = _moving_average(close, 3), _moving_average(close, 6)  # ma3[i] is day i + 2, ma6[i] day i + 5
    out: list[dict | None] = []
    for t in range(len(frame)):
        if t < 5:
            out.append(None)
            continue
        m3 = ma3[: t - 1]  # the 3-day averages up to day t
        # twstock's `continuous(ma3) == ±1`: the average moved up (down) today, and not the day before
        # (a move that is not up counts as down, as in twstock)
        up_today = m3[-1] > m3[-2]
        up_before = m3[-2] > m3[-3] if len(m3) >= 3 else None
        turned_up = up_today and up_before is not True
        turned_down = not up_today and up_before is not False
        last_ma3, last_ma6 = m3[-1], ma6[t - 5]
        buy = [
            volume[t] > volume[t - 1] and close[t] > opens[t],
            volume[t] < volume[t - 1] and close[t] > opens[t - 1],
            turned_up,
            last_ma3 > last_ma6,
        ]
        sell = [
            volume[t] > volume[t - 1] and close[t] < opens[t],
            volume[t] < volume[t - 1] and close[t] < opens[t - 1],
            turned_down,
            last_ma3 < last_ma6,
        ]
        if any(buy):
            signal, why = "buy", [w for w, b in zip(BEST_BUY_WHY, buy, strict=True) if b]
        elif any(sell):
            signal, why = "sell", [w for w, b in zip(BEST_SELL_WHY, sell, strict=True) if b]
        else:
            signal, why = None, []
        out.append({"buy": buy, "sell": sell, "signal": signal, "why": why})
    return out


def signal_text(point: dict | None) -> str:
    """The prompt's line for one day's best-four-point result."""
    if point is None:
        return "twstock best four points: none (fewer than 6 days of history)"
    if point["signal"] is None:
        return "twstock best four points: none"
    return f"twstock best four points: {point['signal']} ({', '.join(point['why'])})"
