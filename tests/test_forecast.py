"""Forecast quality machinery: the change format, the answer grammar, sampled forecasts and their scores,
the probabilistic random walk, the forecast files, and training-example selection. Literal inputs where
the arithmetic is checked; the real SmolLM2 tokenizer where the grammar meets a vocabulary."""

from __future__ import annotations

import json
import math
import re
import weakref

import numpy as np
import pandas as pd
import pytest

import dataset
import main as cli
import model
from config import data_args, model_args, training_args
from config.cli import parse
from config.data_args import WindowType
from config.inference_args import InferenceConfig
from conftest import candles
from evaluation import baselines, forecast_windows, metrics
from forecasting import reading
from forecasting.forecast_files import write_forecast_files
from forecasting.reading import Forecast, Question, read_forecast, read_samples
from llm import checkpoints, generation, patches, sft, token_automaton
from llm.generation import Sampling
from prompts import answer_parser, prompt_format
from utils import StockToolError

OHLCV = data_args.FIELD_SETS["ohlcv"]
DAYS = pd.DatetimeIndex(["2026-04-27", "2026-04-28", "2026-04-29", "2026-04-30", "2026-05-04"], name="Date")
FRAME = pd.DataFrame(
    {
        "Open": [100.0, 101.0, 99.5, 102.0, 103.0],
        "High": [102.0, 103.5, 101.0, 104.0, 105.0],
        "Low": [99.0, 100.5, 98.0, 101.0, 102.5],
        "Close": [101.0, 100.0, 100.5, 103.5, 104.0],
        "Volume": [1000.0, 1200.0, 900.0, 1500.0, 1100.0],
    },
    index=DAYS,
)


# --------------------------------------------------------------------------- the change format


def test_the_change_format_states_prices_relative_to_the_last_close_and_parses_back():
    prompt = prompt_format.user_prompt("巨大", FRAME.iloc[:3], 2, OHLCV, answer_format="change")
    assert "Prices are % changes from the last close, 100.5 on 2026-04-29." in prompt
    assert "Date: 2026-04-29, Open: -1.00%, High: +0.50%, Low: -2.49%, Close: +0.00%, Capacity: 900" in prompt
    answer = prompt_format.answer_text(FRAME.iloc[3:], OHLCV, anchor=100.5)
    assert (
        answer.splitlines()[1]
        == "Date: 2026-04-30, Open: +1.49%, High: +3.48%, Low: +0.50%, Close: +2.99%, Capacity: 1500"
    )
    parsed = answer_parser.parse_answer(answer, OHLCV, expected=2, anchor=100.5)
    # two decimals of a percent: within half a basis point of the anchor
    assert np.allclose(
        parsed[["Open", "High", "Low", "Close"]], FRAME.iloc[3:][["Open", "High", "Low", "Close"]], atol=0.006
    )
    assert list(parsed["Volume"]) == [1500.0, 1100.0]


def test_change_examples_use_each_windows_own_last_close():
    examples, _ = dataset.build_examples(
        FRAME, "巨大", "9921", WindowType(2, 1), OHLCV, dataset.ExampleStyle(answer_format="change")
    )
    first = examples[0]
    assert "last close, 100.0 on 2026-04-28" in first["prompt"][0]["content"]
    assert first["completion"][0]["content"].splitlines()[1].startswith("Date: 2026-04-29, Open: -0.50%")
    with pytest.raises(ValueError, match="answer format"):
        dataset.build_examples(
            FRAME, "巨大", "9921", WindowType(2, 1), OHLCV, dataset.ExampleStyle(answer_format="percent")
        )


# --------------------------------------------------------------------------- the answer grammar


@pytest.mark.parametrize("answer_format", prompt_format.ANSWER_FORMATS)
@pytest.mark.parametrize("fields", ["ohlcv", "all"])
def test_the_grammar_accepts_the_builders_answers_and_nothing_with_other_dates(answer_format, fields):
    chosen = data_args.parse_fields(fields)
    frame = FRAME.assign(Turnover=1e6, Change=-0.5, Transaction=42.0)
    anchor = prompt_format.anchor_of(frame.iloc[:3], answer_format)
    answer = prompt_format.answer_text(frame.iloc[3:], chosen, anchor=anchor)
    regex = prompt_format.answer_regex(frame.index[3:], chosen, answer_format)
    assert re.fullmatch(regex, answer)
    assert not re.fullmatch(regex, answer.replace("2026-05-04", "2026-05-02"))  # a date is never the model's guess
    assert not re.fullmatch(regex, answer + "I think it goes up.\n")
    assert not re.fullmatch(regex, answer.replace("Open: ", "Open:  ", 1))


