"""Generation from a loaded model: greedy or sampled answers to chat prompts, batched with left padding,
optionally under an answer grammar (`token_automaton.py`), split in halves when the GPU's memory runs out.

How is one `Sampling` record. Under a grammar with jump-forward, a batch is decoded by the static engine
(`lockstep.py`: a static key/value cache, rows in lockstep, one-token steps replayed as a CUDA graph) or through the
loaded model's own forward (`jump_forward.py`); otherwise by transformers' `generate` with the grammar as a logits
processor. torch and transformers are imported inside the functions, as in `model.py`, which loads the models.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from config.defaults import SEED
from llm import jump_forward, lockstep
from llm.jump_forward import Run, count
from utils import StockToolError

if TYPE_CHECKING:
    from model import LoadedModel

log = logging.getLogger("stock.model")


@dataclass(frozen=True)
class Sampling:
    """How answers are generated. `batch_size` counts sequences (a batch holds batch_size // samples prompts, each
    expanded to its samples); one sample is greedy decoding, more are drawn at `temperature` (seeded by `seed`).

    Under a grammar: `jump_forward` appends a token the grammar forces (the only one its state allows) without
    asking the model, each sequence's forced run fed with its last chosen token in one forward, so only the free
    tokens cost decode steps; greedy answers are token for token those of one token per step (the masked argmax of a
    forced state is its token), samples are drawn from the same distribution with other random draws. `engine`
    (with jump-forward): "static" (`lockstep.py`), "transformers" (`jump_forward.py`), "auto" static wherever the
    model allows it. `canonical`: the grammar spells its fixed text in the tokenizer's own tokens
    (`token_automaton.canonical_automaton`), so labels are forced. `min_new_tokens` (benchmarks) forces every answer
    to at least that length; `stop_after` (benchmarks' profiles) cuts every answer at that many tokens."""

    batch_size: int = 8
    samples: int = 1
    temperature: float = 1.0
    seed: int = SEED
    jump_forward: bool = True
    engine: str = "auto"
    canonical: bool = True
    min_new_tokens: int = 0
    stop_after: int | None = None

    @classmethod
    def of(cls, inference, batch_size: int) -> Sampling:
        """As an `InferenceConfig` asks, `batch_size` sequences together."""
        return cls(
            batch_size,
            inference.samples,
            inference.temperature,
            inference.seed,
            inference.jump_forward,
            inference.engine,
            inference.canonical,
        )


def generate(loaded: LoadedModel, prompts: list, max_new_tokens: int, how: Sampling = Sampling()) -> list[str]:
    """Greedy answers for chat prompts, batched with left padding."""
    return [a[0] for a in generate_samples(loaded, prompts, max_new_tokens, how)]


def generate_samples(
    loaded: LoadedModel, prompts: list, max_new_tokens: int, how: Sampling = Sampling(), regexes=None, stats=None
) -> list[list[str]]:
    """`how.samples` answers per prompt (greedy when 1). With `regexes` (one per prompt) every answer is generated
    under its grammar (constrained decoding): only tokens that keep the answer a prefix of the regex can be chosen,
    and end-of-sequence only once it is complete, so the answer always matches. `stats` (benchmarks), when given,
    adds up the model's forwards, the tokens fed and what the generation path did."""
    ids = generate_token_ids(loaded, prompts, max_new_tokens, how, regexes, stats)
    return [loaded.tokenizer.batch_decode(group, skip_special_tokens=True) for group in ids]


def generate_token_ids(
    loaded: LoadedModel, prompts: list, max_new_tokens: int, how: Sampling = Sampling(), regexes=None, stats=None
) -> list[list[list[int]]]:
    """`generate_samples`' answers as token ids, special tokens left out (what the tests compare token for
    token); the same arguments."""
    import torch

    tokenizer = loaded.tokenizer
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    automata = None
    if regexes is not None:
        from llm import token_automaton

        loaded.grammars = loaded.grammars or token_automaton.Grammars(tokenizer)
        automata = [loaded.grammars.compile(r, how.canonical) for r in regexes]
        # never cut a constrained answer short: the budget covers the longest answer the grammar allows
        unique = {id(a): a for a in automata}.values()
        max_new_tokens = max(max_new_tokens, *(token_automaton.longest_answer(a) for a in unique))
    jump = how.jump_forward and automata is not None and jump_forward.applies(loaded, how.min_new_tokens)
    run = Run(
        loaded=loaded,
        # chat prompts go through the model's chat template; a plain string (e.g. Cornucopia's template) as is
        texts=[
            p if isinstance(p, str) else tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
            for p in prompts
        ],
        plain=all(isinstance(p, str) for p in prompts),
        automata=automata,
        samples=how.samples,
        temperature=how.temperature,
        max_new_tokens=how.stop_after if how.stop_after is not None else max_new_tokens,
        min_new_tokens=how.min_new_tokens,
        jump_forward=jump,
        static=jump and lockstep.applies(loaded, how.engine),
        stats=stats if stats is not None else {},
    )
    run.stats["path"] = "static" if run.static else "jump-forward" if run.jump_forward else "generate"
    torch.manual_seed(how.seed)
    per_batch = max(1, how.batch_size // how.samples)
    # similar lengths side by side: less padding per batch; answers go back in the callers' order
    order = sorted(range(len(run.texts)), key=lambda i: len(run.texts[i]))
    answers: dict[int, list[list[int]]] = {}
    for i in range(0, len(order), per_batch):
        answers |= _or_split(run, order[i : i + per_batch])
    return [answers[i] for i in range(len(run.texts))]


def _batch(run: Run, chunk: list[int]) -> dict[int, list[list[int]]]:
    """Token ids (special tokens left out) of every prompt's samples."""
    import torch

    count(run.stats, "batches")
    count(run.stats, "sequences", len(chunk) * run.samples)
    if run.static or run.jump_forward:
        ids = (lockstep if run.static else jump_forward).decode_batch(run, chunk)
        return {j: ids[k * run.samples : (k + 1) * run.samples] for k, j in enumerate(chunk)}
    tokenizer, model = run.loaded.tokenizer, run.loaded.model
    device = next(model.parameters()).device
    encoded = tokenizer(
        [run.texts[j] for j in chunk], return_tensors="pt", padding=True, add_special_tokens=run.plain
    ).to(device)
    options = {"do_sample": run.samples > 1, "num_return_sequences": run.samples}
    if run.samples > 1:
        options |= {"temperature": run.temperature, "top_k": 0, "top_p": 1.0}
    if run.automata is not None:
        rows = [run.automata[j] for j in chunk]
        options["logits_processor"] = [_grammar_processor(rows, run.samples, device)]
    with torch.no_grad():
        output = model.generate(
            **encoded,
            max_new_tokens=run.max_new_tokens,
            min_new_tokens=run.min_new_tokens or None,
            pad_token_id=tokenizer.pad_token_id,
            **options,
        )
    new = output[:, encoded["input_ids"].shape[1] :]
    count(run.stats, "forwards", new.shape[1])  # one forward per new token, the prompt's included
    count(run.stats, "fed_tokens", encoded["input_ids"].numel() + new.shape[0] * max(0, new.shape[1] - 1))
    special = set(tokenizer.all_special_ids)
    ids = [[t for t in row if t not in special] for row in new.tolist()]
    return {j: ids[k * run.samples : (k + 1) * run.samples] for k, j in enumerate(chunk)}


def _or_split(run: Run, chunk: list[int]) -> dict[int, list[list[int]]]:
    """A batch the GPU's memory cannot hold is generated as two halves (the answers are the same up to
    sampling's random draws), rather than losing the work done so far to an error."""
    import torch

    try:
        return _batch(run, chunk)
    except torch.OutOfMemoryError:
        pass  # retried below, outside the handler: its traceback holds the failed batch's tensors
    if len(chunk) == 1:
        raise StockToolError(
            f"one prompt of {len(run.texts[chunk[0]]):,} characters with {run.samples} samples does not "
            "fit the GPU's memory: fewer --samples or a shorter --past"
        )
    if run.static:
        lockstep.engine_of(run.loaded).release()  # its cache was sized for the whole batch
    torch.cuda.empty_cache()
    count(run.stats, "halvings")
    log.warning(
        "out of GPU memory at %d sequences: generating them as two batches (a smaller --eval-batch-size "
        "skips this retry)",
        len(chunk) * run.samples,
    )
    half = len(chunk) // 2
    return _or_split(run, chunk[:half]) | _or_split(run, chunk[half:])


def _grammar_processor(automata: list, samples: int, device):
    """A logits processor that keeps every row of the batch inside its token automaton (`token_automaton.py`).

    Per step: advance each row's state by the token it just produced, then leave only that state's allowed
    tokens their scores. Both are gathers over small tables, for all rows at once."""
    import torch
    from torch.profiler import record_function
    from transformers import LogitsProcessor

    from llm import token_automaton

    tokens, nexts, initial = token_automaton.stack(automata)

    class GrammarLogits(LogitsProcessor):
        def __init__(self):
            self.tokens = torch.as_tensor(tokens, device=device)
            self.next = torch.as_tensor(nexts, device=device)
            self.state = torch.as_tensor(initial, device=device).repeat_interleave(samples)  # rows × samples
            self.started = False

        @record_function("grammar mask")  # a profile's name for it (benchmarks/generate_speed.py --profile)
        def __call__(self, input_ids, scores):
            if self.started:
                last = input_ids[:, -1:]
                slot = (self.tokens[self.state] == last).int().argmax(dim=1, keepdim=True)
                self.state = self.next[self.state].gather(1, slot).squeeze(1)
            self.started = True
            allowed = self.tokens[self.state]
            masked = torch.full_like(scores, float("-inf"))
            return masked.scatter_(1, allowed, scores.gather(1, allowed))

    return GrammarLogits()
