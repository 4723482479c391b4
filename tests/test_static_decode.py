"""The static engine (`static_decode.py`, `generation._static_batch`) and the grammar in the tokenizer's spelling
(`constrained.canonical_automaton`): the engine's logits are the model's, its answers those of the model's own
forward token for token (rows in lockstep, forced runs fed in one forward, samples sharing their prompt's
prefill), LoRA adapters merged or beside the weights, a batch too big for the GPU halved, models it cannot run
left to the other path; the spelled grammar accepts the same text and forces every label."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

import model
from config import data_args
from conftest import tiny_llama
from llm import generation, static_decode, token_automaton
from llm.generation import Sampling
from prompts import prompt_format
from utils import StockToolError

OHLCV = data_args.FIELD_SETS["ohlcv"]


@pytest.fixture(scope="module")
def tiny(tokenizer):
    return model.LoadedModel(tiny_llama(tokenizer), tokenizer, cuda=False)


@pytest.fixture(scope="module")
def tiny_lora(tokenizer):
    """The tiny model with a LoRA adapter whose B is random (PEFT starts it at 0, which would change nothing)."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=model.LORA_TARGETS, task_type="CAUSAL_LM")
    peft = get_peft_model(tiny_llama(tokenizer, seed=2), config)
    for name, weight in peft.named_parameters():
        if "lora_B" in name:
            weight.data.normal_(0, 0.5)
    return model.LoadedModel(peft.eval(), tokenizer, cuda=False)


def frame(rows: int) -> pd.DataFrame:
    index = pd.DatetimeIndex(pd.bdate_range("2026-03-02", periods=rows), name="Date")
    close = 100 + np.cumsum(np.sin(np.arange(rows)))
    return pd.DataFrame(
        {"Open": close - 0.5, "High": close + 1, "Low": close - 1, "Close": close, "Volume": 1000.0 + np.arange(rows)},
        index=index,
    )


def windows(past: int, future: int, formats=("change",) * 3):
    """Prompts of several lengths (the batch is left-padded) and each one's answer grammar."""
    data = frame(past + future)
    history, days = data.iloc[:past], data.index[past:]
    names = ("巨大", "台積電股份有限公司", "2330")
    prompts = [
        [{"role": "user", "content": prompt_format.user_prompt(n, history, future, OHLCV, answer_format=f)}]
        for n, f in zip(names, formats, strict=True)
    ]
    return prompts, [prompt_format.answer_regex(days, OHLCV, f) for f in formats]


# --------------------------------------------------------------------------- the engine's forward


def test_the_engine_computes_the_models_own_logits(tiny):
    import torch

    ids = tiny.tokenizer(["Here is past 1 day", "Date: 2026-05-04, Open: +0.36%"], add_special_tokens=False)
    prompts = ids["input_ids"]
    engine = static_decode.Engine(tiny.model, merge=False)
    engine.ensure_positions(64)
    cache = engine.cache(2, 64)
    logits, width = engine.prefill(cache, prompts)
    for row, prompt in enumerate(prompts):
        with torch.no_grad():
            own = tiny.model(torch.tensor([prompt])).logits[0, -1]
        torch.testing.assert_close(logits[row], own, atol=2e-5, rtol=1e-5)
    # one more token for the first row, three for the second, in one forward; each row's last is its logits
    more = [[28], [31, 32, 33]]
    ids = torch.tensor([[28, 0, 0], [31, 32, 33]])
    cols = width + torch.arange(3).expand(2, 3)
    positions = torch.tensor([[len(prompts[0])] * 3, [len(prompts[1]) + i for i in range(3)]])
    stepped = engine.step(cache, static_decode.Feed(ids, cols, positions, torch.tensor([0, 2])), width + 3)
    for row, (prompt, extra) in enumerate(zip(prompts, more, strict=True)):
        with torch.no_grad():
            own = tiny.model(torch.tensor([prompt + extra])).logits[0, -1]
        torch.testing.assert_close(stepped[row], own, atol=2e-5, rtol=1e-5)