def test_the_token_automaton_accepts_the_answer_in_any_tokenization_and_rejects_others(tokenizer):
    grammars = token_automaton.Grammars(tokenizer)
    automaton = grammars.compile(prompt_format.answer_regex(DAYS[3:], OHLCV, "change"), canonical=False)
    answer = prompt_format.answer_text(FRAME.iloc[3:], OHLCV, anchor=100.5)
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    assert token_automaton.accepts(automaton, ids, grammars.eos)
    by_character = [tokenizer.convert_tokens_to_ids(tokenizer.tokenize(ch))[0] for ch in answer]
    assert token_automaton.accepts(automaton, by_character, grammars.eos)  # another tokenization, same text
    spelled = grammars.compile(prompt_format.answer_regex(DAYS[3:], OHLCV, "change"))  # the default: labels spelled
    assert token_automaton.accepts(spelled, ids, grammars.eos)  # as the tokenizer spells them
    assert not token_automaton.accepts(spelled, by_character, grammars.eos)
    assert not token_automaton.accepts(automaton, ids[:-3], grammars.eos)  # incomplete: no end of sequence yet
    wrong_day = tokenizer(answer.replace("2026-05-04", "2026-05-05"), add_special_tokens=False)["input_ids"]
    assert token_automaton.walk(automaton, wrong_day) is None
    assert token_automaton.longest_answer(automaton) >= len(by_character) + 1


def test_stacked_automata_keep_each_rows_own_grammar(tokenizer):
    grammars = token_automaton.Grammars(tokenizer)
    one = grammars.compile(prompt_format.answer_regex(DAYS[3:4], OHLCV, "change"))
    two = grammars.compile(prompt_format.answer_regex(DAYS[3:], OHLCV, "change"))
    tokens, nexts, initial = token_automaton.stack([one, two, one])
    assert tokens.shape == nexts.shape and len(tokens) == one.states + two.states
    assert initial[0] == initial[2] == one.initial and initial[1] == one.states + two.initial
    assert np.array_equal(tokens[initial[1]][: two.tokens.shape[1]], two.tokens[two.initial])


def test_constrained_generation_on_the_real_model_always_matches(tokenizer):
    """Even the untuned SmolLM2, which never answers in the format by itself, writes it under the grammar."""
    loaded = model.load_untuned(model_args.ModelConfig(model_name=str(checkpoints.smollm2_gguf())))
    prompt = [
        {
            "role": "user",
            "content": prompt_format.user_prompt("巨大", FRAME.iloc[:3], 1, OHLCV, answer_format="change"),
        }
    ]
    regex = prompt_format.answer_regex(DAYS[3:4], OHLCV, "change")
    answers = generation.generate_samples(loaded, [prompt], 8, Sampling(batch_size=2, samples=2), regexes=[regex])
    assert len(answers) == 1 and len(answers[0]) == 2
    assert all(re.fullmatch(regex, a) for a in answers[0])


def test_folded_grouped_query_decode_attention_is_the_same_attention():
    """unsloth's batched decode step asks SDPA for grouped-query attention under a padding mask; folding the
    query heads onto their key/value head gives the same result (and another kernel on the GPU)."""
    import torch

    sdpa = torch.nn.functional.scaled_dot_product_attention
    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs.get("enable_gqa", False))
        return sdpa(*args, **kwargs)

    folded = patches.fold_gqa_decode(spy)
    torch.manual_seed(0)
    batch, heads, kv_heads, length, dim = 4, 9, 3, 23, 64
    query = torch.randn(batch, 1, heads, dim).transpose(1, 2)  # as unsloth lays it out
    key = torch.randn(length, batch, kv_heads, dim).permute(1, 2, 0, 3)  # its paged cache, strided
    value = torch.randn(length, batch, kv_heads, dim).permute(1, 2, 0, 3)
    keep = torch.ones(batch, 1, 1, length, dtype=torch.bool)
    keep[0, ..., :6] = False  # left padding
    keep[2, ..., :1] = False
    expected = sdpa(query, key, value, attn_mask=keep, is_causal=False, enable_gqa=True)
    got = folded(query, key, value, attn_mask=keep, is_causal=False, enable_gqa=True)
    assert got.shape == expected.shape and torch.allclose(got, expected, atol=1e-5)
    assert calls == [False]  # the folded call needs no grouped-query support
    # anything else passes through unchanged: a prompt (several query positions), plain multi-head attention
    prompt = torch.randn(batch, heads, 5, dim)
    assert torch.equal(folded(prompt, key, value, enable_gqa=True), sdpa(prompt, key, value, enable_gqa=True))
    same = torch.randn(batch, kv_heads, 1, dim)
    assert torch.equal(folded(same, key, value, attn_mask=keep), sdpa(same, key, value, attn_mask=keep))
    assert calls == [False, True, False]
    assert patches.fold_gqa_decode(spy).folds_gqa


