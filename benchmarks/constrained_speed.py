"""The answer grammar under two constrained-decoding libraries: compile time and the cost of masking a batch.

For a 5-row change-format answer and SmolLM2's tokenizer, each library compiles the regex once, then walks
`--batch` sequences through a real answer token by token, masking a batch of logits at every step (what
generation does between two forward passes). Prints one JSON line per library. lm-format-enforcer is
tried too: its transformers integration must import for it to be measured.

    python -m benchmarks.constrained_speed --prices ../shared/data/prices --batch 256
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import model
from config import data_args
from llm import checkpoints
from market import price_files
from prompts import prompt_format


def answer_and_regex(prices: Path) -> tuple[str, str]:
    frame = price_files.parse_price_csv(prices / "2330.csv")
    fields = data_args.FIELD_SETS["ohlcv"]
    anchor = float(frame["Close"].iloc[-6])
    return prompt_format.answer_text(frame.iloc[-5:], fields, anchor), prompt_format.answer_regex(
        frame.index[-5:], fields, "change"
    )


def outlines_core_tables(tokenizer, regex: str, ids: list[int], batch: int) -> dict:
    """This project's path: outlines-core's index as tables, one gather + scatter per step for the batch."""
    import torch

    from llm import token_automaton

    started = time.perf_counter()
    grammars = token_automaton.Grammars(tokenizer)
    automaton = grammars.compile(regex)
    compile_s = time.perf_counter() - started
    processor = model._grammar_processor([automaton] * batch, 1, "cpu")
    scores = torch.zeros(batch, len(tokenizer))
    started = time.perf_counter()
    generated = torch.empty(batch, 0, dtype=torch.long)
    for token in ids:
        masked = processor(generated, scores)
        assert torch.isfinite(masked[:, token]).all()
        generated = torch.cat([generated, torch.full((batch, 1), token)], dim=1)
    step_ms = 1000 * (time.perf_counter() - started) / len(ids)
    return {
        "library": "outlines-core (tables)",
        "compile_s": round(compile_s, 3),
        "mask_ms_per_step": round(step_ms, 3),
    }


def xgrammar_batch(tokenizer, regex: str, ids: list[int], batch: int) -> dict:
    """xgrammar's own batched path: one matcher per sequence, a batched bitmask fill and apply per step."""
    import torch
    import xgrammar as xgr

    started = time.perf_counter()
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=len(tokenizer))
    compiled = xgr.GrammarCompiler(info).compile_regex(regex)
    compile_s = time.perf_counter() - started
    matchers = [xgr.GrammarMatcher(compiled) for _ in range(batch)]
    batched = xgr.BatchGrammarMatcher()
    bitmask = xgr.allocate_token_bitmask(batch, info.vocab_size)
    scores = torch.zeros(batch, len(tokenizer))
    started = time.perf_counter()
    for token in ids:
        batched.batch_fill_next_token_bitmask(matchers, bitmask)
        xgr.apply_token_bitmask_inplace(scores, bitmask)
        batched.batch_accept_token(matchers, [token] * batch)
        scores.zero_()
    step_ms = 1000 * (time.perf_counter() - started) / len(ids)
    return {
        "library": "xgrammar (batched matchers)",
        "compile_s": round(compile_s, 3),
        "mask_ms_per_step": round(step_ms, 3),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prices", required=True)
    p.add_argument("--batch", type=int, default=256)
    args = p.parse_args()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(checkpoints.gguf_to_hf(checkpoints.smollm2_gguf())))
    answer, regex = answer_and_regex(Path(args.prices))
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    common = {"batch": args.batch, "answer_tokens": len(ids), "device": "cpu"}
    for measure in (outlines_core_tables, xgrammar_batch):
        try:
            print("BENCH " + json.dumps(common | measure(tokenizer, regex, ids, args.batch)), flush=True)
        except ImportError as exc:
            print("BENCH " + json.dumps(common | {"library": measure.__name__, "error": str(exc)}), flush=True)
    try:
        import lmformatenforcer.integrations.transformers  # noqa: F401
    except ImportError as exc:
        print("BENCH " + json.dumps(common | {"library": "lm-format-enforcer", "error": str(exc)}), flush=True)


if __name__ == "__main__":
    main()
