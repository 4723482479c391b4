"""Jump-forward decoding: tokens the grammar forces are appended without a decode step, each sequence's forced run
fed in one forward. Literal automata for the forced-token detection; a tiny random Llama for the decode loop's
bookkeeping (left padding, holes, cache compaction, halving on out-of-memory); the real SmolLM2 on real prompts
(slow) for what matters: greedy answers token for token those of one token per step, samples valid answers."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

import model
from config import data_args, inference_args, model_args
from conftest import tiny_llama
from llm import checkpoints, generation, jump_forward, token_automaton
from llm.generation import Sampling
from market import price_files
from prompts import prompt_format
from utils import StockToolError

OHLCV = data_args.FIELD_SETS["ohlcv"]
EOS = 0


# --------------------------------------------------------------------------- forced tokens on literal automata


def literal_automaton(regex: str, vocabulary: dict[str, int]) -> token_automaton.TokenAutomaton:
    from outlines_core import Vocabulary

    return token_automaton.automaton(regex, Vocabulary(EOS, {k.encode(): [v] for k, v in vocabulary.items()}), EOS)


VOCABULARY = {"D": 1, "a": 2, "Da": 3, ":": 4, " ": 5, "\n": 6, **{str(d): 10 + d for d in range(10)}, "12": 20}


def test_a_state_is_forced_only_when_it_allows_one_token_and_that_is_not_the_end():
    tokens = np.array([[5, 5, 5], [6, 7, 6], [EOS, 9, 9], [EOS, EOS, EOS], [8, 8, 8]])
    assert token_automaton.forced_tokens(tokens, EOS).tolist() == [5, -1, -1, -1, 8]


def test_forced_runs_follow_single_token_states_to_the_next_choice():
    a = literal_automaton(r"Da: 1[0-9]\n", VOCABULARY)
    runs = token_automaton.forced_runs(a.tokens, a.next, EOS)
    assert runs.length[a.initial] == 0  # "D" or "Da": the model chooses the spelling
    after_d = token_automaton.walk(a, [1])
    assert token_automaton.forced_run(a, after_d, EOS) == [2, 4, 5]  # "a", ":", " "
    after_da = token_automaton.walk(a, [3])
    assert token_automaton.forced_run(a, after_da, EOS) == [4, 5]  # the same text, from the other spelling
    assert runs.end[after_d] == runs.end[after_da] == token_automaton.walk(a, [3, 4, 5])
    number = runs.end[after_da]
    assert runs.length[number] == 0 and not runs.complete[number]  # "1" or "12": a choice again
    last = token_automaton.walk(a, [3, 4, 5, 11, 13])
    assert token_automaton.forced_run(a, last, EOS) == [6]  # the newline; end-of-sequence is never forced ...
    assert runs.complete[runs.end[last]]  # ... but after it nothing else is allowed
    assert token_automaton.forced_run(a, a.states - 1, EOS) == []  # `done` allows only end-of-sequence
    for state in range(a.states):  # a run is a walk through the automaton
        assert walk_from(a, state, token_automaton.forced_run(a, state, EOS)) == runs.end[state]


def walk_from(a: token_automaton.TokenAutomaton, state: int, tokens: list[int]) -> int:
    for token in tokens:
        (slots,) = np.nonzero(a.tokens[state] == token)
        state = int(a.next[state, slots[0]])
    return state


def test_forced_runs_of_stacked_automata_stay_in_their_rows_automaton():
    one = literal_automaton(r"Da: 1\n", VOCABULARY)
    two = literal_automaton(r"D[0-9]\n", VOCABULARY)
    tokens, nexts, initial = token_automaton.stack([one, two])
    runs = token_automaton.forced_runs(tokens, nexts, EOS)
    assert runs.length[initial[0]] == 0 and runs.length[initial[1]] == 1  # "Da" or "D"; "D" only
    assert runs.tokens[initial[1], 0] == 1 and runs.end[initial[1]] >= one.states
    after_da = one.next[one.initial, list(one.tokens[one.initial]).index(3)]
    assert runs.tokens[after_da, : runs.length[after_da]].tolist() == [4, 5, 11, 6]  # ": 1\n" in one token each
    assert runs.complete[runs.end[after_da]]


def test_the_real_answer_grammar_forces_the_dates_and_the_labels_colons(tokenizer):
    grammars = token_automaton.Grammars(tokenizer)
    days = pd.bdate_range("2026-05-04", periods=2)
    a = grammars.compile(prompt_format.answer_regex(days, OHLCV, "change"), canonical=False)
    header = tokenizer("The next 2 day price is:\nDate", add_special_tokens=False)["input_ids"]
    state = token_automaton.walk(a, header)
    assert tokenizer.decode(token_automaton.forced_run(a, state, grammars.eos)) == ": 2026-05-04,"
    open_label = token_automaton.forced_runs(a.tokens, a.next, grammars.eos).end[state]
    assert len(set(a.tokens[open_label].tolist())) > 1  # " Open" or " O" + "pen"...: the model's choice
    spelled = grammars.compile(prompt_format.answer_regex(days, OHLCV, "change"))  # the tokenizer's own spelling
    state = token_automaton.walk(spelled, header)
    assert tokenizer.decode(token_automaton.forced_run(spelled, state, grammars.eos)) == ": 2026-05-04, Open:"


# --------------------------------------------------------------------------- the decode loop on a tiny random model


@pytest.fixture(scope="module")
def tiny(tokenizer):
    return model.LoadedModel(tiny_llama(tokenizer), tokenizer, cuda=False)


def literal_windows(future: int, past: int, names=("巨大", "台積電股份有限公司", "2330")):
    """Prompts of several lengths (a batch is left-padded) and their answers' grammars."""
    frame = market_data_frame(past + future)
    history, days = frame.iloc[:past], frame.index[past:]
    return [
        [{"role": "user", "content": prompt_format.user_prompt(name, history, future, OHLCV, answer_format="change")}]
        for name in names
    ], days