def test_a_batch_too_big_for_the_gpu_is_generated_in_halves_with_the_same_answers(tokenizer, caplog):
    import torch

    loaded = model.load_untuned(model_args.ModelConfig(model_name=str(checkpoints.smollm2_gguf())))
    prompts = [
        [
            {
                "role": "user",
                "content": prompt_format.user_prompt(name, FRAME.iloc[:3], 1, OHLCV, answer_format="change"),
            }
        ]
        for name in ("巨大", "台積電", "聯發科")
    ]
    regexes = [prompt_format.answer_regex(DAYS[3:4], OHLCV, "change")] * 3

    # `generate`'s path (jump-forward's halving: tests/test_jump_forward.py)
    def one_per_step(loaded, prompts, n, batch_size, regexes, stats=None):
        how = Sampling(batch_size=batch_size, jump_forward=False, stop_after=6)
        return generation.generate_samples(loaded, prompts, n, how, regexes, stats)

    expected = one_per_step(loaded, prompts, 8, batch_size=1, regexes=regexes)
    generate = loaded.model.generate

    class Cache:  # stands for the key/value cache a failed batch had filled
        pass

    failed, held = [], []

    def small_memory(**kwargs):
        if kwargs["input_ids"].shape[0] > 1:
            cache = Cache()
            failed.append(weakref.ref(cache))
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        held.append(any(ref() is not None for ref in failed))  # the halves run once the failed batch is freed
        return generate(**kwargs)

    loaded.model.generate = small_memory
    assert one_per_step(loaded, prompts, 8, batch_size=3, regexes=regexes) == expected
    assert "out of GPU memory at 3 sequences" in caplog.text
    assert failed and held and not any(held)
    with pytest.raises(StockToolError, match="does not fit the GPU's memory"):
        loaded.model.generate = lambda **kwargs: (_ for _ in ()).throw(torch.OutOfMemoryError("simulated"))
        one_per_step(loaded, prompts[:1], 8, batch_size=1, regexes=regexes[:1])


# --------------------------------------------------------------------------- samples, medians and scores


def test_median_and_quantiles_of_literal_samples():
    samples = np.array([[[1.0]], [[2.0]], [[3.0]], [[10.0]]])
    assert reading.median_forecast(samples)[0, 0] == 2.5
    q = reading.sample_quantiles(np.array([0.0, 1.0, 2.0, 3.0, 4.0]), (0.1, 0.5, 0.9))
    assert q.tolist() == pytest.approx([0.4, 2.0, 3.6])


def test_the_median_of_valid_candles_is_a_valid_candle():
    rng = np.random.default_rng(0)
    for _ in range(200):
        o, c = rng.uniform(90, 110, 5), rng.uniform(90, 110, 5)
        h = np.maximum(o, c) + rng.uniform(0, 3, 5)
        low = np.minimum(o, c) - rng.uniform(0, 3, 5)
        m = reading.median_forecast(np.stack([o, h, low, c], axis=1)[:, None, :])[0]
        assert m[2] <= min(m[0], m[3]) and max(m[0], m[3]) <= m[1]


