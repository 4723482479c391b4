"""Forecasts per second and generated tokens per second, per window type and decoding mode.

Loads a trained adapter (or its untuned base with --base, or an untuned model with --model-name), builds the
evaluation's prompts (the adapter's answer format, the real next trading dates as the grammar's dates) for the
latest windows of real price CSVs, and generates them through `generation.generate_samples`, once per decoding
mode. Prints one JSON line per window × mode. A forecast is one prompt's answer(s): with K samples, K sequences.

    python benchmarks/generate_speed.py --model-dir outputs/model --prices ../shared/data/prices \
        --windows 1:1,5:5,20:5 --modes greedy,greedy-nojump,greedy-free,k8 --count 256 --batch-size 1024

Modes: greedy (the tool's default: the static engine, labels in the tokenizer's spelling, jump-forward), greedy-today
(the default before it: jump-forward through the loaded model's own forward, any spelling), greedy-nojump
(constrained, one token per decode step), greedy-free (unconstrained), kN, kN-today and kN-nojump (median of N
constrained samples). Each BENCH line says which path ran and which of jump-forward, the CUDA graphs (the static
engine's, or unsloth's decode step), the folded decode attention and the batch halving on out-of-memory were on,
and beside the measured milliseconds per decode step the step's key/value read bound: the bytes of cache a step
reads at the batch's context lengths over --bandwidth (the H200's 4.8 TB/s by default). A SAME line says how many
greedy answers of each mode are the default's token for token.
`--stack transformers` loads the adapter with transformers + PEFT alone, in bf16 on the GPU, instead of unsloth;
`--profile` splits `--steps` decode steps of one batch into model forward, grammar mask, sampling, host<->device
copies and the rest (Python, `generate`'s own work), then prints the top operators (torch.profiler);
`--step-scan 64,256,1024` prints milliseconds per decode step at each batch size, free and under the grammar;
`--jump-forward 1/0`, `--engine` and `--canonical 1/0` are the decoding of --profile and --step-scan;
`--fold-gqa 0` measures unsloth's decode attention as it ships (see `patches.fold_gqa_decode`). unsloth's CUDA-graph
decode step is on for the transformers engine (`patches.patch_decode_graphs`); the static engine replays its own.
`--load-in-4bit 1/0` overrides the adapter's saved quantization to compare 4-bit with 16-bit inference.
On a CPU (a check that it runs): --model-name <SmolLM2's .gguf> --prices ../shared/data/prices --count 4.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import model  # noqa: E402
from config import data_args
from config.inference_args import InferenceConfig  # noqa: E402
from forecasting.reading import read_samples  # noqa: E402
from llm import (
    generation,  # noqa: E402
    patches,  # noqa: E402
)
from llm.generation import Sampling
from market import price_files  # noqa: E402
from prompts import prompt_format  # noqa: E402


def windows_for(prices: Path, window: data_args.WindowType, count: int) -> list:
    """(code, past, future) for the latest `count` windows spread over the companies."""
    files = sorted(f for f in prices.glob("*.csv") if f.stem.isdigit())  # stock codes (not TAIEX.csv)
    per_company = max(1, -(-count // len(files)))
    out = []
    for path in files:
        frame = price_files.parse_price_csv(path).dropna(subset=["Open", "High", "Low", "Close", "Volume"])
        last = len(frame) - window.future
        for end in range(last - per_company + 1, last + 1):
            out.append((path.stem, frame.iloc[end - window.past : end], frame.iloc[end : end + window.future]))
    return out[:count]


@dataclass(frozen=True)
class Mode:
    """How a mode decodes: samples per forecast, under the grammar or free, jump-forward, the engine and whether the
    grammar spells its labels in the tokenizer's tokens."""

    samples: int
    constrained: bool = True
    jump: bool = True
    engine: str = "auto"
    canonical: bool = True