def market_data_frame(rows: int) -> pd.DataFrame:
    index = pd.DatetimeIndex(pd.bdate_range("2026-03-02", periods=rows), name="Date")
    close = 100 + np.cumsum(np.sin(np.arange(rows)))
    return pd.DataFrame(
        {"Open": close - 0.5, "High": close + 1, "Low": close - 1, "Close": close, "Volume": 1000.0 + np.arange(rows)},
        index=index,
    )


@pytest.mark.parametrize("answer_format", prompt_format.ANSWER_FORMATS)
@pytest.mark.parametrize("past, future", [(1, 1), (5, 5)])
def test_jump_forward_gives_the_one_token_per_step_answers_in_fewer_forwards(tiny, answer_format, past, future):
    prompts, days = literal_windows(future, past)
    regexes = [prompt_format.answer_regex(days, OHLCV, answer_format)] * len(prompts)
    before, after = {}, {}
    slow = generation.generate_token_ids(
        tiny, prompts, 8, Sampling(batch_size=8, jump_forward=False), regexes=regexes, stats=before
    )
    fast = generation.generate_token_ids(
        tiny, prompts, 8, Sampling(batch_size=8, engine="transformers"), regexes=regexes, stats=after
    )
    assert fast == slow
    assert after["path"] == "jump-forward" and before["path"] == "generate"
    assert after["forwards"] < before["forwards"]
    for group in fast:
        text = tiny.tokenizer.decode(group[0])
        assert re.fullmatch(regexes[0], text)


def test_compacting_the_cache_at_every_step_changes_no_answer(tiny, monkeypatch):
    prompts, days = literal_windows(5, 5)
    # rows of other formats drift apart: their forced runs come at other steps, and leave holes in the cache
    regexes = [prompt_format.answer_regex(days, OHLCV, f) for f in ("change", "absolute", "change")]
    plain = generation.generate_token_ids(tiny, prompts, 8, Sampling(batch_size=8, jump_forward=False), regexes=regexes)
    monkeypatch.setattr(jump_forward, "_SLACK", 0)
    stats: dict = {}
    compacted = generation.generate_token_ids(
        tiny, prompts, 8, Sampling(batch_size=8, engine="transformers"), regexes=regexes, stats=stats
    )
    assert compacted == plain
    assert stats["compactions"] > 0


def test_jump_forward_samples_are_answers_of_the_grammar_and_repeat_with_the_seed(tiny):
    prompts, days = literal_windows(5, 5, names=("巨大", "台積電股份有限公司"))
    regexes = [prompt_format.answer_regex(days, OHLCV, "change")] * 2

    def draw():
        return generation.generate_samples(
            tiny, prompts, 8, Sampling(batch_size=8, samples=3, temperature=1.0, engine="transformers"), regexes=regexes
        )

    answers = draw()
    assert len(answers) == 2 and all(len(group) == 3 for group in answers)
    assert all(re.fullmatch(regexes[0], a) for group in answers for a in group)
    assert len({a for group in answers for a in group}) > 1  # drawn, not greedy
    assert draw() == answers