def test_crps_pinball_and_coverage_on_literal_inputs():
    assert metrics.crps_ensemble(np.array([0.0]), 1.0) == 1.0  # a point forecast: CRPS is its absolute error
    assert metrics.crps_ensemble(np.array([0.0, 1.0]), 0.5) == pytest.approx(0.25)
    assert metrics.crps_ensemble(np.array([1.0, 3.0, 2.0, 0.0]), 2.0) == pytest.approx(0.375)
    # pinball at τ=0.1 and 0.9: y above both quantiles
    assert metrics.pinball_loss(np.array([1.0, 2.0]), 3.0, (0.1, 0.9)) == pytest.approx((0.1 * 2 + 0.9 * 1) / 2)
    assert metrics.pinball_loss(np.array([1.0, 2.0]), 0.0, (0.1, 0.9)) == pytest.approx((0.9 * 1 + 0.1 * 2) / 2)
    window = forecast_windows.TestWindow("1", "x", WindowType(1, 1), FRAME.iloc[:4], FRAME.iloc[4:])
    dist = [np.array([[100.0], [103.0], [104.0], [105.0], [110.0]])]  # closes; the actual is 104.0
    rows = metrics.add_errors(
        metrics.forecast_rows("m", [window], [np.tile(104.0, (1, 4))], dist, {"random_walk": dist})
    )
    row = rows.iloc[0]
    assert row["covered80"] and row["covered95"] and row["crps"] == row["ref_crps_random_walk"]
    assert row["q0500"] == 104.0
    table = metrics.metrics_table(rows, n_boot=0)
    assert table["m"]["1:1"]["all"]["coverage80"] == 1.0 and table["m"]["1:1"]["all"]["crps_skill"] == 0.0


def test_bias_is_mean_forecast_return_minus_mean_actual_return():
    window = forecast_windows.TestWindow("1", "x", WindowType(1, 1), FRAME.iloc[:4], FRAME.iloc[4:])  # 103.5 → 104.0
    rows = metrics.add_errors(metrics.forecast_rows("m", [window], [np.tile(103.5 * 0.99, (1, 4))]))
    s = metrics.metrics_table(rows, n_boot=0)["m"]["1:1"]["all"]
    assert s["mean_forecast_return"] == pytest.approx(-1.0)
    assert s["mean_actual_return"] == pytest.approx(100 * (104.0 / 103.5 - 1))
    assert s["bias"] == pytest.approx(-1.0 - 100 * (104.0 / 103.5 - 1))
    assert s["coverage80"] is None  # a deterministic forecast has no distribution


def test_the_random_walk_sees_no_test_period_data():
    frame = FRAME.copy()
    returns = baselines.horizon_returns(frame, 1, pd.Timestamp("2026-04-29"))
    assert returns.tolist() == pytest.approx([100.0 / 101.0 - 1, 100.5 / 100.0 - 1])
    frame.loc["2026-04-30":, "Close"] = 1e6  # the test period changes wildly: nothing before it moves
    assert baselines.horizon_returns(frame, 1, pd.Timestamp("2026-04-29")).tolist() == pytest.approx(returns.tolist())
    table = baselines.random_walk_returns({"1": frame}, [WindowType(1, 2)], pd.Timestamp("2026-04-29"), minimum=1)
    assert set(table) == {("1", 1), ("1", 2)} and len(table[("1", 2)]) == 1


def test_impossible_samples_are_draws_but_an_impossible_median_fails_and_is_never_repaired():
    good = prompt_format.answer_text(FRAME.iloc[4:], OHLCV)
    bad = good.replace("Low: 102.5", "Low: 109.0")  # low above open and close: an impossible candle
    read = read_samples([good, bad, good, "no idea"], OHLCV, 1, DAYS[3])
    assert read.ok and read.usable == 3 and read.impossible == 1 and "1 of 4 samples unusable" in read.problem
    assert read.point["Low"].iloc[0] == 102.5  # the median of 102.5, 109.0, 102.5: a possible candle
    assert read_samples([good, "x", "y", "no idea"], OHLCV, 1, DAYS[3]).point is None  # fewer than half parse
    failed = read_samples([good, bad, bad], OHLCV, 1, DAYS[3])  # the median low is 109: impossible
    assert not failed.ok and failed.problem.startswith("the median candle is impossible")
    single = read_samples([bad], OHLCV, 1, DAYS[3])  # greedy: the one answer is the forecast
    assert not single.ok and single.problem.startswith("invalid: ")
    told = read_forecast(Question("9921", "巨大", FRAME.iloc[:4], tuple(OHLCV), 1), [good, bad, good])
    assert told.ok and any("1 of 3 samples were impossible candles" in n for n in told.notes)


