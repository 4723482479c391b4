"""Where a decode step's time goes: `profile` (torch.profiler's split of a batch's first steps into model
forward, grammar mask, sampling, host<->device copies and the rest, then the top operators) and `step_scan`
(milliseconds per decode step at several batch sizes, free and under the grammar, without a profiler). Used by
`generate_speed.py --profile` and `--step-scan`."""

from __future__ import annotations

import contextlib
import json
import time

from llm import generation, patches
from llm.generation import Sampling

PARTS = ("forward", "grammar mask", "sampling", "host<->device", "compaction")  # generation.py's profile ranges


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def _timed(loaded, grammars: tuple, new_tokens: tuple[int, int], decode: dict) -> tuple[float, int]:
    """(seconds, forwards) of one batch: `grammars` = (prompts, regexes or None), `new_tokens` = (at most, at
    least), after a warm-up of 8 prompts."""
    import torch

    chunk, rules = grammars
    warm = Sampling(batch_size=8)
    generation.generate_samples(loaded, chunk[:8], 4, warm, regexes=rules[:8] if rules else None)
    if loaded.cuda:
        torch.cuda.synchronize()
    stats: dict = {}
    started = time.perf_counter()
    how = Sampling(min_new_tokens=new_tokens[1], batch_size=len(chunk), **decode)
    generation.generate_samples(loaded, chunk, new_tokens[0], how, regexes=rules, stats=stats)
    if loaded.cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - started, stats["forwards"]


def step_scan(loaded, window, grammars: tuple, batches: list[int], steps: int, decode: dict) -> None:
    """Milliseconds per decode step at each batch size, without a profiler's overhead: free decoding of exactly
    `steps` and 2 × `steps` new tokens gives the model's step alone (their difference) and the prompt's prefill
    (what is left); a constrained run to the answers' end, less that prefill, gives the step under the grammar
    (the model plus the automaton's masking; with jump-forward, forwards of a few tokens each). `grammars` =
    (prompts, regexes); `decode`: Sampling's jump_forward, engine and canonical."""
    prompts, regexes = grammars
    for batch in batches:
        chunk = (prompts * (-(-batch // len(prompts))))[:batch]
        rules = (regexes * (-(-batch // len(regexes))))[:batch]
        short, _ = _timed(loaded, (chunk, None), (steps, steps), decode)
        long, _ = _timed(loaded, (chunk, None), (2 * steps, 2 * steps), decode)
        free_step = (long - short) / steps
        prefill = max(0.0, short - steps * free_step)
        constrained, ran = _timed(loaded, (chunk, rules), (1, 0), decode)
        figures = {"window": window.name, "batch": batch, "fold_gqa": patches.APPLIED.get("fold_decode_attention")}
        figures |= {"prefill_s": round(prefill, 3), **decode}
        figures |= {"free_ms_per_step": round(1000 * free_step, 2), "constrained_steps": ran}
        figures |= {"constrained_ms_per_step": round(1000 * (constrained - prefill) / ran, 2)}
        print("STEP " + json.dumps(figures), flush=True)


def profile(loaded, grammars: tuple, batch_size: int, steps: int, decode: dict) -> None:
    """Where the time of one batch's first `steps` constrained decode steps goes: the split into model forward,
    grammar mask, sampling, host<->device syncs and copies, cache compaction (jump-forward) and the rest (Python,
    and under `generate` its own sampling and bookkeeping), per step, on the host and on the GPU; then the
    operators that take the time (the top 25 of each). Few steps: the profiler's overhead per kernel makes a
    whole answer take minutes, and inflates the host's share."""
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if loaded.cuda else [])
    chunk, rules = grammars[0][:batch_size], grammars[1][:batch_size]
    how = Sampling(stop_after=steps, batch_size=batch_size, **decode)
    generation.generate_samples(loaded, chunk[:8], steps, how, regexes=rules[:8])  # warm-up
    stats: dict = {}
    with labelled_forward(loaded), torch_profile(activities=activities) as prof:
        started = time.perf_counter()
        generation.generate_samples(loaded, chunk, steps, how, regexes=rules, stats=stats)
        if loaded.cuda:
            torch.cuda.synchronize()
        wall_ms = 1000 * (time.perf_counter() - started)
    _print_split(prof.key_averages(), stats, wall_ms, (len(chunk), loaded.cuda))
    device = "device_time_total" if hasattr(prof.key_averages()[0], "device_time_total") else "cuda_time_total"
    for key in ([f"self_{device}"] if loaded.cuda else []) + ["self_cpu_time_total"]:
        print(prof.key_averages().table(sort_by=key, row_limit=25), flush=True)


def _print_split(events, stats: dict, wall_ms: float, batch: tuple[int, bool]) -> None:
    """The per-step table of the profile's parts (host and GPU milliseconds), and its PROFILE line; `batch` =
    (sequences, on CUDA)."""
    (sequences, cuda), forwards = batch, max(1, stats.get("forwards", 0))

    def total(names, kind: str) -> float:  # milliseconds
        return sum(getattr(e, kind, 0.0) or 0.0 for e in events if e.key in names) / 1000

    device = "device_time_total" if hasattr(events[0], "device_time_total") else "cuda_time_total"
    split = {part: (total({part}, "cpu_time_total"), total({part}, device)) for part in PARTS}
    syncs = total({"aten::_local_scalar_dense"}, "cpu_time_total")  # .item() / .tolist(): the host waits
    copies = sum(e.self_device_time_total for e in events if e.key.startswith("Memcpy")) / 1000 if cuda else 0
    other = wall_ms - sum(host for host, _ in split.values())
    print(
        f"PROFILE {stats.get('path')}: {forwards} forwards of {sequences} sequences in {wall_ms:.0f} ms "
        f"({wall_ms / forwards:.2f} ms per step, profiler included); per step:",
        flush=True,
    )
    print(f"  {'part':<16}{'host ms':>10}{'GPU ms':>10}{'of wall':>9}")
    for part, (host, gpu) in [*split.items(), ("python, other", (other, 0.0))]:
        print(f"  {part:<16}{host / forwards:>10.2f}{gpu / forwards:>10.2f}{host / wall_ms:>9.0%}")
    print(
        f"  all host waits on the device (item/tolist, every part): {syncs / forwards:.2f} ms per step; "
        f"host<->device copies on the GPU: {copies / forwards:.2f} ms per step",
        flush=True,
    )
    figures = {part: round(host / forwards, 3) for part, (host, _) in split.items()}
    figures |= {"python_other": round(other / forwards, 3), "wall_ms_per_step": round(wall_ms / forwards, 3)}
    figures |= {"path": stats.get("path"), "forwards": forwards, "sequences": sequences, "device": device_name()}
    print("PROFILE " + json.dumps(figures), flush=True)


@contextlib.contextmanager
def labelled_forward(loaded):
    """The model's forwards as "forward" ranges in a profile, under `generate` too: the causal LM's own forward
    (the module that holds `lm_head`, under any PEFT wrapper) is wrapped for the duration."""
    from torch.profiler import record_function

    inner = next(m for m in loaded.model.modules() if "lm_head" in m._modules)
    forward = inner.forward

    def labelled(*args, **kwargs):
        with record_function("forward"):
            return forward(*args, **kwargs)

    inner.forward = labelled
    try:
        yield
    finally:
        del inner.forward  # back to the class's (unsloth's) forward