def test_a_jump_forward_batch_too_big_for_the_gpu_is_generated_in_halves(tiny, caplog):
    import torch

    prompts, days = literal_windows(1, 1)
    regexes = [prompt_format.answer_regex(days, OHLCV, "change")] * 3
    expected = generation.generate_token_ids(
        tiny, prompts, 8, Sampling(batch_size=1, engine="transformers"), regexes=regexes
    )
    forward = tiny.model.forward

    def small_memory(*args, **kwargs):
        if kwargs["input_ids"].shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return forward(*args, **kwargs)

    tiny.model.forward = small_memory
    stats: dict = {}
    try:
        halved = generation.generate_token_ids(
            tiny, prompts, 8, Sampling(batch_size=3, engine="transformers"), regexes=regexes, stats=stats
        )
        assert halved == expected
        assert "out of GPU memory at 3 sequences" in caplog.text and stats["halvings"] == 2
        tiny.model.forward = lambda *a, **k: (_ for _ in ()).throw(torch.OutOfMemoryError("simulated"))
        with pytest.raises(StockToolError, match="does not fit the GPU's memory"):
            generation.generate_token_ids(
                tiny, prompts[:1], 8, Sampling(batch_size=1, engine="transformers"), regexes=regexes[:1]
            )
    finally:
        del tiny.model.forward


def test_free_decoding_and_other_processors_keep_generate(tiny, monkeypatch):
    prompts, days = literal_windows(1, 1)
    stats: dict = {}
    generation.generate_token_ids(tiny, prompts[:1], 4, stats=stats)  # no grammar: nothing is forced
    assert stats["path"] == "generate"
    monkeypatch.setattr(tiny.model.generation_config, "repetition_penalty", 1.3)
    regexes = [prompt_format.answer_regex(days, OHLCV, "change")]
    generation.generate_token_ids(tiny, prompts[:1], 4, regexes=regexes, stats=stats)
    assert stats["path"] == "generate"


def test_the_decoding_config_switches_jump_forward_and_defaults_to_it():
    from config import cli

    assert inference_args.InferenceConfig().jump_forward
    for flag, on in ((["--jump-forward", "0"], False), ([], True)):
        for argv in (["--train", "0", *flag], ["forecast", *flag]):
            assert cli.parse(argv).settings(cuda=True).inference.jump_forward is on


# --------------------------------------------------------------------------- the real SmolLM2 on real prompts


@pytest.fixture(scope="module")
def smollm2(tokenizer):
    return model.load_untuned(model_args.ModelConfig(model_name=str(checkpoints.smollm2_gguf())))


def real_windows(prices, codes: list[str], past: int, future: int, answer_format: str):
    prompts, regexes = [], []
    for code in codes:
        frame = price_files.parse_price_csv(prices / f"{code}.csv").dropna(subset=["Open", "Close", "Volume"])
        end = len(frame) - future
        history, target = frame.iloc[end - past : end], frame.iloc[end:]
        content = prompt_format.user_prompt(code, history, future, OHLCV, "", answer_format)
        prompts.append([{"role": "user", "content": content}])
        regexes.append(prompt_format.answer_regex(target.index, OHLCV, answer_format))
    return prompts, regexes


@pytest.mark.slow
@pytest.mark.parametrize(
    "answer_format, past, future, codes",
    [
        ("change", 1, 1, ["2330", "2454", "6569"]),
        ("change", 5, 5, ["2317", "3711"]),
        ("absolute", 1, 1, ["2330", "6569"]),
    ],
)
def test_real_greedy_answers_are_todays_token_for_token(smollm2, shared_data, answer_format, past, future, codes):
    """The default decoding (the static engine, the grammar in the tokenizer's spelling) gives the answers of
    today's: jump-forward through the model's own forward under the grammar of every spelling (itself the
    one-token-per-step answers: the tiny model's tests above)."""
    prompts, regexes = real_windows(shared_data / "prices", codes, past, future, answer_format)
    lengths = {smollm2.prompt_tokens(p) for p in prompts}
    assert len(lengths) > 1  # a left-padded batch
    before, after = {}, {}
    today = generation.generate_token_ids(
        smollm2,
        prompts,
        8,
        Sampling(batch_size=8, engine="transformers", canonical=False),
        regexes=regexes,
        stats=before,
    )
    default = generation.generate_token_ids(smollm2, prompts, 8, Sampling(batch_size=8), regexes=regexes, stats=after)
    assert default == today
    assert after["path"] == "static" and after["forwards"] < before["forwards"]
    for group, regex in zip(default, regexes, strict=True):
        assert re.fullmatch(regex, smollm2.tokenizer.decode(group[0]))


@pytest.mark.slow
@pytest.mark.parametrize("answer_format", ["change", "absolute"])
def test_real_samples_with_a_seed_are_answers_of_the_grammar(smollm2, shared_data, answer_format):
    prompts, regexes = real_windows(shared_data / "prices", ["2330", "2454"], 1, 1, answer_format)

    def draw():
        return generation.generate_samples(
            smollm2, prompts, 8, Sampling(batch_size=8, samples=3, temperature=0.7, seed=7), regexes=regexes
        )

    answers = draw()
    assert all(re.fullmatch(regex, a) for group, regex in zip(answers, regexes, strict=True) for a in group)
    assert draw() == answers