def test_free_samples_with_other_dates_are_not_combined():
    good = prompt_format.answer_text(FRAME.iloc[4:], OHLCV)
    shifted = good.replace("2026-05-04", "2026-05-05")
    read = read_samples([good, good, shifted], OHLCV, 1, DAYS[3])
    assert read.ok and read.usable == 2 and "1 of 3 samples unusable" in read.problem
    assert list(read.point.index) == [pd.Timestamp("2026-05-04")]


def test_a_sampled_forecast_has_bands_and_its_files_are_written_whole(tmp_path):
    answers = [
        prompt_format.answer_text(FRAME.iloc[4:].assign(Close=c, High=106.0), OHLCV) for c in (103.0, 104.0, 105.0)
    ]
    result = read_forecast(Question("9921", "巨大", FRAME.iloc[:4], tuple(OHLCV), 1), answers)
    assert result.ok and result.bands is not None and result.forecast["Close"].iloc[0] == 104.0
    paths = write_forecast_files(result, tmp_path / "9921_20260430_4to1")
    frame = pd.read_csv(paths[0], index_col="Date")
    assert frame.loc["2026-05-04", "Close_q0.5"] == pytest.approx(104.0)
    assert frame.loc["2026-05-04", "Close_q0.1"] == pytest.approx(103.2)
    record = json.loads(paths[1].read_text(encoding="utf-8"))
    assert record["samples"] == 3 and record["bands"]["80%"] == ["q0.1", "q0.9"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["9921_20260430_4to1.csv", "9921_20260430_4to1.json"]


def test_a_greedy_forecast_has_no_bands():
    result = read_forecast(
        Question("9921", "巨大", FRAME.iloc[:4], tuple(OHLCV), 1), [prompt_format.answer_text(FRAME.iloc[4:], OHLCV)]
    )
    assert isinstance(result, Forecast) and result.ok and result.bands is None


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--samples", "0"], "--samples 0"),
        (["--temperature", "-0.5"], "--temperature -0.5"),
        (["--temperature", "nan"], "--temperature nan"),
        (["--band", "1.5"], "--band 1.5"),
        (["--band", "0"], "--band 0.0"),
    ],
)
def test_bad_decoding_flags_are_one_clear_line(flags, message, capsys, tmp_path):
    code = cli.main(["--train", "0", "--output-dir", str(tmp_path), *flags])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: {message}") and "Traceback" not in err


def test_the_command_lines_sampling_defaults_are_the_decoding_configs():
    args = parse(["--train", "0"]).args
    default = InferenceConfig()
    assert (args.samples, args.temperature, args.band) == (default.samples, default.temperature, default.band)
    assert (args.decoding == "constrained") == default.constrained


def test_decoding_config_is_checked_where_it_is_made():
    with pytest.raises(StockToolError):
        InferenceConfig(samples=-1)
    assert InferenceConfig(samples=8, temperature=0.7).describe().startswith("median of 8 samples")


# --------------------------------------------------------------------------- training selection


def test_the_examples_a_short_run_trains_on_cover_every_company_and_window_in_proportion():
    companies, windows = [f"{i:04d}" for i in range(5)], ["1:1", "5:5"]
    examples = [
        {"meta": {"code": c, "window": w, "n": n}} for c in companies for w in windows for n in range(400)
    ]  # in the order they are built: company by company
    settings = training_args.TrainConfig(max_steps=60, per_device_train_batch_size=8, gradient_accumulation_steps=4)
    picked = sft._examples_for_steps(examples, settings, seed=3407)[: 60 * 8 * 4]
    share = pd.Series([(e["meta"]["code"], e["meta"]["window"]) for e in picked]).value_counts(normalize=True)
    assert (
        len(share) == 10
        and math.isclose(share.min(), 0.1, abs_tol=0.03)
        and math.isclose(share.max(), 0.1, abs_tol=0.03)
    )
    assert sft._examples_for_steps(examples, settings, seed=3407) == sft._examples_for_steps(examples, settings, 3407)


# --------------------------------------------------------------------------- the candle format


