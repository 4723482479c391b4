"""How prompts and answers write prices: the spec's prompt, the answer formats (absolute NTD, % changes,
candles), and the answer's grammar as a regex. Pure functions: training examples and inference prompts are
written by the same code, and `answer_parser` reads it back.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from config.data_args import ANSWER_FORMATS, FIELDS, PRICE_FIELDS
from config.defaults import DEFAULT_WINDOWS  # noqa: F401 (the default of --windows, kept beside its flag)

# How prices are written. "absolute": the spec's NTD prices. "change": every open/high/low/close, in the
# prompt and in the answer, as the % change from the last known close (the anchor), which the prompt states
# once in NTD: one scale for every stock, few digits to get wrong, and "no change" is literally +0.00%.
# "candle": close and open as % changes from the anchor, then the upper and lower wicks as unsigned % distances
# from the candle's body (high = max(open, close) × (1 + upper), low = min(open, close) × (1 − lower)): every
# string its grammar allows is a possible candle, so no sampled answer can be an impossible one.
# "scaled": the candle format scale-free: each price field a log change in units of the stock's daily volatility
# over the last VOL_DAYS days (stated in the prompt), so one unit is the same move for every stock; any string
# its grammar allows is still a possible candle (close = anchor × e^(x·σ), high = max(open, close) × e^(u·σ)).


CANDLE_LABELS = ("Close", "Open", "Upper", "Lower")  # the candle format's price fields, in this order


VOL_DAYS = 20  # daily returns behind a stock's volatility (as the baselines' 20-day lookback)


MIN_VOL = 0.002  # a floor for the volatility of a stock that has not moved (0.2% a day)


@dataclass(frozen=True)
class Anchor:
    """The last known close that a relative format writes prices against; `candle`: the candle format; `scale`
    (the scaled format): the daily volatility one written unit of log change stands for (0: prices in %)."""

    close: float
    candle: bool = False
    scale: float = 0.0


def daily_volatility(history: pd.DataFrame) -> float:
    """The standard deviation of the last VOL_DAYS daily log returns of `history`'s closes (at least MIN_VOL;
    MIN_VOL too with fewer than two returns)."""
    closes = history["Close"].dropna().to_numpy(dtype=float)[-(VOL_DAYS + 1) :]
    closes = closes[closes > 0]
    if len(closes) < 3:
        return MIN_VOL
    return max(float(np.std(np.diff(np.log(closes)))), MIN_VOL)


def _anchor(anchor) -> Anchor | None:
    """An Anchor from an Anchor, a bare close (the change format) or None (absolute prices)."""
    return anchor if anchor is None or isinstance(anchor, Anchor) else Anchor(float(anchor))


def format_number(value: float, integer: bool) -> str:
    if integer:
        return str(int(round(value)))
    return repr(round(float(value), 2))  # 141.5, 139.0, 1025.0: the exchange's ticks, no float noise


def format_change(value: float, anchor: float) -> str:
    """A price as its % change from `anchor`: +0.47%, -2.35%, +0.00%."""
    change = 100 * (float(value) / anchor - 1)
    return f"{change + 0.0:+.2f}%" if round(change, 2) != 0 else "+0.00%"


def candle_parts(row: pd.Series, anchor: Anchor) -> list[str]:
    """The candle format's price fields of one day: close and open as % changes from the anchor's close, then the
    wicks as % distances from the body (a day whose high or low lies inside its body gets a wick of 0.00%); with
    the anchor's `scale`, all four as log changes in units of that volatility, without a % sign."""
    o, h, lo, c = (float(row[k]) for k in ("Open", "High", "Low", "Close"))
    if anchor.scale:
        units = [np.log(c / anchor.close), np.log(o / anchor.close), np.log(h / max(o, c)), np.log(min(o, c) / lo)]
        close, open_, upper, lower = (v / anchor.scale for v in units)
        return [
            f"Close: {_signed(close)}",
            f"Open: {_signed(open_)}",
            f"Upper: {max(0.0, upper) + 0.0:.2f}",
            f"Lower: {max(0.0, lower) + 0.0:.2f}",
        ]
    upper = max(0.0, 100 * (h / max(o, c) - 1))
    lower = max(0.0, 100 * (1 - lo / min(o, c)))
    return [
        f"Close: {format_change(c, anchor.close)}",
        f"Open: {format_change(o, anchor.close)}",
        f"Upper: {upper + 0.0:.2f}%",
        f"Lower: {lower + 0.0:.2f}%",
    ]


