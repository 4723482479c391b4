"""Jump-forward decoding under an answer grammar, through the loaded model's own forward: a token the grammar
forces is appended without a decode step, each row's forced run fed in one forward; and the bookkeeping of rows
under their grammars that the static engine's loop (`lockstep.py`) shares: the grammar tables on the device, each
row's answer, state and queued tokens, the choice of a token and the advance past it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from model import LoadedModel

log = logging.getLogger("stock.model")


@dataclass
class Run:
    """One generation call's fixed settings, which every batch of it shares."""

    loaded: LoadedModel
    texts: list[str]
    plain: bool  # plain strings get the tokenizer's special tokens; chat templates hold their own
    automata: list | None
    samples: int
    temperature: float
    max_new_tokens: int
    min_new_tokens: int
    jump_forward: bool = False  # with automata: forced tokens fed in runs (`jump_forward.decode_batch`)
    static: bool = False  # with jump-forward: the static engine (`lockstep.decode_batch`)
    stats: dict = field(default_factory=dict)  # forwards, tokens fed, halvings (benchmarks)


def count(stats: dict, key: str, n: int = 1) -> None:
    """Adds `n` to a benchmark counter."""
    stats[key] = stats.get(key, 0) + n


# generation_config settings whose logits processors the jump-forward loop does not apply: with any of them set
# (no model of this tool sets one), the answers go through `generate` as before, which applies them
_GENERATE_ONLY = {
    "repetition_penalty": (None, 1.0),
    "encoder_repetition_penalty": (None, 1.0),
    "no_repeat_ngram_size": (None, 0),
    "bad_words_ids": (None,),
    "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,),
    "sequence_bias": (None,),
    "min_length": (None, 0),
    "min_new_tokens": (None, 0),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "exponential_decay_length_penalty": (None,),
}


def applies(loaded: LoadedModel, min_new_tokens: int) -> bool:
    """Jump-forward decoding reproduces `generate`'s greedy and sampling choices, not its other processors."""
    config = getattr(loaded.model, "generation_config", None)
    others = [k for k, plain in _GENERATE_ONLY.items() if getattr(config, k, None) not in plain]
    if others or min_new_tokens:
        log.info("jump-forward decoding off: %s set", ", ".join(others) or "min_new_tokens")
        return False
    return True


@dataclass
class JumpTables:
    """A batch's grammar tables on the device: allowed tokens and next states (`constrained.stack`), and per
    state the forced run that follows it (`constrained.forced_runs`)."""

    tokens: object  # states × width
    next: object
    run_length: object  # states
    run_end: object
    run_tokens: object  # states × longest run
    complete: object  # states, bool
    first_slot: object  # states × width, bool: a slot's token is not an earlier slot's (padding repeats one)
    eos: int

    @classmethod
    def build(cls, automata: list, eos: int, device):
        import numpy as np
        import torch

        from llm import token_automaton

        tokens, nexts, initial = token_automaton.stack(automata)
        runs = token_automaton.forced_runs(tokens, nexts, eos)
        first = np.ones(tokens.shape, dtype=bool)
        for slot in range(1, tokens.shape[1]):
            first[:, slot] = ~(tokens[:, :slot] == tokens[:, slot : slot + 1]).any(axis=1)
        on = lambda a: torch.as_tensor(a, device=device)  # noqa: E731
        tables = cls(
            on(tokens), on(nexts), on(runs.length), on(runs.end), on(runs.tokens), on(runs.complete), on(first), eos
        )
        return tables, runs, initial