def test_the_candle_format_writes_wicks_and_parses_back_to_the_same_candles():
    anchor = prompt_format.Anchor(100.5, candle=True)
    answer = prompt_format.answer_text(FRAME.iloc[3:], OHLCV, anchor=anchor)
    # 2026-04-30: open 102 (+1.49%), close 103.5 (+2.99%), high 104 = 103.5 × 1.0048, low 101 = 102 × (1 − 0.98%)
    assert answer.splitlines()[1] == (
        "Date: 2026-04-30, Close: +2.99%, Open: +1.49%, Upper: 0.48%, Lower: 0.98%, Capacity: 1500"
    )
    parsed = answer_parser.parse_answer(answer, OHLCV, expected=2, anchor=anchor)
    assert np.allclose(
        parsed[["Open", "High", "Low", "Close"]], FRAME.iloc[3:][["Open", "High", "Low", "Close"]], atol=0.02
    )
    assert not answer_parser.validate_forecast(parsed)
    prompt = prompt_format.user_prompt("巨大", FRAME.iloc[:3], 2, OHLCV, answer_format="candle")
    assert "Prices are % changes from the last close, 100.5 on 2026-04-29." in prompt
    assert "Date: 2026-04-29, Close: +0.00%, Open: -1.00%, Upper: 0.50%, Lower: 1.51%, Capacity: 900" in prompt
    examples, _ = dataset.build_examples(
        FRAME, "巨大", "9921", WindowType(2, 1), OHLCV, dataset.ExampleStyle(answer_format="candle")
    )
    assert examples[0]["completion"][0]["content"].splitlines()[1].startswith("Date: 2026-04-29, Close: +0.50%")
    # the other price fields' places: a field set with turnover keeps its order around the candle block
    fields = data_args.parse_fields("turnover")
    frame = FRAME.assign(Turnover=1e6, Transaction=42.0)
    row = prompt_format.answer_text(frame.iloc[3:4], fields, anchor=anchor).splitlines()[1]
    assert row.startswith("Date: 2026-04-30, Turnover: 1000000, Close: +2.99%") and row.endswith("Transaction: 42")


def test_the_scaled_format_writes_volatility_units_and_parses_back_to_the_same_candles():
    """Log changes in units of the 20-day volatility: 2026-04-30's close 103.5 against 100.5 is ln(1.0299) / σ."""
    history = candles([100.0, 101.0, 99.5, 100.5])
    anchor = prompt_format.anchor_of(history, "scaled")
    sigma = float(np.std(np.diff(np.log([100.0, 101.0, 99.5, 100.5]))))
    assert anchor == prompt_format.Anchor(100.5, candle=True, scale=pytest.approx(sigma))
    answer = prompt_format.answer_text(FRAME.iloc[3:], OHLCV, anchor=anchor)
    row = answer.splitlines()[1]
    assert row.startswith(f"Date: 2026-04-30, Close: +{np.log(103.5 / 100.5) / sigma:.2f}, Open: +") and "%" not in row
    assert re.fullmatch(prompt_format.answer_regex(DAYS[3:], OHLCV, "scaled"), answer)
    parsed = answer_parser.parse_answer(answer, OHLCV, expected=2, anchor=anchor)
    # two decimals of a unit: within 0.005 σ of log price
    assert np.allclose(
        np.log(parsed[["Open", "High", "Low", "Close"]].to_numpy(float)),
        np.log(FRAME.iloc[3:][["Open", "High", "Low", "Close"]].to_numpy(float)),
        atol=0.0051 * sigma,
    )
    prompt = prompt_format.user_prompt("巨大", FRAME.iloc[2:3], 2, OHLCV, answer_format=anchor)
    assert f"in units of the stock's daily volatility over 20 days (1 unit = {100 * sigma:.2f}%)" in prompt
    assert prompt_format.daily_volatility(candles([50.0] * 30)) == prompt_format.MIN_VOL
    # training examples: each window's unit from the prices up to its own last day, and the answer reads back
    long = candles(list(100 * np.exp(np.cumsum(np.random.default_rng(2).normal(0, 0.02, 40)))))
    examples, _ = dataset.build_examples(
        long, "巨大", "9921", WindowType(5, 5), OHLCV, dataset.ExampleStyle(answer_format="scaled")
    )
    last = examples[-1]
    assert "(1 unit = " in last["prompt"][0]["content"]
    unit = prompt_format.anchor_of(long.iloc[:35], "scaled")
    back = answer_parser.parse_answer(last["completion"][0]["content"], OHLCV, expected=5, anchor=unit)
    assert np.allclose(back["Close"], long["Close"].iloc[35:], rtol=0.01 * unit.scale)


