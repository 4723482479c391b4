"""Windows of trading days → chat examples, and the strict parser that reads an answer back.

Pure functions only (no I/O, no model): the same `user_prompt` / `answer_text` build training
examples and inference prompts, and `parse_answer` is their inverse.

Window types are counted in trading days, `past:future`. The spec's four are
1:1 (past day → next day), 5:5 (past week → next week), 20:5 (past month → next week) and
60:20 (past three months → next month).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass

import pandas as pd

from configs import DEFAULT_WINDOWS  # noqa: F401 (the default of --windows, kept beside its flag)
from market_data import FRAME_COLUMNS


@dataclass(frozen=True)
class WindowType:
    past: int
    future: int

    @property
    def name(self) -> str:
        return f"{self.past}:{self.future}"


def parse_windows(text: str) -> list[WindowType]:
    """'1:1,5:5,20:5,60:20' → WindowTypes. Any positive past:future pair is allowed."""
    windows = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", part)
        if not match or int(match[1]) < 1 or int(match[2]) < 1:
            raise ValueError(f"window {part!r} is not 'past:future' in trading days, e.g. 5:5")
        windows.append(WindowType(int(match[1]), int(match[2])))
    if len(set(windows)) != len(windows):
        raise ValueError(f"windows {text!r} repeat a window type")
    return windows


# field name → (label in the prompt, canonical frame column (the price cache's), integer?)
INTEGER_FIELDS = ("capacity", "turnover", "transaction")
FIELDS = {name: (name.capitalize(), column, name in INTEGER_FIELDS) for name, column in FRAME_COLUMNS.items()}
# The spec's prompt example (ohlcv) and the three column sets of its experiments (all, turnover, basic).
FIELD_SETS = {
    "ohlcv": ["open", "high", "low", "close", "capacity"],
    "all": ["capacity", "turnover", "open", "high", "low", "close", "change", "transaction"],
    "turnover": ["turnover", "open", "high", "low", "close", "transaction"],
    "basic": ["open", "high", "low", "close", "transaction"],
}
PRICE_FIELDS = ("open", "high", "low", "close")


def parse_fields(text: str) -> list[str]:
    """A field-set name (ohlcv, all, turnover, basic) or a comma list of field names."""
    if text in FIELD_SETS:
        return list(FIELD_SETS[text])
    fields = [f.strip().lower() for f in text.split(",") if f.strip()]
    unknown = [f for f in fields if f not in FIELDS]
    if unknown or not fields:
        raise ValueError(
            f"fields {text!r}: unknown {unknown}; use one of {sorted(FIELD_SETS)} or a comma list of {list(FIELDS)}"
        )
    missing = [f for f in PRICE_FIELDS if f not in fields]
    if missing:
        raise ValueError(f"fields {text!r} must include {list(PRICE_FIELDS)} (a forecast is a candle)")
    return fields


# --------------------------------------------------------------------------- prompt text


# How prices are written. "absolute": the spec's NTD prices. "change": every open/high/low/close, in the
# prompt and in the answer, as the % change from the last known close (the anchor), which the prompt states
# once in NTD: one scale for every stock, few digits to get wrong, and "no change" is literally +0.00%.
# "candle": close and open as % changes from the anchor, then the upper and lower wicks as unsigned % distances
# from the candle's body (high = max(open, close) × (1 + upper), low = min(open, close) × (1 − lower)): every
# string its grammar allows is a possible candle, so no sampled answer can be an impossible one.
ANSWER_FORMATS = ("absolute", "change", "candle")
CANDLE_LABELS = ("Close", "Open", "Upper", "Lower")  # the candle format's price fields, in this order


@dataclass(frozen=True)
class Anchor:
    """The last known close that a relative format writes prices against; `candle`: the candle format."""

    close: float
    candle: bool = False


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


def candle_parts(row: pd.Series, anchor: float) -> list[str]:
    """The candle format's price fields of one day: close and open as % changes from `anchor`, then the wicks as
    % distances from the body (a day whose high or low lies inside its body gets a wick of 0.00%)."""
    o, h, lo, c = (float(row[k]) for k in ("Open", "High", "Low", "Close"))
    upper = max(0.0, 100 * (h / max(o, c) - 1))
    lower = max(0.0, 100 * (1 - lo / min(o, c)))
    return [
        f"Close: {format_change(c, anchor)}",
        f"Open: {format_change(o, anchor)}",
        f"Upper: {upper + 0.0:.2f}%",
        f"Lower: {lower + 0.0:.2f}%",
    ]


def format_row(date: pd.Timestamp | dt.date, row: pd.Series, fields: list[str], anchor=None) -> str:
    """One day as the prompt writes it; with `anchor` (an Anchor, or a close for the change format), prices are
    % changes from it. The candle format writes its four price fields where the first price field stands."""
    anchor = _anchor(anchor)
    parts = [f"Date: {pd.Timestamp(date).strftime('%Y-%m-%d')}"]
    for name in fields:
        label, column, integer = FIELDS[name]
        if anchor is not None and anchor.candle and name in PRICE_FIELDS:
            if name == next(f for f in fields if f in PRICE_FIELDS):
                parts += candle_parts(row, anchor.close)
        elif anchor is not None and name in PRICE_FIELDS:
            parts.append(f"{label}: {format_change(row[column], anchor.close)}")
        else:
            parts.append(f"{label}: {format_number(row[column], integer)}")
    return ", ".join(parts)


def format_rows(frame: pd.DataFrame, fields: list[str], anchor=None) -> list[str]:
    """One prompt line per trading day."""
    return [format_row(date, row, fields, anchor) for date, row in frame.iterrows()]


def anchor_line(close: float, date: pd.Timestamp | dt.date) -> str:
    """The change format's statement of its anchor, between the title and the rows."""
    return f"Prices are % changes from the last close, {format_number(close, False)} on {pd.Timestamp(date):%Y-%m-%d}."


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