def decode_batch(run: Run, chunk: list[int]) -> list[list[int]]:
    """One batch under its grammars, decoded with jump-forward through the loaded model's own forward: the token
    ids of its rows (prompt-major, then samples), end-of-sequence left out.

    Every forward feeds each unfinished row its pending tokens: the token chosen from the last logits and the
    forced run after it (the prefill: the prompt and the run the grammar starts with). Rows pending fewer
    tokens than the longest are padded on the left of the chunk and those positions masked, so every row's last
    position gives its next logits; the masked positions are holes in the key/value cache, which is compacted
    (holes moved to the left, where the prompts' padding is, and cut) once they take more than `_SLACK`
    columns. A row ends at end-of-sequence, when its state allows only end-of-sequence (its last run is
    recorded, never fed) or at the token budget. The cost per step is one forward of the longest pending chunk
    (a few tokens) and one host sync, for its width."""
    import torch
    from torch.profiler import record_function

    model, samples, budget, pad = run.loaded.model, run.samples, run.max_new_tokens, run.loaded.tokenizer.pad_token_id
    tables, fed, rows = grammar_rows(run, chunk, device := next(model.parameters()).device)
    fed = [f for f in fed for _ in range(samples)]  # rows × samples, as `generate`'s num_return_sequences
    ids, mask = _left_padded(fed, pad, device)
    width = ids.shape[1]
    positions = (mask.cumsum(-1) - 1).masked_fill_(mask == 0, 1)
    pos = mask.sum(1)  # each row's next position: its real tokens so far
    unsloth = _is_unsloth(model)
    with _decoding_context(model, unsloth, width + budget):
        past, logits = _forward(run, unsloth, (ids, mask, positions), None)
        while True:
            with record_function("sampling"):
                pick = choose(tables, logits, rows.state, samples, run.temperature)
            with record_function("grammar mask"):
                advance(tables, rows, pick, ~rows.done, budget)
                feed = rows.queued  # every unfinished row feeds its pick and the run after it
            with record_function("host<->device"):
                chunk_width, longest = torch.stack([feed.max(), pos.max()]).tolist()
            if chunk_width == 0:
                break
            if mask.shape[1] - longest > _SLACK:
                with record_function("compaction"):
                    mask, past = _compact(model, mask, past, longest)
                count(run.stats, "compactions")
            with record_function("grammar mask"):
                offset = torch.arange(chunk_width, device=device)[None, :] - (chunk_width - feed[:, None])
                real = offset >= 0
                ids = torch.where(real, rows.queue.gather(1, offset.clamp(min=0)), pad)
                positions = (pos[:, None] + offset).clamp(min=0)
                pos = pos + feed
                mask = torch.cat([mask, real.long()], dim=1)
            past, logits = _forward(run, unsloth, (ids, mask, positions), past)
    lengths = rows.count.tolist()
    return [row[:n] for row, n in zip(rows.answer.tolist(), lengths, strict=True)]


def _left_padded(fed: list[list[int]], pad: int, device):
    """(ids, attention mask) of the rows `fed`, padded on the left to the longest."""
    import torch

    width = max(len(f) for f in fed)
    ids = torch.full((len(fed), width), pad, dtype=torch.long)
    mask = torch.zeros((len(fed), width), dtype=torch.long)
    for r, f in enumerate(fed):
        ids[r, width - len(f) :] = torch.tensor(f, dtype=torch.long)
        mask[r, width - len(f) :] = 1
    return ids.to(device), mask.to(device)


def _forward(run: Run, unsloth: bool, chunk: tuple, past):
    """One forward of a chunk (ids, attention mask, positions) after the cache `past`: (the cache, the last
    position's logits)."""
    ids, mask, positions = chunk
    if unsloth:
        positions._unsloth_position_bound = mask.shape[1]  # positions < the mask's length: no host read
    out = run.loaded.model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        past_key_values=past,
        use_cache=True,
        logits_to_keep=1,
        return_dict=True,
    )
    count(run.stats, "forwards")
    count(run.stats, "fed_tokens", ids.numel())
    return out.past_key_values, out.logits[:, -1, :]


def grammar_rows(run: Run, chunk: list[int], device):
    """(the batch's grammar tables, each prompt's tokens followed by its grammar's opening forced run, every row's
    state after that opening): the opening (the answer's header) is fed with the prompt, and recorded as
    generated. Rows are prompt-major, then samples."""
    import torch

    samples, budget = run.samples, run.max_new_tokens
    tables, runs, initial = JumpTables.build([run.automata[j] for j in chunk], run.loaded.grammars.eos, device)
    prompts = run.loaded.tokenizer([run.texts[j] for j in chunk], add_special_tokens=run.plain)["input_ids"]
    opening = [runs.tokens[s, : runs.length[s]].tolist()[:budget] for s in initial]
    each = [o for o in opening for _ in range(samples)]
    answer = torch.full((len(each), budget + 1), run.loaded.tokenizer.pad_token_id, dtype=torch.long)
    for r, o in enumerate(each):
        answer[r, : len(o)] = torch.tensor(o, dtype=torch.long)
    rows = Rows(
        answer=answer.to(device),
        count=torch.tensor([len(o) for o in each], device=device),
        state=torch.as_tensor(runs.end[initial.repeat(samples)], device=device),
        done=torch.zeros(len(each), dtype=torch.bool, device=device),
        queue=torch.zeros((len(each), tables.run_tokens.shape[1] + 1), dtype=torch.long, device=device),
        queued=torch.zeros(len(each), dtype=torch.long, device=device),
    )
    rows.done |= tables.complete[rows.state] | (rows.count >= budget)
    return tables, [p + o for p, o in zip(prompts, opening, strict=True)], rows


_SLACK = 64  # cache columns of holes tolerated before compacting: a gather of the whole cache, as a step's concat


