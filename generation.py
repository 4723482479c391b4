"""Generation from a loaded model: greedy or sampled answers to chat prompts, batched with left padding,
optionally under an answer grammar (`constrained.py`), split in halves when the GPU's memory runs out.
torch and transformers are imported inside the functions, as in `model.py`, which loads the models.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from configs import SEED
from utils import StockToolError

if TYPE_CHECKING:
    from model import LoadedModel

log = logging.getLogger("stock.model")


def generate(
    loaded: LoadedModel, prompts: list, max_new_tokens: int, batch_size: int = 8, min_new_tokens: int = 0
) -> list[str]:
    """Greedy answers for chat prompts, batched with left padding. `min_new_tokens` (benchmarks) forces
    every answer to at least that length, so that batched and one-at-a-time runs do the same work."""
    answers = generate_samples(loaded, prompts, max_new_tokens, batch_size, min_new_tokens=min_new_tokens)
    return [a[0] for a in answers]


def generate_samples(
    loaded: LoadedModel,
    prompts: list,
    max_new_tokens: int,
    batch_size: int = 8,
    samples: int = 1,
    temperature: float = 1.0,
    regexes: list[str] | None = None,
    min_new_tokens: int = 0,
    seed: int = SEED,
    stop_after: int | None = None,
) -> list[list[str]]:
    """`samples` answers per prompt (greedy when 1), batched with left padding; `batch_size` counts
    sequences, so a batch holds batch_size // samples prompts, each expanded to its samples.

    With `regexes` (one per prompt) every answer is generated under its grammar (constrained decoding):
    only tokens that keep the answer a prefix of the regex can be chosen, and end-of-sequence only once
    it is complete, so the answer always matches. `stop_after` (benchmarks' profiles) cuts every answer at that
    many tokens, under a grammar too.
    """
    import torch

    tokenizer = loaded.tokenizer
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    automata = None
    if regexes is not None:
        import constrained

        loaded.grammars = loaded.grammars or constrained.Grammars(tokenizer)
        automata = [loaded.grammars.compile(r) for r in regexes]
        # never cut a constrained answer short: the budget covers the longest answer the grammar allows
        unique = {id(a): a for a in automata}.values()
        max_new_tokens = max(max_new_tokens, *(constrained.longest_answer(a) for a in unique))
    run = _Generation(
        loaded=loaded,
        # chat prompts go through the model's chat template; a plain string (e.g. Cornucopia's template) as is
        texts=[
            p if isinstance(p, str) else tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
            for p in prompts
        ],
        plain=all(isinstance(p, str) for p in prompts),
        automata=automata,
        samples=samples,
        temperature=temperature,
        max_new_tokens=stop_after if stop_after is not None else max_new_tokens,
        min_new_tokens=min_new_tokens,
    )
    torch.manual_seed(seed)
    per_batch = max(1, batch_size // samples)
    # similar lengths side by side: less padding per batch; answers go back in the callers' order
    order = sorted(range(len(run.texts)), key=lambda i: len(run.texts[i]))
    answers: dict[int, list[str]] = {}
    for i in range(0, len(order), per_batch):
        answers |= run.or_split(order[i : i + per_batch])
    return [answers[i] for i in range(len(run.texts))]


@dataclass
class _Generation:
    """One call's fixed generation settings; `or_split(chunk)` answers the prompts of one batch."""

    loaded: LoadedModel
    texts: list[str]
    plain: bool  # plain strings get the tokenizer's special tokens; chat templates hold their own
    automata: list | None
    samples: int
    temperature: float
    max_new_tokens: int
    min_new_tokens: int

    def batch(self, chunk: list[int]) -> dict[int, list[str]]:
        import torch

        tokenizer, model = self.loaded.tokenizer, self.loaded.model
        device = next(model.parameters()).device
        encoded = tokenizer(
            [self.texts[j] for j in chunk], return_tensors="pt", padding=True, add_special_tokens=self.plain
        ).to(device)
        options = {"do_sample": self.samples > 1, "num_return_sequences": self.samples}
        if self.samples > 1:
            options |= {"temperature": self.temperature, "top_k": 0, "top_p": 1.0}
        if self.automata is not None:
            rows = [self.automata[j] for j in chunk]
            options["logits_processor"] = [_grammar_processor(rows, self.samples, device)]
        with torch.no_grad():
            output = model.generate(
                **encoded,
                max_new_tokens=self.max_new_tokens,
                min_new_tokens=self.min_new_tokens or None,
                pad_token_id=tokenizer.pad_token_id,
                **options,
            )
        decoded = tokenizer.batch_decode(output[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
        return {j: decoded[k * self.samples : (k + 1) * self.samples] for k, j in enumerate(chunk)}

    def or_split(self, chunk: list[int]) -> dict[int, list[str]]:
        """A batch the GPU's memory cannot hold is generated as two halves (the answers are the same up to
        sampling's random draws), rather than losing the work done so far to an error."""
        import torch

        try:
            return self.batch(chunk)
        except torch.OutOfMemoryError:
            pass  # retried below, outside the handler: its traceback holds the failed batch's tensors
        if len(chunk) == 1:
            raise StockToolError(
                f"one prompt of {len(self.texts[chunk[0]]):,} characters with {self.samples} samples does not "
                "fit the GPU's memory: fewer --samples or a shorter --past"
            )
        torch.cuda.empty_cache()
        log.warning(
            "out of GPU memory at %d sequences: generating them as two batches (a smaller --eval-batch-size "
            "skips this retry)",
            len(chunk) * self.samples,
        )
        half = len(chunk) // 2
        return self.or_split(chunk[:half]) | self.or_split(chunk[half:])


def _grammar_processor(automata: list, samples: int, device):
    """A logits processor that keeps every row of the batch inside its token automaton (`constrained.py`).

    Per step: advance each row's state by the token it just produced, then leave only that state's allowed
    tokens their scores. Both are gathers over small tables, for all rows at once."""
    import torch
    from transformers import LogitsProcessor

    import constrained

    tokens, nexts, initial = constrained.stack(automata)

    class GrammarLogits(LogitsProcessor):
        def __init__(self):
            self.tokens = torch.as_tensor(tokens, device=device)
            self.next = torch.as_tensor(nexts, device=device)
            self.state = torch.as_tensor(initial, device=device).repeat_interleave(samples)  # rows × samples
            self.started = False

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