def test_a_lora_adapter_is_applied_beside_the_weights_or_merged_into_them(tiny_lora):
    import torch

    prompt = tiny_lora.tokenizer("Here is past 5 day stock price", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        own = tiny_lora.model(input_ids=torch.tensor([prompt])).logits[0, -1]
        with tiny_lora.model.disable_adapter():
            without = tiny_lora.model(input_ids=torch.tensor([prompt])).logits[0, -1]
    assert not torch.allclose(own, without, atol=1e-3)  # the adapter changes the model
    for merge in (False, True):
        engine = static_decode.Engine(tiny_lora.model, merge=merge)
        engine.ensure_positions(64)
        logits, _ = engine.prefill(engine.cache(1, 64), [prompt])
        torch.testing.assert_close(logits[0], own, atol=1e-4, rtol=1e-4)


def test_samples_of_a_prompt_share_its_prefill(tiny):
    import torch

    prompts = tiny.tokenizer(["Here is", "Here is past 20 day stock price"], add_special_tokens=False)["input_ids"]
    engine = static_decode.Engine(tiny.model, merge=False)
    engine.ensure_positions(64)
    shared = engine.cache(6, 64)
    logits, width = engine.prefill(shared, prompts, copies=3)
    alone, _ = engine.prefill(static_decode.Engine(tiny.model, merge=False).cache(2, 64), prompts)
    torch.testing.assert_close(logits, alone.repeat_interleave(3, dim=0))
    keys = shared.keys[:, :, :, :width]
    assert torch.equal(keys[:, 1], keys[:, 0]) and torch.equal(keys[:, 5], keys[:, 3])
    assert shared.start.tolist() == [width - 2] * 3 + [0] * 3


def test_a_later_batch_that_fits_reuses_the_cache(tiny):
    engine = static_decode.Engine(tiny.model, merge=False)
    first = engine.cache(4, 300)
    assert engine.cache(4, 100) is first and first.columns == 2 * static_decode.COLUMN_BUCKET
    assert engine.cache(3, 100) is not first  # other rows: a cache of their own


# --------------------------------------------------------------------------- answers


@pytest.mark.parametrize("answer_format", prompt_format.ANSWER_FORMATS)
@pytest.mark.parametrize("past, future", [(1, 1), (5, 5)])
@pytest.mark.parametrize("canonical", [False, True])
def test_static_answers_are_the_models_own_forwards_token_for_token(tiny, answer_format, past, future, canonical):
    prompts, regexes = windows(past, future, (answer_format,) * 3)
    before, after = {}, {}
    own = generation.generate_token_ids(
        tiny,
        prompts,
        8,
        Sampling(batch_size=8, engine="transformers", canonical=canonical),
        regexes=regexes,
        stats=before,
    )
    static = generation.generate_token_ids(
        tiny, prompts, 8, Sampling(batch_size=8, canonical=canonical), regexes=regexes, stats=after
    )
    assert static == own
    assert after["path"] == "static" and before["path"] == "jump-forward"
    assert after["one_token_steps"] + after["forced_forwards"] + 1 == after["forwards"]
    for group, regex in zip(static, regexes, strict=True):
        assert re.fullmatch(regex, tiny.tokenizer.decode(group[0]))


def test_rows_that_drift_apart_wait_for_each_other_with_the_same_answers(tiny):
    prompts, regexes = windows(5, 5, ("change", "absolute", "candle"))  # forced runs at other steps per row
    own = generation.generate_token_ids(
        tiny, prompts, 8, Sampling(batch_size=8, engine="transformers"), regexes=regexes
    )
    stats: dict = {}
    assert generation.generate_token_ids(tiny, prompts, 8, Sampling(batch_size=8), regexes=regexes, stats=stats) == own
    assert stats["forced_forwards"] > 0


def test_static_answers_with_a_lora_adapter_are_peft_s(tiny_lora):
    prompts, regexes = windows(5, 5)
    own = generation.generate_token_ids(
        tiny_lora, prompts, 8, Sampling(batch_size=8, engine="transformers"), regexes=regexes
    )
    assert generation.generate_token_ids(tiny_lora, prompts, 8, Sampling(batch_size=8), regexes=regexes) == own


def test_static_samples_are_answers_of_the_grammar_and_repeat_with_the_seed(tiny):
    prompts, regexes = windows(5, 5)

    def draw(seed):
        return generation.generate_samples(
            tiny, prompts[:2], 8, Sampling(batch_size=8, samples=3, temperature=1.0, seed=seed), regexes=regexes[:2]
        )

    answers = draw(5)
    assert all(len(group) == 3 for group in answers)
    assert all(re.fullmatch(regexes[0], a) for group in answers for a in group)
    assert len({a for group in answers for a in group}) > 1  # drawn, not greedy
    assert draw(5) == answers and draw(6) != answers


def test_a_static_batch_too_big_for_the_gpu_is_generated_in_halves(tiny, caplog, monkeypatch):
    import torch

    prompts, regexes = windows(1, 1)
    expected = generation.generate_token_ids(tiny, prompts, 8, Sampling(batch_size=1), regexes=regexes)
    forward = static_decode.Engine.forward

    def small_memory(self, cache, rows, feed, *args, **kwargs):
        if feed.ids.shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return forward(self, cache, rows, feed, *args, **kwargs)

    monkeypatch.setattr(static_decode.Engine, "forward", small_memory)
    stats: dict = {}
    assert (
        generation.generate_token_ids(tiny, prompts, 8, Sampling(batch_size=3), regexes=regexes, stats=stats)
        == expected
    )
    assert "out of GPU memory at 3 sequences" in caplog.text and stats["halvings"] == 2


def test_a_model_the_engine_cannot_run_goes_the_other_way(tokenizer):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2, eos_token_id=tokenizer.eos_token_id)
    other = model.LoadedModel(GPT2LMHeadModel(config).eval(), tokenizer, cuda=False)
    assert "gpt2" in static_decode.unsupported(other.model)
    prompts, regexes = windows(1, 1)
    stats: dict = {}
    generation.generate_token_ids(other, prompts[:1], 8, regexes=regexes[:1], stats=stats)
    assert stats["path"] == "jump-forward"
    with pytest.raises(StockToolError, match="cannot run this model: model type 'gpt2'"):
        generation.generate_token_ids(other, prompts[:1], 8, Sampling(engine="static"), regexes=regexes[:1])