def anchor_of(past: pd.DataFrame, answer_format: str) -> Anchor | None:
    """The relative formats' anchor: the window's last known close (None for absolute prices)."""
    _check_format(answer_format)
    if answer_format == "absolute":
        return None
    return Anchor(float(past["Close"].iloc[-1]), candle=answer_format == "candle")


def user_prompt(
    name: str,
    past: pd.DataFrame,
    future: int,
    fields: list[str],
    context: str = "",
    answer_format: str = "absolute",
) -> str:
    anchor = anchor_of(past, answer_format)
    header = anchor_line(anchor.close, past.index[-1]) if anchor is not None else ""
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
    candle = answer_format == "candle"
    if candle:  # every string a possible candle: a fall stays above -100%, wicks unsigned, volume positive
        number["integer"] = r"[1-9][0-9]{0,11}"
        prices = [f"{label}: {_CANDLE_NUMBERS[label]}" for label in CANDLE_LABELS]
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


def answer_token_budget(future: int, fields: list[str]) -> int:
    """New tokens to allow for an answer of `future` rows: a row of the five ohlcv fields is ~67 SmolLM2
    tokens (it splits numbers into single digits), of all eight ~100; fewer with Llama-3's tokenizer.
    A cut answer would fail to parse, so the budget errs on the generous side."""
    return 32 + future * (12 + 16 * len(fields))


# --------------------------------------------------------------------------- parsing answers


class ForecastParseError(ValueError):
    """The model's answer is not `answer_text`'s format; the raw text goes with it to the user."""


_HEADER = re.compile(r"The next (\d+) day price is:")
_NUMBER = r"-?\d+(?:\.\d+)?"
_CHANGE = r"[+-]\d+(?:\.\d+)?%"
_WICK = r"\d+(?:\.\d+)?%"


