"""Generation from a loaded model: greedy or sampled answers to chat prompts, batched with left padding,
optionally under an answer grammar (`constrained.py`), split in halves when the GPU's memory runs out.
torch and transformers are imported inside the functions, as in `model.py`, which loads the models.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from config.defaults import SEED
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
    jump_forward: bool = True,
    stats: dict | None = None,
    engine: str = "auto",
    canonical: bool = True,
) -> list[list[str]]:
    """`samples` answers per prompt (greedy when 1), batched with left padding; `batch_size` counts
    sequences, so a batch holds batch_size // samples prompts, each expanded to its samples.

    With `regexes` (one per prompt) every answer is generated under its grammar (constrained decoding):
    only tokens that keep the answer a prefix of the regex can be chosen, and end-of-sequence only once
    it is complete, so the answer always matches. `stop_after` (benchmarks' profiles) cuts every answer at that
    many tokens, under a grammar too.

    `jump_forward` (with regexes): a token the grammar forces (the only one its state allows) is appended
    without asking the model, and each sequence's forced run is fed with its last chosen token in one forward,
    so only the free tokens (the numbers, the labels' spellings) cost decode steps. Greedy answers are token for
    token those of the one-token-per-step path (the masked argmax of a forced state is its token); samples are
    drawn from the same distribution, but with other random draws. `stats` (benchmarks), when given, adds up
    the model's forwards, the tokens fed and what the generation path did.

    `engine` (with regexes and jump-forward): "static" decodes with `static_decode.Engine` (a static cache, one-token
    steps replayed as a CUDA graph, rows in lockstep: `_static_batch`), "transformers" through the loaded model's
    own forward (`_jump_forward_batch`), "auto" static wherever the model allows it. `canonical`: the grammar
    spells its fixed text in the tokenizer's own tokens (`constrained.canonical_automaton`), so labels are forced.
    """
    ids = generate_token_ids(
        loaded, prompts, max_new_tokens, batch_size, samples, temperature, regexes, min_new_tokens, seed,
        stop_after, jump_forward, stats, engine, canonical,
    )  # fmt: skip
    return [loaded.tokenizer.batch_decode(group, skip_special_tokens=True) for group in ids]


def generate_token_ids(
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
    jump_forward: bool = True,
    stats: dict | None = None,
    engine: str = "auto",
    canonical: bool = True,
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
        automata = [loaded.grammars.compile(r, canonical) for r in regexes]
        # never cut a constrained answer short: the budget covers the longest answer the grammar allows
        unique = {id(a): a for a in automata}.values()
        max_new_tokens = max(max_new_tokens, *(token_automaton.longest_answer(a) for a in unique))
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
        jump_forward=jump_forward and automata is not None and _jump_forward_applies(loaded, min_new_tokens),
        stats=stats if stats is not None else {},
    )
    run.static = run.jump_forward and _static_applies(loaded, engine)
    run.stats["path"] = "static" if run.static else "jump-forward" if run.jump_forward else "generate"
    torch.manual_seed(seed)
    per_batch = max(1, batch_size // samples)
    # similar lengths side by side: less padding per batch; answers go back in the callers' order
    order = sorted(range(len(run.texts)), key=lambda i: len(run.texts[i]))
    answers: dict[int, list[list[int]]] = {}
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
    jump_forward: bool = False  # with automata: forced tokens fed in runs (`_jump_forward_batch`)
    stats: dict = field(default_factory=dict)  # forwards, tokens fed, halvings (benchmarks)
    static: bool = False  # with jump-forward: the static engine (`_static_batch`)

    def batch(self, chunk: list[int]) -> dict[int, list[list[int]]]:
        """Token ids (special tokens left out) of every prompt's samples."""
        import torch

        _count(self.stats, "batches")
        _count(self.stats, "sequences", len(chunk) * self.samples)
        if self.static:
            ids = _static_batch(self, chunk)
            return {j: ids[k * self.samples : (k + 1) * self.samples] for k, j in enumerate(chunk)}
        if self.jump_forward:
            ids = _jump_forward_batch(self, chunk)
            return {j: ids[k * self.samples : (k + 1) * self.samples] for k, j in enumerate(chunk)}
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
        new = output[:, encoded["input_ids"].shape[1] :]
        _count(self.stats, "forwards", new.shape[1])  # one forward per new token, the prompt's included
        _count(self.stats, "fed_tokens", encoded["input_ids"].numel() + new.shape[0] * max(0, new.shape[1] - 1))
        special = set(tokenizer.all_special_ids)
        ids = [[t for t in row if t not in special] for row in new.tolist()]
        return {j: ids[k * self.samples : (k + 1) * self.samples] for k, j in enumerate(chunk)}

    def or_split(self, chunk: list[int]) -> dict[int, list[list[int]]]:
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
        if self.static:
            _engine(self.loaded).release()  # its cache was sized for the whole batch
        torch.cuda.empty_cache()
        _count(self.stats, "halvings")
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


# --------------------------------------------------------------------------- jump-forward decoding


def _count(stats: dict, key: str, n: int = 1) -> None:
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


def _jump_forward_applies(loaded: LoadedModel, min_new_tokens: int) -> bool:
    """Jump-forward decoding reproduces `generate`'s greedy and sampling choices, not its other processors."""
    config = getattr(loaded.model, "generation_config", None)
    others = [k for k, plain in _GENERATE_ONLY.items() if getattr(config, k, None) not in plain]
    if others or min_new_tokens:
        log.info("jump-forward decoding off: %s set", ", ".join(others) or "min_new_tokens")
        return False
    return True


@dataclass
class _JumpTables:
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


def _jump_forward_batch(run: _Generation, chunk: list[int]) -> list[list[int]]:
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

    tokenizer, model, samples = run.loaded.tokenizer, run.loaded.model, run.samples
    device = next(model.parameters()).device
    tables, fed, rows = _grammar_rows(run, chunk, device)
    fed = [f for f in fed for _ in range(samples)]  # rows × samples, as `generate`'s num_return_sequences
    budget, pad = run.max_new_tokens, tokenizer.pad_token_id
    width = max(len(f) for f in fed)
    ids = torch.full((len(fed), width), pad, dtype=torch.long)
    mask = torch.zeros((len(fed), width), dtype=torch.long)
    for r, f in enumerate(fed):
        ids[r, width - len(f) :] = torch.tensor(f, dtype=torch.long)
        mask[r, width - len(f) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).masked_fill_(mask == 0, 1)
    pos = mask.sum(1)  # each row's next position: its real tokens so far
    unsloth = _is_unsloth(model)

    def forward(ids, mask, positions, past):
        """One forward of a chunk: (the cache, the last position's logits)."""
        if unsloth:
            positions._unsloth_position_bound = mask.shape[1]  # positions < the mask's length: no host read
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=past,
            use_cache=True,
            logits_to_keep=1,
            return_dict=True,
        )
        _count(run.stats, "forwards")
        _count(run.stats, "fed_tokens", ids.numel())
        return out.past_key_values, out.logits[:, -1, :]

    with _decoding_context(model, unsloth, width + budget):
        past, logits = forward(ids, mask, positions, None)
        while True:
            with record_function("sampling"):
                pick = _choose(tables, logits, rows.state, samples, run.temperature)
            with record_function("grammar mask"):
                _advance(tables, rows, pick, ~rows.done, budget)
                feed = rows.queued  # every unfinished row feeds its pick and the run after it
            with record_function("host<->device"):
                chunk_width, longest = torch.stack([feed.max(), pos.max()]).tolist()
            if chunk_width == 0:
                break
            if mask.shape[1] - longest > _SLACK:
                with record_function("compaction"):
                    mask, past = _compact(model, mask, past, longest)
                _count(run.stats, "compactions")
            with record_function("grammar mask"):
                offset = torch.arange(chunk_width, device=device)[None, :] - (chunk_width - feed[:, None])
                real = offset >= 0
                ids = torch.where(real, rows.queue.gather(1, offset.clamp(min=0)), pad)
                positions = (pos[:, None] + offset).clamp(min=0)
                pos = pos + feed
                mask = torch.cat([mask, real.long()], dim=1)
            past, logits = forward(ids, mask, positions, past)
    lengths = rows.count.tolist()
    return [row[:n] for row, n in zip(rows.answer.tolist(), lengths, strict=True)]


def _grammar_rows(run: _Generation, chunk: list[int], device):
    """(the batch's grammar tables, each prompt's tokens followed by its grammar's opening forced run, every row's
    state after that opening): the opening (the answer's header) is fed with the prompt, and recorded as
    generated. Rows are prompt-major, then samples."""
    import torch

    samples, budget = run.samples, run.max_new_tokens
    tables, runs, initial = _JumpTables.build([run.automata[j] for j in chunk], run.loaded.grammars.eos, device)
    prompts = run.loaded.tokenizer([run.texts[j] for j in chunk], add_special_tokens=run.plain)["input_ids"]
    opening = [runs.tokens[s, : runs.length[s]].tolist()[:budget] for s in initial]
    each = [o for o in opening for _ in range(samples)]
    answer = torch.full((len(each), budget + 1), run.loaded.tokenizer.pad_token_id, dtype=torch.long)
    for r, o in enumerate(each):
        answer[r, : len(o)] = torch.tensor(o, dtype=torch.long)
    rows = _Rows(
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


# --------------------------------------------------------------------------- the static engine, rows in lockstep


def _static_applies(loaded: LoadedModel, engine: str) -> bool:
    """Whether `engine` ("auto", "static", "transformers") puts this model on the static path."""
    if engine == "transformers":
        return False
    from llm import static_decode

    why = static_decode.unsupported(loaded.model)
    if engine == "static" and why:
        raise StockToolError(f"--engine static cannot run this model: {why}")
    return not why


def _engine(loaded: LoadedModel):
    """The loaded model's static engine, made on first use (its weights read from the loaded model once)."""
    from llm import static_decode

    if getattr(loaded, "static", None) is None:
        loaded.static = static_decode.Engine(loaded.model, merge=loaded.cuda)
    return loaded.static


@dataclass
class _Rows:
    """The state of every row of a batch under its grammar: what it has written (`answer`, `count` tokens), its
    automaton state, whether it is done, and the tokens it has yet to feed (`queue`, `queued` of them)."""

    answer: object  # rows × (budget + 1): the tokens so far; column `budget` is a dump
    count: object
    state: object
    done: object
    queue: object  # rows × (1 + longest forced run)
    queued: object


def _choose(tables: _JumpTables, logits, state, samples: int, temperature: float):
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


def _advance(tables: _JumpTables, rows: _Rows, pick, acting, budget: int) -> None:
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


def _static_batch(run: _Generation, chunk: list[int]) -> list[list[int]]:
    """One batch under its grammars on the static engine: the token ids of its rows (prompt-major, then samples),
    end-of-sequence left out.

    The rows move in lockstep. A row whose next token is a choice is fed that one token in a one-token step (the
    CUDA graph), while rows that have a forced run to feed (a label, a date) wait; once every unfinished row waits,
    one forward feeds every row its whole run. So the many one-token steps all replay one graph, and forced text
    costs one wide forward per field rather than a step per token. Each row is fed exactly the tokens, in the
    order, of one token per step, so its answer is the same; only the schedule differs."""
    import torch
    from torch.profiler import record_function

    engine, samples, budget = _engine(run.loaded), run.samples, run.max_new_tokens
    device = engine.device
    tables, fed, rows = _grammar_rows(run, chunk, device)
    total, run_width = len(fed) * samples, tables.run_tokens.shape[1] + 1
    width = max(len(f) for f in fed)
    cache = engine.cache(total, width + budget + 2 * run_width)  # the last columns: the graphs' scratch
    engine.ensure_positions(width + budget + run_width)
    with torch.inference_mode():
        with record_function("forward"):
            logits, width = engine.prefill(cache, fed, samples)
        _count(run.stats, "forwards")
        _count(run.stats, "fed_tokens", sum(len(f) for f in fed))
        column = torch.full((total,), width, dtype=torch.long, device=device)  # each row's next cache column
        position = column - cache.start[:total]  # and rotary position
        acting = ~rows.done
        offsets = torch.arange(run_width, device=device)
        while True:
            with record_function("sampling"):
                pick = _choose(tables, logits, rows.state, samples, run.temperature)
            with record_function("grammar mask"):
                _advance(tables, rows, pick, acting, budget)
                ready = rows.queued == 1
            with record_function("host<->device"):
                flags = torch.stack([ready.any().long(), rows.queued.max(), column.max()])
                any_ready, longest, furthest = flags.tolist()
            if longest == 0:
                break
            step = 1 if any_ready else longest
            feeding = ready if any_ready else rows.queued > 0
            ids = torch.where(feeding[:, None] & (offsets[:step] < rows.queued[:, None]), rows.queue[:, :step], 0)
            last = torch.where(feeding, rows.queued - 1, 0) if step > 1 else torch.zeros_like(column)
            cols, positions = column[:, None] + offsets[:step], position[:, None] + offsets[:step]
            with record_function("forward"):
                logits = engine.step(cache, ids, cols, positions, last, furthest + step)
            _count(run.stats, "forwards")
            _count(run.stats, "one_token_steps" if step == 1 else "forced_forwards")
            _count(run.stats, "fed_tokens", total * step)
            moved = torch.where(feeding, rows.queued, 0)
            column, position = column + moved, position + moved
            rows.queued = torch.where(feeding, 0, rows.queued)
            acting = feeding
        lengths = rows.count.tolist()
    run.stats["graphs"] = len(engine._graphs)  # recorded on this batch's cache so far (benchmarks)
    return [row[:n] for row, n in zip(rows.answer.tolist(), lengths, strict=True)]