def _compact(model, mask, past, longest: int):
    """The cache with each row's real positions moved right, in order, and the columns no row uses cut: the
    same attention (masked positions weigh nothing; RoPE's positions were applied when the keys were made)."""
    import torch

    order = torch.sort(mask, dim=1, stable=True).indices[:, -longest:]
    mask = mask.gather(1, order)

    def take(t):
        return t.gather(2, order[:, None, :, None].expand(t.shape[0], t.shape[1], longest, t.shape[3]))

    if hasattr(past, "layers"):  # transformers' DynamicCache
        for layer in past.layers:
            layer.keys, layer.values = take(layer.keys), take(layer.values)
    else:  # unsloth's (keys, values) per layer
        past = [(take(k), take(v)) for k, v in past]
    # unsloth's one-token decode step keeps its own copy of the cache beside the one it returns: drop it, so its
    # next step seeds it again from this cache (as unsloth's generate does with a cache it is given)
    for module in model.modules():
        if "paged_attention" in module.__dict__:
            del module.paged_attention_K, module.paged_attention_V, module.paged_attention
    return mask, past


def _decoding_context(model, unsloth: bool, longest: int):
    """What `generate` sets up around its forwards: no gradients; under unsloth, its inference mode, autocast to
    the model's dtype and the CUDA-graph decode buffers sized for the whole answer (`longest` cache columns)."""
    import contextlib

    import torch

    stack = contextlib.ExitStack()
    if not unsloth:
        stack.enter_context(torch.no_grad())
        return stack
    import unsloth.models._utils as unsloth_utils
    import unsloth.models.llama as llama

    inference = getattr(unsloth_utils, "_get_inference_mode_context_manager", lambda m: torch.inference_mode())
    stack.enter_context(inference(model))
    dtype = llama._get_dtype(llama.dtype_from_config(model.config))
    stack.enter_context(torch.autocast(device_type="cuda", dtype=dtype))
    try:
        from unsloth.models import _decode_graphs as graphs
    except ImportError:  # an unsloth without CUDA-graph decoding
        return stack
    if graphs.enabled():
        graphs.start_generation(longest + _SLACK)
        stack.callback(graphs.end_generation)
    return stack


def _is_unsloth(model) -> bool:
    """True for a model whose forward unsloth has replaced (its fast inference path: CUDA graphs, paged cache)."""
    return any((getattr(type(m).forward, "__module__", "") or "").startswith("unsloth") for m in model.modules())


@dataclass
class Rows:
    """The state of every row of a batch under its grammar: what it has written (`answer`, `count` tokens), its
    automaton state, whether it is done, and the tokens it has yet to feed (`queue`, `queued` of them)."""

    answer: object  # rows × (budget + 1): the tokens so far; column `budget` is a dump
    count: object
    state: object
    done: object
    queue: object  # rows × (1 + longest forced run)
    queued: object


def choose(tables: JumpTables, logits, state, samples: int, temperature: float):
    """Every row's next token from its logits under its state's allowed tokens: greedy (`generate`'s argmax over
    the masked vocabulary: the smallest token id among the best) or a draw at `temperature`."""
    import torch

    allowed = tables.tokens[state]  # rows × width
    scores = logits.gather(1, allowed).float()  # in float32, as `generate` takes them
    if samples > 1:
        scores = (scores / temperature).masked_fill_(~tables.first_slot[state], float("-inf"))
        slot = torch.multinomial(torch.softmax(scores, dim=1), 1)
        return allowed.gather(1, slot).squeeze(1)
    best = scores.max(dim=1, keepdim=True).values
    return torch.where(scores == best, allowed, torch.iinfo(allowed.dtype).max).min(dim=1).values


def advance(tables: JumpTables, rows: Rows, pick, acting, budget: int) -> None:
    """Rows `acting` take their `pick`: it and the forced run after it are written to their answers (within the
    budget) and queued to be fed, unless the row ends (end-of-sequence, a state that allows only that, or the
    budget), whose last tokens are written, never fed."""
    import torch

    steps = torch.arange(rows.queue.shape[1], device=pick.device)
    slot = (tables.tokens[rows.state] == pick[:, None]).int().argmax(dim=1, keepdim=True)
    chosen = tables.next[rows.state].gather(1, slot).squeeze(1)
    ended = acting & (pick == tables.eos)
    pending = torch.cat([pick[:, None], tables.run_tokens[chosen]], dim=1)
    n = torch.where(acting & ~ended, 1 + tables.run_length[chosen], 0)
    keep = torch.minimum(n, budget - rows.count)
    at = torch.where(steps < keep[:, None], rows.count[:, None] + steps, budget)
    rows.answer.scatter_(1, at, pending)
    rows.count += keep
    rows.state = torch.where(acting & ~ended, tables.run_end[chosen], rows.state)
    rows.done |= ended | (acting & (tables.complete[rows.state] | (rows.count >= budget)))
    rows.queue = torch.where(acting[:, None], pending, rows.queue)
    rows.queued = torch.where(acting, torch.where(rows.done, 0, n), rows.queued)