def mode_options(mode: str) -> Mode:
    """A mode's name → how it decodes. greedy / kN: the tool's default (the static engine, labels spelled);
    greedy-today / kN-today: the default before it (jump-forward through the loaded model's own forward, any
    spelling); greedy-nojump / kN-nojump: one token per decode step (`generate`); greedy-free: no grammar."""
    name, _, variant = mode.partition("-")
    samples = 1 if name == "greedy" else int(name[1:]) if name[:1] == "k" and name[1:].isdigit() else 0
    if samples and variant == "":
        return Mode(samples)
    if samples and variant == "today":
        return Mode(samples, engine="transformers", canonical=False)
    if samples and variant == "nojump":
        return Mode(samples, jump=False, engine="transformers", canonical=False)
    if name == "greedy" and variant == "free":
        return Mode(1, constrained=False, jump=False, engine="transformers", canonical=False)
    raise SystemExit(
        f"unknown mode {mode!r}: greedy, greedy-today, greedy-nojump, greedy-free, kN, kN-today, kN-nojump"
    )


def step_scan(loaded, window, prompts, regexes, batches: list[int], steps: int, jump: bool) -> None:
    """Milliseconds per decode step at each batch size, without a profiler's overhead: free decoding of exactly
    `steps` and 2 × `steps` new tokens gives the model's step alone (their difference) and the prompt's prefill
    (what is left); a constrained run to the answers' end, less that prefill, gives the step under the grammar
    (the model plus the automaton's masking; with jump-forward, forwards of a few tokens each)."""
    import torch

    def timed(chunk, rules, new_tokens, least):
        generation.generate_samples(
            loaded, chunk[:8], 4, Sampling(batch_size=8), regexes=rules[:8] if rules else None
        )  # warm-up
        if loaded.cuda:
            torch.cuda.synchronize()
        stats: dict = {}
        started = time.perf_counter()
        generation.generate_samples(
            loaded,
            chunk,
            new_tokens,
            Sampling(min_new_tokens=least, jump_forward=jump, batch_size=len(chunk), **DECODE),
            regexes=rules,
            stats=stats,
        )
        if loaded.cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - started, stats["forwards"]

    for batch in batches:
        chunk = (prompts * (-(-batch // len(prompts))))[:batch]
        rules = (regexes * (-(-batch // len(regexes))))[:batch]
        short, _ = timed(chunk, None, steps, steps)
        long, _ = timed(chunk, None, 2 * steps, 2 * steps)
        free_step = (long - short) / steps
        prefill = max(0.0, short - steps * free_step)
        constrained, ran = timed(chunk, rules, 1, 0)
        figures = {"window": window.name, "batch": batch, "fold_gqa": patches.APPLIED.get("fold_decode_attention")}
        figures |= {"prefill_s": round(prefill, 3), "jump_forward": jump}
        figures |= {"free_ms_per_step": round(1000 * free_step, 2), "constrained_steps": ran}
        figures |= {"constrained_ms_per_step": round(1000 * (constrained - prefill) / ran, 2)}
        print("STEP " + json.dumps(figures), flush=True)


DECODE: dict = {}  # --engine and --canonical: the decoding of --profile and --step-scan
PARTS = ("forward", "grammar mask", "sampling", "host<->device", "compaction")  # generation.py's profile ranges


def profile(loaded, prompts, regexes, batch_size, steps, jump: bool) -> None:
    """Where the time of one batch's first `steps` constrained decode steps goes: the split into model forward,
    grammar mask, sampling, host<->device syncs and copies, cache compaction (jump-forward) and the rest (Python,
    and under `generate` its own sampling and bookkeeping), per step, on the host and on the GPU; then the
    operators that take the time (the top 25 of each). Few steps: the profiler's overhead per kernel makes a
    whole answer take minutes, and inflates the host's share."""
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if loaded.cuda else [])
    chunk, rules = prompts[:batch_size], regexes[:batch_size]
    generation.generate_samples(
        loaded,
        chunk[:8],
        steps,
        Sampling(stop_after=steps, jump_forward=jump, batch_size=8, **DECODE),
        regexes=rules[:8],
    )
    stats: dict = {}
    with labelled_forward(loaded), torch_profile(activities=activities) as prof:
        started = time.perf_counter()
        generation.generate_samples(
            loaded,
            chunk,
            steps,
            Sampling(stop_after=steps, jump_forward=jump, batch_size=batch_size, **DECODE),
            regexes=rules,
            stats=stats,
        )
        if loaded.cuda:
            torch.cuda.synchronize()
        wall_ms = 1000 * (time.perf_counter() - started)
    events = prof.key_averages()
    forwards = max(1, stats.get("forwards", 0))

    def total(names, kind: str) -> float:  # milliseconds
        return sum(getattr(e, kind, 0.0) or 0.0 for e in events if e.key in names) / 1000

    device = "device_time_total" if hasattr(events[0], "device_time_total") else "cuda_time_total"
    split = {part: (total({part}, "cpu_time_total"), total({part}, device)) for part in PARTS}
    syncs = total({"aten::_local_scalar_dense"}, "cpu_time_total")  # .item() / .tolist(): the host waits
    copies = sum(e.self_device_time_total for e in events if e.key.startswith("Memcpy")) / 1000 if loaded.cuda else 0
    other = wall_ms - sum(host for host, _ in split.values())
    print(
        f"PROFILE {stats.get('path')}: {forwards} forwards of {len(chunk)} sequences in {wall_ms:.0f} ms "
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
    figures |= {"path": stats.get("path"), "forwards": forwards, "sequences": len(chunk), "device": device_name()}
    print("PROFILE " + json.dumps(figures), flush=True)
    for key in ([f"self_{device}"] if loaded.cuda else []) + ["self_cpu_time_total"]:
        print(prof.key_averages().table(sort_by=key, row_limit=25), flush=True)


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


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def kv_bytes_per_token(loaded) -> int:
    """Bytes of key/value cache per token of one sequence: layers × key/value heads × head size × 2 (K and V) ×
    bytes per element (the output layer's dtype: the compute dtype, also of a 4-bit model's cache)."""
    config = loaded.model.config
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    element = loaded.model.get_output_embeddings().weight.element_size()
    return config.num_hidden_layers * kv_heads * head_dim * 2 * element


def graph_counters(loaded) -> dict:
    """unsloth's CUDA-graph decode counters (captures, replays, eager steps) summed over the model, {} without."""
    counts: dict = {}
    for module in loaded.model.modules():
        state = module.__dict__.get("_unsloth_decode_graphs")
        if state is not None:
            for key in ("captures", "replays", "eager_steps"):
                counts[key] = counts.get(key, 0) + getattr(state, key, 0)
            if getattr(state, "disabled", None):
                counts["disabled"] = str(state.disabled)
    return counts


def folded_attention() -> bool:
    """Whether unsloth's decode attention is routed through `patches.fold_gqa_decode` in this process."""
    llama = sys.modules.get("unsloth.models.llama")
    return bool(llama is not None and getattr(llama.scaled_dot_product_attention, "folds_gqa", False))


def load(args):
    """The adapter as the tool loads it, or (--stack transformers) through transformers + PEFT alone, moved to
    the GPU in bf16: the comparison that shows what unsloth's inference path costs or saves. Without --model-dir,
    the untuned --model-name (the tool's default model when not given) the way the tool loads one."""
    applied = patches.Patches(fold_decode_attention=bool(args.fold_gqa))
    if args.model_dir is None:
        from config.model_args import ModelConfig

        untuned = ModelConfig(model_name=args.model_name, load_in_4bit=bool(args.load_in_4bit))
        return model.load_untuned(untuned, applied)
    if args.stack == "unsloth":
        return model.load_for_inference(args.model_dir, not args.base, args.load_in_4bit, applied)
    import torch

    model.gpu_stack = lambda applied=None: False  # the CPU loading path (no unsloth), then onto the GPU
    loaded = model.load_for_inference(args.model_dir, adapter=not args.base)
    loaded.model.to("cuda", dtype=torch.bfloat16)
    loaded.cuda = torch.cuda.is_available()
    return loaded


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", help="a trained adapter")
    p.add_argument("--model-name", help="without --model-dir: an untuned model (default: the tool's default)")
    p.add_argument(
        "--answer-format", choices=prompt_format.ANSWER_FORMATS, help="default: the adapter's (untuned: change)"
    )
    p.add_argument("--prices", required=True, help="folder of price CSVs")
    p.add_argument("--windows", default="1:1,5:5,20:5")
    p.add_argument("--modes", default="greedy,greedy-nojump,greedy-free,k8")
    p.add_argument("--count", type=int, default=256, help="forecasts per window and mode")
    p.add_argument("--batch-size", type=int, default=1024, help="sequences generated together")
    p.add_argument("--base", action="store_true", help="the untuned base model instead of the adapter")
    p.add_argument("--load-in-4bit", type=int, choices=[0, 1], default=None, help="override the saved setting")
    p.add_argument(
        "--stack",
        choices=["unsloth", "transformers"],
        default="unsloth",
        help="on a GPU: unsloth's fast inference (the tool's path) or plain transformers + PEFT in bf16",
    )
    p.add_argument("--temperature", type=float, default=InferenceConfig().temperature, help="of the kN modes")
    p.add_argument("--fold-gqa", type=int, choices=[0, 1], default=1, help="0: unsloth's decode attention as it ships")
    p.add_argument("--profile", action="store_true", help="profile --steps decode steps of one batch (first window)")
    p.add_argument("--step-scan", default="", help="batch sizes (e.g. 64,256,1024): ms per decode step at each")
    p.add_argument("--steps", type=int, default=32, help="decode steps of --profile and --step-scan")
    p.add_argument("--jump-forward", type=int, choices=[0, 1], default=1, help="of --profile and --step-scan")
    p.add_argument(
        "--engine", choices=["auto", "static", "transformers"], default="auto", help="of --profile, --step-scan"
    )
    p.add_argument("--canonical", type=int, choices=[0, 1], default=1, help="of --profile and --step-scan")
    p.add_argument("--bandwidth", type=float, default=4.8e12, help="memory bytes/s of the KV-read bound (H200)")
    args = p.parse_args()

    DECODE.update(engine=args.engine, canonical=bool(args.canonical))
    loaded = load(args)
    fields = loaded.config.fields or data_args.FIELD_SETS["ohlcv"]
    answer_format = args.answer_format or (loaded.config.answer_format if args.model_dir else "change")
    for window in data_args.parse_windows(args.windows):
        picked = windows_for(Path(args.prices), window, args.count)
        prompts = [
            [
                {
                    "role": "user",
                    "content": prompt_format.user_prompt(code, past, window.future, fields, "", answer_format),
                }
            ]
            for code, past, _ in picked
        ]
        regexes = [prompt_format.answer_regex(future.index, fields, answer_format) for _, _, future in picked]
        max_new = prompt_format.answer_token_budget(window.future, fields)
        generation.generate_samples(
            loaded, prompts[:4], max_new, Sampling(batch_size=4, samples=1), regexes=regexes[:4]
        )  # warm-up, compile
        if args.profile:
            profile(loaded, prompts, regexes, args.batch_size, args.steps, bool(args.jump_forward))
            args.profile = False
        if args.step_scan:
            scan = [int(b) for b in args.step_scan.split(",")]
            step_scan(loaded, window, prompts, regexes, scan, args.steps, bool(args.jump_forward))
            continue
        answers = {}
        for mode in args.modes.split(","):
            batch = Batch(window, picked, prompts, regexes, max_new, fields, answer_format)
            answers[mode] = measure_mode(args, loaded, batch, mode)
        for mode, ids in answers.items():  # every greedy mode's answers against the default's, token for token
            how = mode_options(mode)
            if mode != "greedy" and "greedy" in answers and how.samples == 1 and how.constrained:
                same = sum(a == b for a, b in zip(ids, answers["greedy"], strict=True))
                figures = {"window": window.name, "modes": ["greedy", mode]}
                figures |= {"identical_forecasts": same, "forecasts": len(ids)}
                print("SAME " + json.dumps(figures), flush=True)


@dataclass(frozen=True)
class Batch:
    """One window type's prompts: the windows picked, their prompts and answer grammars, the token budget, and how
    the answers are written."""

    window: object
    picked: list
    prompts: list
    regexes: list
    max_new: int
    fields: tuple
    answer_format: str


def measure_mode(args, loaded, batch: Batch, mode: str) -> list:
    """One window and mode: every prompt generated in batches, timed, the answers read; one BENCH line. Returns
    the answers' token ids."""
    window, picked, prompts, regexes = batch.window, batch.picked, batch.prompts, batch.regexes
    max_new, fields, answer_format = batch.max_new, batch.fields, batch.answer_format
    how = mode_options(mode)
    samples = how.samples
    if loaded.cuda:
        import torch

        torch.cuda.synchronize()
    stats: dict = {}
    graphs_before = graph_counters(loaded)
    replays_before = loaded.static.replays if loaded.static is not None else 0
    started = time.perf_counter()
    ids = generation.generate_token_ids(
        loaded,
        prompts,
        max_new,
        Sampling(
            jump_forward=how.jump,
            engine=how.engine,
            canonical=how.canonical,
            batch_size=args.batch_size,
            samples=samples,
            temperature=args.temperature,
        ),
        regexes=regexes if how.constrained else None,
        stats=stats,
    )
    seconds = time.perf_counter() - started
    answers = [loaded.tokenizer.batch_decode(group, skip_special_tokens=True) for group in ids]
    tokens = sum(len(a) for group in ids for a in group)
    usable = impossible = 0
    for (_, past, _), group in zip(picked, answers, strict=True):
        read = read_samples(group, fields, window.future, past.index[-1], prompt_format.anchor_of(past, answer_format))
        usable, impossible = usable + read.ok, impossible + read.impossible
    saved = loaded.config.model
    four_bit = (saved.load_in_4bit if saved else False) if args.load_in_4bit is None else args.load_in_4bit
    # the key/value cache one decode step reads: every sequence of a batch at its mean context over the answer
    # (prompt + half its answer); padded, at the batch's longest prompt, as attention reads a left-padded cache
    per_batch = min(len(prompts), max(1, args.batch_size // samples)) * samples
    prompt_tokens = [loaded.prompt_tokens(p) for p in prompts]
    half_answer = tokens / max(1, len(prompts) * samples) / 2
    context = (sum(prompt_tokens) / len(prompts) + half_answer) * per_batch
    padded = (max(prompt_tokens) + half_answer) * per_batch
    kv_bytes = kv_bytes_per_token(loaded)
    steps = max(1, stats.get("forwards", 0))
    graphs = graph_counters(loaded)
    figures = {
        "window": window.name,
        "mode": mode,
        "answer_format": answer_format,
        "forecasts": len(prompts),
        "sequences": len(prompts) * samples,
        "batch_size": args.batch_size,
        "seconds": round(seconds, 2),
        "forecasts_per_s": round(len(prompts) / seconds, 2),
        "generated_tokens_per_s": round(tokens / seconds, 1),
        "decode_steps": stats.get("forwards", 0),  # model forwards, prefills included
        "steps_per_batch": round(steps / max(1, stats.get("batches", 1)), 1),
        "answer_tokens_per_sequence": round(tokens / max(1, len(prompts) * samples), 1),
        "fed_tokens_per_step": round(stats.get("fed_tokens", 0) / steps, 1),  # batch × chunk width, pads included
        "ms_per_step": round(1000 * seconds / steps, 2),
        "kv_read_bound_ms_per_step": round(1000 * kv_bytes * context / args.bandwidth, 3),
        "kv_read_bound_padded_ms_per_step": round(1000 * kv_bytes * padded / args.bandwidth, 3),
        "kv_bytes_per_token": kv_bytes,
        "bandwidth": args.bandwidth,
        "usable": usable,
        "impossible_samples": impossible,
        "temperature": args.temperature if samples > 1 else None,
        "path": stats.get("path"),
        "engine": how.engine,
        "canonical_spelling": how.canonical,
        "one_token_steps": stats.get("one_token_steps"),
        "forced_forwards": stats.get("forced_forwards"),
        "static_graphs": stats.get("graphs"),
        "stack": args.stack if loaded.cuda else "transformers",
        "load_in_4bit": args.stack == "unsloth" and bool(four_bit) and loaded.cuda,
        "jump_forward": stats.get("path") in ("jump-forward", "static"),
        "cuda_graphs": patches.APPLIED.get("decode_graphs", "no CUDA") if loaded.cuda else "no CUDA",
        "graph_replays": graphs.get("replays", 0) - graphs_before.get("replays", 0),
        "graph_captures": graphs.get("captures", 0) - graphs_before.get("captures", 0),
        "graphs_disabled": graphs.get("disabled"),
        "fold_gqa": folded_attention(),
        "static_graph_replays": (loaded.static.replays - replays_before) if loaded.static is not None else 0,
        "batch_halvings": stats.get("halvings", 0),
        "cache_compactions": stats.get("compactions", 0),
        "device": device_name(),
    }
    print("BENCH " + json.dumps(figures), flush=True)
    return ids


if __name__ == "__main__":
    main()