# --------------------------------------------------------------------------- the grammar in the tokenizer's spelling


@pytest.mark.parametrize("answer_format", prompt_format.ANSWER_FORMATS)
def test_the_spelled_grammar_accepts_the_same_text_and_forces_the_labels(tokenizer, answer_format):
    grammars = token_automaton.Grammars(tokenizer)
    regex = prompt_format.answer_regex(pd.bdate_range("2026-05-04", periods=3), OHLCV, answer_format)
    plain, spelled = grammars.compile(regex, canonical=False), grammars.compile(regex)
    # every answer of the plain grammar, tokenized as the tokenizer does, is an answer of the spelled one
    for text in token_automaton.random_answers(plain, grammars.text, grammars.eos, 30, seed=11):
        assert re.fullmatch(regex, text.decode())
        assert token_automaton.accepts(spelled, grammars._tokenize(text), grammars.eos)
    # and every answer of the spelled grammar is the regex's
    for text in token_automaton.random_answers(spelled, grammars.text, grammars.eos, 30, seed=12):
        assert re.fullmatch(regex, text.decode())
    # a row's labels are forced: from the row's start only its numbers are choices
    runs = token_automaton.forced_runs(spelled.tokens, spelled.next, grammars.eos)
    header = grammars._tokenize(b"The next 3 day price is:\nDate")
    forced = tokenizer.decode(token_automaton.forced_run(spelled, token_automaton.walk(spelled, header), grammars.eos))
    assert forced.rstrip() == ": 2026-05-04, " + ("Close:" if answer_format in ("candle", "scaled") else "Open:")
    assert runs.length.sum() > token_automaton.forced_runs(plain.tokens, plain.next, grammars.eos).length.sum()


def test_the_common_prefix_is_the_fixed_text_up_to_the_next_choice():
    from outlines_core import Vocabulary

    vocabulary = {"D": 1, "a": 2, "Da": 3, ":": 4, " ": 5, "\n": 6, **{str(d): 10 + d for d in range(10)}}
    a = token_automaton.automaton(r"Da: [0-9]\n", Vocabulary(0, {k.encode(): [v] for k, v in vocabulary.items()}), 0)
    text = {v: k.encode() for k, v in vocabulary.items()}
    common = token_automaton.common_prefixes(a, text, 0)
    assert common[a.initial] == b"Da: "
    assert common[token_automaton.walk(a, [1])] == b"a: "
    assert common[token_automaton.walk(a, [3, 4, 5])] == b""  # a digit: a choice
    assert common[token_automaton.walk(a, [3, 4, 5, 12])] == b"\n"