def _signed(value: float) -> str:
    """+0.47, -2.35, +0.00 (never -0.00)."""
    return f"{value + 0.0:+.2f}" if round(value, 2) != 0 else "+0.00"


def format_row(date: pd.Timestamp | dt.date, row: pd.Series, fields: list[str], anchor=None) -> str:
    """One day as the prompt writes it; with `anchor` (an Anchor, or a close for the change format), prices are
    % changes from it. The candle format writes its four price fields where the first price field stands."""
    anchor = _anchor(anchor)
    parts = [f"Date: {pd.Timestamp(date).strftime('%Y-%m-%d')}"]
    for name in fields:
        label, column, integer = FIELDS[name]
        if anchor is not None and anchor.candle and name in PRICE_FIELDS:
            if name == next(f for f in fields if f in PRICE_FIELDS):
                parts += candle_parts(row, anchor)
        elif anchor is not None and name in PRICE_FIELDS:
            parts.append(f"{label}: {format_change(row[column], anchor.close)}")
        else:
            parts.append(f"{label}: {format_number(row[column], integer)}")
    return ", ".join(parts)


def format_rows(frame: pd.DataFrame, fields: list[str], anchor=None) -> list[str]:
    """One prompt line per trading day."""
    return [format_row(date, row, fields, anchor) for date, row in frame.iterrows()]


def anchor_line(anchor: Anchor, date: pd.Timestamp | dt.date) -> str:
    """The relative formats' statement of their anchor (and, scaled, of their unit), between title and rows."""
    close, day = format_number(anchor.close, False), f"{pd.Timestamp(date):%Y-%m-%d}"
    if anchor.scale:
        return (
            f"Prices are log changes from the last close, {close} on {day}, in units of the stock's daily "
            f"volatility over {VOL_DAYS} days (1 unit = {100 * anchor.scale:.2f}%)."
        )
    return f"Prices are % changes from the last close, {close} on {day}."


def user_prompt_lines(name: str, lines: list[str], future: int, context: str = "", anchor: str = "") -> str:
    """The spec's user turn. `context` (news, signals, the user's own text) sits between prices and question;
    `anchor` (the change format's `anchor_line`) between the title and the rows."""
    ask = "Predict the next date price:\n" if future == 1 else f"Predict the next {future} day price:\n"
    text = f"Here is past {len(lines)} day stock price of {name} company.\n"
    if anchor:
        text += anchor + "\n"
    text += "\n" + "\n".join(lines) + "\n"
    if context.strip():
        text += f"\nContext:\n{context.strip()}\n\n"
    return text + ask


def answer_lines(lines: list[str]) -> str:
    """The spec's assistant turn, with the real next trading dates."""
    return f"The next {len(lines)} day price is:\n" + "\n".join(lines) + "\n"


def _check_format(answer_format: str) -> None:
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"answer format {answer_format!r} is not one of {', '.join(ANSWER_FORMATS)}")


def anchor_of(history: pd.DataFrame, answer_format: str) -> Anchor | None:
    """The relative formats' anchor: the last known close of `history` (every price known at the origin), and
    for the scaled format its `daily_volatility` (None for absolute prices)."""
    _check_format(answer_format)
    if answer_format == "absolute":
        return None
    close = float(history["Close"].iloc[-1])
    if answer_format == "scaled":
        return Anchor(close, candle=True, scale=daily_volatility(history))
    return Anchor(close, candle=answer_format == "candle")


