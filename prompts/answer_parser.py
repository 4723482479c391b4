"""The strict reader of an answer: `prompt_format`'s inverse. Nothing is repaired."""

from __future__ import annotations

import datetime as dt
import math
import re

import pandas as pd

from config.data_args import FIELDS, PRICE_FIELDS
from config.defaults import DEFAULT_WINDOWS  # noqa: F401 (the default of --windows, kept beside its flag)
from prompts.prompt_format import CANDLE_LABELS, Anchor, _anchor


class ForecastParseError(ValueError):
    """The model's answer is not `answer_text`'s format; the raw text goes with it to the user."""


_HEADER = re.compile(r"The next (\d+) day price is:")


_NUMBER = r"-?\d+(?:\.\d+)?"


_CHANGE = r"[+-]\d+(?:\.\d+)?%"


_WICK = r"\d+(?:\.\d+)?%"


_SCALED_CHANGE = r"[+-]\d+(?:\.\d+)?"  # the scaled format's units carry no % sign


_SCALED_WICK = r"\d+(?:\.\d+)?"


def _row_pattern(fields: list[str], anchor: Anchor | None = None) -> tuple[re.Pattern, list[str]]:
    """(the row regex, the name of each of its groups after the date)."""
    parts, names = [r"Date: (\d{4}-\d{2}-\d{2})"], []
    for f in fields:
        if anchor is not None and anchor.candle and f in PRICE_FIELDS:
            if f == next(p for p in fields if p in PRICE_FIELDS):
                signed, unsigned = (_SCALED_CHANGE, _SCALED_WICK) if anchor.scale else (_CHANGE, _WICK)
                parts += [
                    rf"{label}: ({signed if label in ('Close', 'Open') else unsigned})" for label in CANDLE_LABELS
                ]
                names += list(CANDLE_LABELS)
            continue
        parts.append(rf"{FIELDS[f][0]}: ({_CHANGE if anchor is not None and f in PRICE_FIELDS else _NUMBER})")
        names.append(f)
    return re.compile(r"\s*" + r", ".join(parts) + r"\s*"), names


def _candle_prices(values: dict, anchor: Anchor) -> dict:
    """Open/High/Low/Close of the candle format's four fields (never rounded: rounding could undo low ≤ body);
    scaled: log changes in units of the anchor's volatility."""
    if anchor.scale:
        o, c = (anchor.close * math.exp(float(values[k]) * anchor.scale) for k in ("Open", "Close"))
        upper, lower = (math.exp(float(values[k]) * anchor.scale) for k in ("Upper", "Lower"))
        return {"Open": o, "High": max(o, c) * upper, "Low": min(o, c) / lower, "Close": c}
    o, c = (anchor.close * (1 + float(values[k].rstrip("%")) / 100) for k in ("Open", "Close"))
    upper, lower = (float(values[k].rstrip("%")) / 100 for k in ("Upper", "Lower"))
    return {"Open": o, "High": max(o, c) * (1 + upper), "Low": min(o, c) * (1 - lower), "Close": c}


def parse_answer(text: str, fields: list[str], expected: int | None = None, anchor=None) -> pd.DataFrame:
    """Strictly read an answer back into a frame (Date index; Open, High, Low, Close, Volume, ...).

    With `anchor` (an Anchor, or the last known close: the change format) the answer is in a relative format
    and its % changes are turned back into prices. Nothing is repaired: a wrong header, a row out of format, a
    wrong row count, unordered dates or any text after the rows raises ForecastParseError.
    """
    anchor = _anchor(anchor)
    lines = [line for line in text.strip().splitlines()]
    if not lines:
        raise ForecastParseError("the answer is empty")
    header = _HEADER.fullmatch(lines[0].strip())
    if not header:
        raise ForecastParseError(f"the first line is not 'The next N day price is:' but {lines[0][:80]!r}")
    count = int(header[1])
    if expected is not None and count != expected:
        raise ForecastParseError(f"the answer announces {count} day(s), {expected} were asked for")
    rows = [line for line in lines[1:] if line.strip()]
    if len(rows) != count:
        raise ForecastParseError(f"the answer announces {count} row(s) but has {len(rows)}")
    pattern, names = _row_pattern(fields, anchor)
    records = []
    for line in rows:
        match = pattern.fullmatch(line)
        if not match:
            raise ForecastParseError(f"row {line[:120]!r} is not in the format {', '.join(['Date', *fields])}")
        try:
            date = pd.Timestamp(dt.date.fromisoformat(match[1]))
        except ValueError as exc:
            raise ForecastParseError(f"row date {match[1]!r} is not a calendar date") from exc
        record, values = {"Date": date}, dict(zip(names, match.groups()[1:], strict=True))
        if anchor is not None and anchor.candle:
            record |= _candle_prices(values, anchor)
        for name, value in values.items():
            if name in CANDLE_LABELS:
                continue
            if anchor is not None and name in PRICE_FIELDS:
                record[FIELDS[name][1]] = round(anchor.close * (1 + float(value.rstrip("%")) / 100), 2)
            else:
                record[FIELDS[name][1]] = float(value)
        records.append(record)
    frame = pd.DataFrame.from_records(records).set_index("Date")
    frame.index = pd.DatetimeIndex(pd.to_datetime([d.strftime("%Y-%m-%d") for d in frame.index]), name="Date")
    if not frame.index.is_monotonic_increasing or frame.index.has_duplicates:
        raise ForecastParseError("the answer's dates are not strictly increasing")
    return frame


def validate_forecast(forecast: pd.DataFrame, last_input_date: pd.Timestamp | None = None) -> list[str]:
    """Problems that make a parsed forecast unusable as candles (an empty list means valid)."""
    problems = []
    for date, row in forecast.iterrows():
        day = date.strftime("%Y-%m-%d")
        if not row["Low"] <= min(row["Open"], row["Close"]):
            problems.append(f"{day}: low {row['Low']} is above open {row['Open']} or close {row['Close']}")
        if not max(row["Open"], row["Close"]) <= row["High"]:
            problems.append(f"{day}: high {row['High']} is below open {row['Open']} or close {row['Close']}")
        if min(row["Open"], row["High"], row["Low"], row["Close"]) <= 0:
            problems.append(f"{day}: a price is not positive")
        if "Volume" in row and not row["Volume"] > 0:
            problems.append(f"{day}: volume {row['Volume']} is not positive")
    if last_input_date is not None and len(forecast) and forecast.index[0] <= last_input_date:
        problems.append(
            f"the first forecast date {forecast.index[0]:%Y-%m-%d} is not after "
            f"the last known day {last_input_date:%Y-%m-%d}"
        )
    return problems
