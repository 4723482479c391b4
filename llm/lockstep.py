"""The static engine's decode loop (`static_decode.Engine`): rows of a batch in lockstep under their grammars."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llm.jump_forward import Rows, Run, advance, choose, count, grammar_rows
from llm.static_decode import Feed
from utils import StockToolError

if TYPE_CHECKING:
    from model import LoadedModel


def applies(loaded: LoadedModel, engine: str) -> bool:
    """Whether `engine` ("auto", "static", "transformers") puts this model on the static path."""
    if engine == "transformers":
        return False
    from llm import static_decode

    why = static_decode.unsupported(loaded.model)
    if engine == "static" and why:
        raise StockToolError(f"--engine static cannot run this model: {why}")
    return not why


def engine_of(loaded: LoadedModel):
    """The loaded model's static engine, made on first use (its weights read from the loaded model once)."""
    from llm import static_decode

    if loaded.static is None:
        loaded.static = static_decode.Engine(loaded.model, merge=loaded.cuda)
    return loaded.static


def decode_batch(run: Run, chunk: list[int]) -> list[list[int]]:
    """One batch under its grammars on the static engine: the token ids of its rows (prompt-major, then samples),
    end-of-sequence left out.

    The rows move in lockstep. A row whose next token is a choice is fed that one token in a one-token step (the
    CUDA graph), while rows that have a forced run to feed (a label, a date) wait; once every unfinished row waits,
    one forward feeds every row its whole run: one-token steps replay one graph, forced text costs a forward per
    field. Each row is fed the tokens, in the order, of one token per step: the same answer, another schedule."""
    import torch
    from torch.profiler import record_function

    engine, samples, budget = engine_of(run.loaded), run.samples, run.max_new_tokens
    tables, fed, rows = grammar_rows(run, chunk, device := engine.device)
    total, run_width, width = len(fed) * samples, tables.run_tokens.shape[1] + 1, max(len(f) for f in fed)
    cache = engine.cache(total, width + budget + 2 * run_width)  # the last columns: the graphs' scratch
    engine.ensure_positions(width + budget + run_width)
    with torch.inference_mode():
        with record_function("forward"):
            logits, width = engine.prefill(cache, fed, samples)
        count(run.stats, "forwards")
        count(run.stats, "fed_tokens", sum(len(f) for f in fed))
        column = torch.full((total,), width, dtype=torch.long, device=device)  # each row's next cache column
        position = column - cache.start[:total]  # and rotary position
        acting = ~rows.done
        offsets = torch.arange(run_width, device=device)
        while True:
            with record_function("sampling"):
                pick = choose(tables, logits, rows.state, samples, run.temperature)
            with record_function("grammar mask"):
                advance(tables, rows, pick, acting, budget)
                ready = rows.queued == 1
            with record_function("host<->device"):
                flags = torch.stack([ready.any().long(), rows.queued.max(), column.max()])
                any_ready, longest, furthest = flags.tolist()
            if longest == 0:
                break
            step = 1 if any_ready else longest
            feeding = ready if any_ready else rows.queued > 0
            with record_function("forward"):
                logits = engine.step(cache, _feed(rows, feeding, (column, position), offsets[:step]), furthest + step)
            count(run.stats, "forwards")
            count(run.stats, "one_token_steps" if step == 1 else "forced_forwards")
            count(run.stats, "fed_tokens", total * step)
            moved = torch.where(feeding, rows.queued, 0)
            column, position = column + moved, position + moved
            rows.queued = torch.where(feeding, 0, rows.queued)
            acting = feeding
        lengths = rows.count.tolist()
    run.stats["graphs"] = len(engine._graphs)  # recorded on this batch's cache so far (benchmarks)
    return [row[:n] for row, n in zip(rows.answer.tolist(), lengths, strict=True)]


def _feed(rows: Rows, feeding, at: tuple, offsets) -> Feed:
    """The next forward's input: the rows `feeding` get their queued tokens (`len(offsets)` columns wide, the
    rest padding) at their next cache columns and rotary positions `at`; the others are fed padding, unread."""
    import torch

    (column, position), step = at, len(offsets)
    ids = torch.where(feeding[:, None] & (offsets < rows.queued[:, None]), rows.queue[:, :step], 0)
    last = torch.where(feeding, rows.queued - 1, 0) if step > 1 else torch.zeros_like(column)
    return Feed(ids, column[:, None] + offsets, position[:, None] + offsets, last)
