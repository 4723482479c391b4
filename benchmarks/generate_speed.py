"""Forecasts per second and generated tokens per second, per window type and decoding mode.

Loads a trained adapter (or its untuned base with --base, or an untuned model with --model-name), builds the
evaluation's prompts (the adapter's answer format, the real next trading dates as the grammar's dates) for the
latest windows of real price CSVs, and generates them through `generation.generate_samples`, once per decoding
mode. Prints one JSON line per window × mode. A forecast is one prompt's answer(s): with K samples, K sequences.

    python -m benchmarks.generate_speed --model-dir outputs/model --prices ../shared/data/prices \
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
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import model
from benchmarks.decode_profile import device_name, profile, step_scan
from config import data_args
from config.inference_args import InferenceConfig
from forecasting.reading import read_samples
from llm import generation, patches
from llm.generation import Sampling
from market import price_files
from prompts import prompt_format


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


def arguments(argv=None) -> argparse.Namespace:
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
    return p.parse_args(argv)


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


def batch_of(loaded, args, window) -> Batch:
    """The latest --count windows of `window` as the evaluation would prompt them."""
    fields = loaded.config.fields or data_args.FIELD_SETS["ohlcv"]
    answer_format = args.answer_format or (loaded.config.answer_format if args.model_dir else "change")
    picked = windows_for(Path(args.prices), window, args.count)
    prompts = [
        [{"role": "user", "content": prompt_format.user_prompt(code, past, window.future, fields, "", answer_format)}]
        for code, past, _ in picked
    ]
    regexes = [prompt_format.answer_regex(future.index, fields, answer_format) for _, _, future in picked]
    max_new = prompt_format.answer_token_budget(window.future, fields)
    return Batch(window, picked, prompts, regexes, max_new, fields, answer_format)


def main(argv=None) -> None:
    args = arguments(argv)
    decode = {"jump_forward": bool(args.jump_forward), "engine": args.engine, "canonical": bool(args.canonical)}
    loaded = load(args)
    for n, window in enumerate(data_args.parse_windows(args.windows)):
        batch = batch_of(loaded, args, window)
        warm = Sampling(batch_size=4, samples=1)  # warm-up, compile
        generation.generate_samples(loaded, batch.prompts[:4], batch.max_new, warm, regexes=batch.regexes[:4])
        if args.profile and n == 0:
            profile(loaded, (batch.prompts, batch.regexes), args.batch_size, args.steps, decode)
        if args.step_scan:
            scan = [int(b) for b in args.step_scan.split(",")]
            step_scan(loaded, window, (batch.prompts, batch.regexes), scan, args.steps, decode)
            continue
        answers = {mode: measure_mode(args, loaded, batch, mode) for mode in args.modes.split(",")}
        for mode, ids in answers.items():  # every greedy mode's answers against the default's, token for token
            how = mode_options(mode)
            if mode != "greedy" and "greedy" in answers and how.samples == 1 and how.constrained:
                same = sum(a == b for a, b in zip(ids, answers["greedy"], strict=True))
                figures = {"window": window.name, "modes": ["greedy", mode]}
                figures |= {"identical_forecasts": same, "forecasts": len(ids)}
                print("SAME " + json.dumps(figures), flush=True)


def timed_ids(loaded, batch: Batch, how: Sampling, constrained: bool) -> tuple[list, float, dict]:
    """(every prompt's token ids, seconds, the generation's counters) of one mode."""
    if loaded.cuda:
        import torch

        torch.cuda.synchronize()
    stats: dict = {}
    started = time.perf_counter()
    regexes = batch.regexes if constrained else None
    ids = generation.generate_token_ids(loaded, batch.prompts, batch.max_new, how, regexes=regexes, stats=stats)
    return ids, time.perf_counter() - started, stats


def read_counts(loaded, batch: Batch, ids: list) -> tuple[int, int]:
    """(usable forecasts, impossible samples) of the answers `ids`, read as the tool reads them."""
    usable = impossible = 0
    for (_, past, _), group in zip(batch.picked, ids, strict=True):
        answers = loaded.tokenizer.batch_decode(group, skip_special_tokens=True)
        anchor = prompt_format.anchor_of(past, batch.answer_format)
        read = read_samples(answers, batch.fields, batch.window.future, past.index[-1], anchor)
        usable, impossible = usable + read.ok, impossible + read.impossible
    return usable, impossible


def kv_bounds(loaded, batch: Batch, per_batch: int, tokens_per_sequence: float, bandwidth: float) -> dict:
    """The key/value cache one decode step reads over `bandwidth`, in ms: every sequence of a batch of `per_batch`
    at its mean context over the answer (prompt + half its answer), and padded to the batch's longest prompt, as
    attention reads a left-padded cache."""
    prompt_tokens = [loaded.prompt_tokens(p) for p in batch.prompts]
    half_answer = tokens_per_sequence / 2
    context = (sum(prompt_tokens) / len(prompt_tokens) + half_answer) * per_batch
    padded = (max(prompt_tokens) + half_answer) * per_batch
    kv_bytes = kv_bytes_per_token(loaded)
    return {
        "kv_read_bound_ms_per_step": round(1000 * kv_bytes * context / bandwidth, 3),
        "kv_read_bound_padded_ms_per_step": round(1000 * kv_bytes * padded / bandwidth, 3),
        "kv_bytes_per_token": kv_bytes,
        "bandwidth": bandwidth,
    }


def measure_mode(args, loaded, batch: Batch, mode: str) -> list:
    """One window and mode: every prompt generated in batches, timed, the answers read; one BENCH line. Returns
    the answers' token ids."""
    how = mode_options(mode)
    sampling = Sampling(
        jump_forward=how.jump,
        engine=how.engine,
        canonical=how.canonical,
        batch_size=args.batch_size,
        samples=how.samples,
        temperature=args.temperature,
    )
    graphs_before = graph_counters(loaded)
    replays_before = loaded.static.replays if loaded.static is not None else 0
    ids, seconds, stats = timed_ids(loaded, batch, sampling, how.constrained)
    usable, impossible = read_counts(loaded, batch, ids)
    sequences, tokens = len(batch.prompts) * how.samples, sum(len(a) for group in ids for a in group)
    steps = max(1, stats.get("forwards", 0))
    per_batch = min(len(batch.prompts), max(1, args.batch_size // how.samples)) * how.samples
    figures = {
        "window": batch.window.name,
        "mode": mode,
        "answer_format": batch.answer_format,
        "forecasts": len(batch.prompts),
        "sequences": sequences,
        "batch_size": args.batch_size,
        "seconds": round(seconds, 2),
        "forecasts_per_s": round(len(batch.prompts) / seconds, 2),
        "generated_tokens_per_s": round(tokens / seconds, 1),
        "decode_steps": stats.get("forwards", 0),  # model forwards, prefills included
        "steps_per_batch": round(steps / max(1, stats.get("batches", 1)), 1),
        "answer_tokens_per_sequence": round(tokens / max(1, sequences), 1),
        "fed_tokens_per_step": round(stats.get("fed_tokens", 0) / steps, 1),  # batch × chunk width, pads included
        "ms_per_step": round(1000 * seconds / steps, 2),
        **kv_bounds(loaded, batch, per_batch, tokens / max(1, sequences), args.bandwidth),
        "usable": usable,
        "impossible_samples": impossible,
        "temperature": args.temperature if how.samples > 1 else None,
        "engine": how.engine,
        "canonical_spelling": how.canonical,
        **path_figures(args, loaded, stats),
        **graph_figures(loaded, graphs_before, replays_before),
        "device": device_name(),
    }
    print("BENCH " + json.dumps(figures), flush=True)
    return ids


def path_figures(args, loaded, stats: dict) -> dict:
    """Which decoding path ran, on which stack, and the counters of its schedule."""
    saved = loaded.config.model
    four_bit = (saved.load_in_4bit if saved else False) if args.load_in_4bit is None else args.load_in_4bit
    return {
        "path": stats.get("path"),
        "one_token_steps": stats.get("one_token_steps"),
        "forced_forwards": stats.get("forced_forwards"),
        "static_graphs": stats.get("graphs"),
        "stack": args.stack if loaded.cuda else "transformers",
        "load_in_4bit": args.stack == "unsloth" and bool(four_bit) and loaded.cuda,
        "jump_forward": stats.get("path") in ("jump-forward", "static"),
        "batch_halvings": stats.get("halvings", 0),
        "cache_compactions": stats.get("compactions", 0),
    }


def graph_figures(loaded, before: dict, replays_before: int) -> dict:
    """Which CUDA graphs and attention ran: unsloth's decode graphs' counters since `before`, the folded decode
    attention, the static engine's graph replays since `replays_before`."""
    graphs = graph_counters(loaded)
    return {
        "cuda_graphs": patches.APPLIED.get("decode_graphs", "no CUDA") if loaded.cuda else "no CUDA",
        "graph_replays": graphs.get("replays", 0) - before.get("replays", 0),
        "graph_captures": graphs.get("captures", 0) - before.get("captures", 0),
        "graphs_disabled": graphs.get("disabled"),
        "fold_gqa": folded_attention(),
        "static_graph_replays": (loaded.static.replays - replays_before) if loaded.static is not None else 0,
    }


if __name__ == "__main__":
    main()