def _row_pattern(fields: list[str], anchor: Anchor | None = None) -> tuple[re.Pattern, list[str]]:
    """(the row regex, the name of each of its groups after the date)."""
    parts, names = [r"Date: (\d{4}-\d{2}-\d{2})"], []
    for f in fields:
        if anchor is not None and anchor.candle and f in PRICE_FIELDS:
            if f == next(p for p in fields if p in PRICE_FIELDS):
                parts += [rf"{label}: ({_CHANGE if label in ('Close', 'Open') else _WICK})" for label in CANDLE_LABELS]
                names += list(CANDLE_LABELS)
            continue
        parts.append(rf"{FIELDS[f][0]}: ({_CHANGE if anchor is not None and f in PRICE_FIELDS else _NUMBER})")
        names.append(f)
    return re.compile(r"\s*" + r", ".join(parts) + r"\s*"), names


def _candle_prices(values: dict, anchor: float) -> dict:
    """Open/High/Low/Close of the candle format's four fields (never rounded: rounding could undo low ≤ body)."""
    o, c = (anchor * (1 + float(values[k].rstrip("%")) / 100) for k in ("Open", "Close"))
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
            raise ForecastParseError(f"row {line[:120]!r} is not in the format {', '.join(['Date'] + fields)}")
        try:
            date = pd.Timestamp(dt.date.fromisoformat(match[1]))
        except ValueError as exc:
            raise ForecastParseError(f"row date {match[1]!r} is not a calendar date") from exc
        record, values = {"Date": date}, dict(zip(names, match.groups()[1:], strict=True))
        if anchor is not None and anchor.candle:
            record |= _candle_prices(values, anchor.close)
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


# --------------------------------------------------------------------------- context: signals and news

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