@pytest.mark.parametrize("fields", ["ohlcv", "all"])
def test_every_string_of_the_candle_grammar_is_a_possible_candle(fields):
    """Random strings of the grammar (each free character drawn at random, the extremes forced in) all parse
    into possible candles: low ≤ open, close ≤ high, every price and volume positive."""
    chosen = data_args.parse_fields(fields)
    anchor = prompt_format.Anchor(12.3, candle=True)
    regex = prompt_format.answer_regex(DAYS[3:], chosen, "candle")
    assert re.fullmatch(
        regex,
        prompt_format.answer_text(FRAME.assign(Turnover=1e6, Change=-0.5, Transaction=42.0).iloc[3:], chosen, anchor),
    )
    rng = np.random.default_rng(0)

    def number(kind):
        if kind == "change":
            sign = rng.choice(["+", "-"])
            digits = rng.integers(1, 4 if sign == "+" else 3)
            return (
                sign
                + "".join(rng.choice(list("0123456789"), digits))
                + "."
                + "".join(rng.choice(list("0123456789"), 2))
                + "%"
            )
        if kind == "wick":
            return (
                "".join(rng.choice(list("0123456789"), rng.integers(1, 3)))
                + "."
                + "".join(rng.choice(list("0123456789"), 2))
                + "%"
            )
        return str(rng.integers(1, 10)) + "".join(rng.choice(list("0123456789"), rng.integers(0, 12)))

    extremes = ["-99.99%", "-99.99%", "99.99%", "99.99%"]  # the lowest candle the grammar allows
    for trial in range(300):
        rows = []
        for date in DAYS[3:]:
            parts = [f"Date: {date:%Y-%m-%d}"]
            for name in chosen:
                label, _, integer = data_args.FIELDS[name]
                if name in data_args.PRICE_FIELDS:
                    if name == next(f for f in chosen if f in data_args.PRICE_FIELDS):
                        values = (
                            extremes
                            if trial == 0
                            else [number("change"), number("change"), number("wick"), number("wick")]
                        )
                        parts += [f"{k}: {v}" for k, v in zip(prompt_format.CANDLE_LABELS, values, strict=True)]
                    continue
                parts.append(f"{label}: {number('int') if integer else '-1.5'}")
            rows.append(", ".join(parts))
        text = "The next 2 day price is:\n" + "\n".join(rows) + "\n"
        assert re.fullmatch(regex, text), text
        parsed = answer_parser.parse_answer(text, chosen, expected=2, anchor=anchor)
        assert not answer_parser.validate_forecast(parsed, DAYS[2]), text


@pytest.mark.parametrize("answer_format", ["candle", "scaled"])
def test_random_token_paths_of_the_candle_automaton_are_possible_candles(tokenizer, answer_format):
    """Walk the real tokenizer's automaton of the candle grammar (and of its scaled form) with random allowed
    tokens until it may end: every answer it can produce parses into possible candles (what K sampled answers
    are drawn from)."""
    grammars = token_automaton.Grammars(tokenizer)
    automaton = grammars.compile(prompt_format.answer_regex(DAYS[3:], OHLCV, answer_format))
    anchor = prompt_format.Anchor(8.0, candle=True, scale=0.02 if answer_format == "scaled" else 0.0)
    rng = np.random.default_rng(1)
    for _ in range(200):
        state, ids = automaton.initial, []
        while True:
            allowed = set(automaton.tokens[state].tolist())
            choices = sorted(allowed - {grammars.eos})
            if not choices or (grammars.eos in allowed and rng.random() < 0.5):
                break
            token = int(rng.choice(choices))
            state = token_automaton.walk(automaton, [*ids, token])
            ids.append(token)
        assert token_automaton.accepts(automaton, ids, grammars.eos)
        text = tokenizer.decode(ids)
        parsed = answer_parser.parse_answer(text, OHLCV, expected=2, anchor=anchor)
        assert not answer_parser.validate_forecast(parsed, DAYS[2]), text
