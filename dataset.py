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
from dataclasses import dataclass

import pandas as pd

from config.data_args import FIELDS, WindowType
from config.defaults import DEFAULT_WINDOWS  # noqa: F401 (the default of --windows, kept beside its flag)
from prompts.prompt_format import (
    _check_format,
    anchor_line,
    anchor_of,
    answer_lines,
    format_row,
    format_rows,
    user_prompt_lines,
)


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


@dataclass(frozen=True)
class ExampleStyle:
    """How windows become examples: `stride` days between window starts; `context_for(input_end_date) ->
    (text, kind)` supplies as-of context (news, signals), `kind` (e.g. "prices+signals+news") recorded in the
    example's meta for ablations; `answer_format` one of prompts.prompt_format.ANSWER_FORMATS."""

    stride: int = 1
    context_for: object = None
    answer_format: str = "absolute"


def build_examples(
    frame: pd.DataFrame, name: str, code: str, window: WindowType, fields: list[str], style=ExampleStyle()
) -> tuple[list[dict], int]:
    """Every `past → future` window of one company's frame as a TRL prompt-completion example, written as
    `style` says. Returns (examples, skipped): windows with a blank value in a chosen field are skipped, never
    filled."""
    context_for, answer_format = style.context_for, style.answer_format
    _check_format(answer_format)
    relative = answer_format != "absolute"
    columns = [FIELDS[f][1] for f in fields]
    blank = frame[columns].isna().any(axis=1).to_numpy()
    lines = ["" if blank[i] else format_row(d, frame.iloc[i], fields) for i, d in enumerate(frame.index)]
    days = frame.index.strftime("%Y-%m-%d")
    spans, skipped = window_spans(frame, window, fields, style.stride)
    examples = []
    for start, mid, end in spans:
        context, kind = context_for(frame.index[mid - 1]) if context_for else ("", "prices")
        if relative:  # every row relative to this window's own last close
            anchor = anchor_of(frame.iloc[:mid], answer_format)
            rows = format_rows(frame.iloc[start:end], fields, anchor)
            header = anchor_line(anchor, frame.index[mid - 1])
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