def approx_tokens(text: str) -> int:
    """A tokenizer-free estimate: one token per CJK character, one per four other characters."""
    cjk = sum(1 for ch in text if "\u3400" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff")
    return cjk + math.ceil((len(text) - cjk) / 4)


def articles_as_of(articles: list[dict], as_of: dt.date, since: dt.date | None = None) -> list[dict]:
    """What was known on `as_of`: the articles published on or before it (Taipei date), and on or after `since`,
    newest first. The one as-of selection of headlines (the prompts' news lines, the forecaster's weeks)."""
    return sorted(
        (a for a in articles if a["taipei_date"] <= as_of and (since is None or since <= a["taipei_date"])),
        key=lambda a: (a["taipei_date"], a.get("taipei_time") or dt.datetime.min.replace(tzinfo=dt.UTC)),
        reverse=True,
    )


def news_lines(articles: list[dict], as_of: dt.date, max_articles: int, max_tokens: int) -> list[str]:
    """Headlines published on or before `as_of` (Taipei date), newest first, within a count and a token budget.

    `articles` carry `taipei_date` (datetime.date), `taipei_time` (for the order within a day) and `title`
    (optional `description`, `source`). Nothing dated after `as_of` can pass: that is what keeps a
    window's prompt free of later news.
    """
    known = articles_as_of(articles, as_of)
    lines, used = [], 0
    for article in known[:max_articles]:
        text = f"- {article['taipei_date']:%Y-%m-%d}"
        if article.get("source"):
            text += f" [{article['source']}]"
        text += f" {article['title'].strip()}"
        if article.get("description"):
            text += f": {article['description'].strip()}"
        cost = approx_tokens(text)
        if used + cost > max_tokens:
            break
        lines.append(text)
        used += cost
    return lines


# --------------------------------------------------------------------------- examples and the split


def window_spans(frame: pd.DataFrame, window: WindowType, fields: list[str], stride: int = 1):
    """([(start, mid, end)], skipped): row ranges of every window, input = [start, mid), target = [mid, end).
    Windows with a blank value in a chosen field are skipped, never filled."""
    columns = [FIELDS[f][1] for f in fields]
    span = window.past + window.future
    blank = frame[columns].isna().any(axis=1).to_numpy().cumsum()
    spans, skipped = [], 0
    for start in range(0, len(frame) - span + 1, stride):
        end = start + span
        if blank[end - 1] - (blank[start - 1] if start else 0):
            skipped += 1
        else:
            spans.append((start, start + window.past, end))
    return spans, skipped


def build_examples(
    frame: pd.DataFrame,
    name: str,
    code: str,
    window: WindowType,
    fields: list[str],
    stride: int = 1,
    context_for=None,
    answer_format: str = "absolute",
) -> tuple[list[dict], int]:
    """Every `past → future` window of one company's frame as a TRL prompt-completion example.

    Returns (examples, skipped): windows with a blank value in a chosen field are skipped, never filled.
    `context_for(input_end_date) -> (text, kind)` supplies as-of context (news, signals) when given; `kind`
    (e.g. "prices+signals+news") is recorded in the example's meta for ablations.
    """
    _check_format(answer_format)
    relative = answer_format != "absolute"
    columns = [FIELDS[f][1] for f in fields]
    blank = frame[columns].isna().any(axis=1).to_numpy()
    lines = ["" if blank[i] else format_row(d, frame.iloc[i], fields) for i, d in enumerate(frame.index)]
    days = frame.index.strftime("%Y-%m-%d")
    spans, skipped = window_spans(frame, window, fields, stride)
    examples = []
    for start, mid, end in spans:
        context, kind = context_for(frame.index[mid - 1]) if context_for else ("", "prices")
        if relative:  # every row relative to this window's own last close
            anchor = anchor_of(frame.iloc[:mid], answer_format)
            rows = format_rows(frame.iloc[start:end], fields, anchor)
            header = anchor_line(anchor.close, frame.index[mid - 1])
            prompt = user_prompt_lines(name, rows[: mid - start], window.future, context, header)
            answer = answer_lines(rows[mid - start :])
        else:
            prompt = user_prompt_lines(name, lines[start:mid], window.future, context)
            answer = answer_lines(lines[mid:end])
        examples.append(
            {
                "prompt": [{"role": "user", "content": prompt}],
                "completion": [{"role": "assistant", "content": answer}],
                "meta": {
                    "code": code,
                    "window": window.name,
                    "input_start": days[start],
                    "input_end": days[mid - 1],
                    "target_start": days[mid],
                    "target_end": days[end - 1],
                    "context": kind,
                },
            }
        )
    return examples, skipped


def split_cutoff(dates: list[pd.Timestamp], val_fraction: float) -> pd.Timestamp:
    """The trading date from which the last `val_fraction` of the calendar is held out."""
    unique = sorted(set(dates))
    if not 0 < val_fraction < 1:
        raise ValueError("val_fraction must be between 0 and 1")
    if len(unique) < 2:
        raise ValueError("need at least two trading dates to split")
    return unique[min(len(unique) - 1, max(1, math.floor(len(unique) * (1 - val_fraction))))]


def chronological_split(items: list, cutoff: pd.Timestamp | None, span=None) -> tuple[list, list, int]:
    """Train: targets end before `cutoff`. Validation: inputs start on or after it. Straddlers dropped.

    So every validation target lies at least `past` trading days after the last training target,
    and no validation input or target was ever a training target. One rule for the LLM's examples and
    the LSTM's windows: `span(item)` is an item's (first input day, last target day), by default an
    example's; no cutoff puts everything in train.
    """
    cut = pd.Timestamp.max if cutoff is None else cutoff
    spans = [(span or _example_span)(item) for item in items]
    train = [item for item, (_, last) in zip(items, spans, strict=True) if last < cut]
    val = [item for item, (first, _) in zip(items, spans, strict=True) if first >= cut]
    return train, val, len(items) - len(train) - len(val)


def _example_span(example: dict) -> tuple[dt.datetime, dt.datetime]:
    meta = example["meta"]
    return dt.datetime.fromisoformat(meta["input_start"]), dt.datetime.fromisoformat(meta["target_end"])


def shuffled(examples: list[dict], seed: int) -> list[dict]:
    """The examples in a seeded random order: any first N of them represent every company and window type
    in proportion (a date-sorted list cut at N would leave the last companies of the list out)."""
    import random

    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    return [examples[i] for i in order]