def user_prompt(
    name: str,
    past: pd.DataFrame,
    future: int,
    fields: list[str],
    context: str = "",
    answer_format: str | Anchor = "absolute",
) -> str:
    """The user turn for the window `past`; `answer_format`: a format's name, or the Anchor its prices are written
    against (`anchor_of` over the longer history: the scaled format's volatility needs more days than a window
    may show)."""
    anchor = answer_format if isinstance(answer_format, Anchor) else anchor_of(past, answer_format)
    header = anchor_line(anchor, past.index[-1]) if anchor is not None else ""
    return user_prompt_lines(name, format_rows(past, fields, anchor), future, context, header)


def answer_text(future: pd.DataFrame, fields: list[str], anchor=None) -> str:
    """The answer for `future`; `anchor` (an Anchor, or the last known close: the change format) writes it in a
    relative format."""
    return answer_lines(format_rows(future, fields, anchor))


def answer_regex(dates: list, fields: list[str], answer_format: str = "absolute") -> str:
    """The answer's grammar as a regex: header, dates and labels fixed, only the numbers free.

    It accepts exactly what `answer_text` writes for these dates (and nothing `parse_answer` would refuse),
    so a constrained answer always parses; whether its candles are possible is still checked afterwards.
    """
    _check_format(answer_format)
    number = {
        "price": r"[+-][0-9]{1,3}\.[0-9]{2}%" if answer_format == "change" else r"[0-9]{1,6}\.[0-9]{1,2}",
        "signed": r"-?[0-9]{1,6}\.[0-9]{1,2}",
        "integer": r"[0-9]{1,12}",
    }
    candle = answer_format in ("candle", "scaled")
    if candle:  # every string a possible candle: a fall stays above -100%, wicks unsigned, volume positive
        number["integer"] = r"[1-9][0-9]{0,11}"
        numbers = _SCALED_NUMBERS if answer_format == "scaled" else _CANDLE_NUMBERS
        prices = [f"{label}: {numbers[label]}" for label in CANDLE_LABELS]
    rows = []
    for date in dates:
        parts = [f"Date: {pd.Timestamp(date):%Y-%m-%d}"]
        for name in fields:
            label, _, integer = FIELDS[name]
            if candle and name in PRICE_FIELDS:
                parts += prices if name == next(f for f in fields if f in PRICE_FIELDS) else []
                continue
            kind = "price" if name in PRICE_FIELDS else "integer" if integer else "signed"
            parts.append(f"{label}: {number[kind]}")
        rows.append(", ".join(parts) + r"\n")
    return rf"The next {len(dates)} day price is:\n" + "".join(rows)


_CANDLE_CHANGE = r"(\+[0-9]{1,3}|-[0-9]{1,2})\.[0-9]{2}%"


_CANDLE_WICK = r"[0-9]{1,2}\.[0-9]{2}%"


_CANDLE_NUMBERS = {"Close": _CANDLE_CHANGE, "Open": _CANDLE_CHANGE, "Upper": _CANDLE_WICK, "Lower": _CANDLE_WICK}


# scaled: log changes in volatility units, any of them a positive price (up to ±99.99 units)
_SCALED_NUMBERS = {"Close": r"[+-][0-9]{1,2}\.[0-9]{2}", "Open": r"[+-][0-9]{1,2}\.[0-9]{2}"} | {
    "Upper": r"[0-9]{1,2}\.[0-9]{2}",
    "Lower": r"[0-9]{1,2}\.[0-9]{2}",
}


def answer_token_budget(future: int, fields: list[str]) -> int:
    """New tokens to allow for an answer of `future` rows: a row of the five ohlcv fields is ~67 SmolLM2
    tokens (it splits numbers into single digits), of all eight ~100; fewer with Llama-3's tokenizer.
    A cut answer would fail to parse, so the budget errs on the generous side."""
    return 32 + future * (12 + 16 * len(fields))
