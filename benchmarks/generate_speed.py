"""Forecasts per second and generated tokens per second, per window type and decoding mode.

Loads a trained adapter (or its untuned base with --base), builds the evaluation's prompts (the adapter's
answer format, the real next trading dates as the grammar's dates) for the latest windows of real price
CSVs, and generates them through `generation.generate_samples`, once per decoding mode. Prints one JSON line
per window × mode. A forecast is one prompt's answer(s): with K samples, K sequences.

    python benchmarks/generate_speed.py --model-dir outputs/model --prices ../shared/data/prices \
        --windows 1:1,5:5,20:5 --modes greedy,greedy-free,k8 --count 256 --batch-size 1024

Modes: greedy (constrained), greedy-free (unconstrained, the old path), kN (median of N constrained samples).
`--stack transformers` loads the adapter with transformers + PEFT alone, in bf16 on the GPU, instead of unsloth;
`--profile` prints where the GPU and CPU time of `--steps` decode steps of one batch goes (torch.profiler);
`--step-scan 64,256,1024` prints milliseconds per decode step at each batch size, free and under the grammar;
`--fold-gqa 0` measures unsloth's decode attention as it ships (see `attention.fold_gqa_decode`). unsloth's CUDA-graph
decode step is on unless UNSLOTH_DECODE_CUDA_GRAPHS=0 is set (see `model.load_for_inference`).
`--load-in-4bit 1/0` overrides the adapter's saved quantization to compare 4-bit with 16-bit inference.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import attention  # noqa: E402
import dataset  # noqa: E402
import generation  # noqa: E402
import market_data  # noqa: E402
import model  # noqa: E402
from configs import DecodingConfig  # noqa: E402
from forecast import read_samples  # noqa: E402


def windows_for(prices: Path, window: dataset.WindowType, count: int) -> list:
    """(code, past, future) for the latest `count` windows spread over the companies."""
    files = sorted(f for f in prices.glob("*.csv") if f.stem.isdigit())  # stock codes (not TAIEX.csv)
    per_company = max(1, -(-count // len(files)))
    out = []
    for path in files:
        frame = market_data.parse_price_csv(path).dropna(subset=["Open", "High", "Low", "Close", "Volume"])
        last = len(frame) - window.future
        for end in range(last - per_company + 1, last + 1):
            out.append((path.stem, frame.iloc[end - window.past : end], frame.iloc[end : end + window.future]))
    return out[:count]


def mode_options(mode: str) -> tuple[int, bool]:
    """(samples, constrained) of a mode name."""
    if mode == "greedy":
        return 1, True
    if mode == "greedy-free":
        return 1, False
    if mode.startswith("k") and mode[1:].isdigit():
        return int(mode[1:]), True
    raise SystemExit(f"unknown mode {mode!r}: greedy, greedy-free or kN")


def step_scan(loaded, window, prompts, regexes, batches: list[int], steps: int) -> None:
    """Milliseconds per decode step at each batch size, without a profiler's overhead: free decoding of exactly
    `steps` and 2 × `steps` new tokens gives the model's step alone (their difference) and the prompt's prefill
    (what is left); a constrained run to the answers' end, less that prefill, gives the step under the grammar
    (the model plus the automaton's masking)."""
    import torch

    def timed(chunk, rules, new_tokens):
        generation.generate_samples(loaded, chunk[:8], 4, 8, regexes=rules[:8] if rules else None)  # warm-up
        if loaded.cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        generation.generate_samples(loaded, chunk, new_tokens, len(chunk), regexes=rules, min_new_tokens=new_tokens)
        if loaded.cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - started, STEPS[-1]

    for batch in batches:
        chunk = (prompts * (-(-batch // len(prompts))))[:batch]
        rules = (regexes * (-(-batch // len(regexes))))[:batch]
        short, _ = timed(chunk, None, steps)
        long, _ = timed(chunk, None, 2 * steps)
        free_step = (long - short) / steps
        prefill = max(0.0, short - steps * free_step)
        constrained, ran = timed(chunk, rules, 1)
        figures = {"window": window.name, "batch": batch, "fold_gqa": attention.FOLD_GQA_DECODE}
        figures |= {"prefill_s": round(prefill, 3)}
        figures |= {"free_ms_per_step": round(1000 * free_step, 2), "constrained_steps": ran}
        figures |= {"constrained_ms_per_step": round(1000 * (constrained - prefill) / ran, 2)}
        print("STEP " + json.dumps(figures), flush=True)


def profile(loaded, prompts, regexes, batch_size, steps) -> None:
    """The operators that take the time of one batch's first `steps` constrained decode steps, on the GPU and on
    the CPU (the top 25 of each). Few steps: the profiler's overhead per kernel makes a whole answer take minutes."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if loaded.cuda else [])
    generation.generate_samples(loaded, prompts[:8], steps, 8, regexes=regexes[:8])  # warm-up
    with torch_profile(activities=activities) as prof:
        generation.generate_samples(
            loaded, prompts[:batch_size], steps, batch_size, regexes=regexes[:batch_size], stop_after=steps
        )
    for key in (["self_cuda_time_total"] if loaded.cuda else []) + ["self_cpu_time_total"]:
        print(prof.key_averages().table(sort_by=key, row_limit=25), flush=True)


STEPS: list[int] = []  # decode steps of each `generate` call, recorded by `count_steps`


def count_steps(loaded) -> None:
    """Wraps the model's `generate` to record in STEPS how many tokens each batch ran for (the decode steps, which
    the longest answer of the batch decides), so the figures can say time per step as well as per forecast."""
    inner = loaded.model.generate

    def generate(*args, **kwargs):
        output = inner(*args, **kwargs)
        STEPS.append(int(output.shape[1] - kwargs["input_ids"].shape[1]))
        return output

    loaded.model.generate = generate


def load(args):
    """The adapter as the tool loads it, or (--stack transformers) through transformers + PEFT alone, moved to
    the GPU in bf16: the comparison that shows what unsloth's inference path costs or saves."""
    if args.stack == "unsloth":
        return model.load_for_inference(args.model_dir, adapter=not args.base, load_in_4bit=args.load_in_4bit)
    import torch

    model.cuda_available = lambda: False  # the CPU loading path (no unsloth), then onto the GPU
    loaded = model.load_for_inference(args.model_dir, adapter=not args.base)
    loaded.model.to("cuda", dtype=torch.bfloat16)
    loaded.cuda = torch.cuda.is_available()
    return loaded


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", required=True, help="a trained adapter")
    p.add_argument("--prices", required=True, help="folder of price CSVs")
    p.add_argument("--windows", default="1:1,5:5,20:5")
    p.add_argument("--modes", default="greedy,greedy-free,k8")
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
    p.add_argument("--temperature", type=float, default=DecodingConfig().temperature, help="of the kN modes")
    p.add_argument("--fold-gqa", type=int, choices=[0, 1], default=1, help="0: unsloth's decode attention as it ships")
    p.add_argument("--profile", action="store_true", help="profile --steps decode steps of one batch (first window)")
    p.add_argument("--step-scan", default="", help="batch sizes (e.g. 64,256,1024): ms per decode step at each")
    p.add_argument("--steps", type=int, default=32, help="decode steps of --profile and --step-scan")
    args = p.parse_args()

    attention.FOLD_GQA_DECODE = bool(args.fold_gqa)
    loaded = load(args)
    count_steps(loaded)
    fields = loaded.config.fields or dataset.FIELD_SETS["ohlcv"]
    answer_format = loaded.config.answer_format
    for window in dataset.parse_windows(args.windows):
        picked = windows_for(Path(args.prices), window, args.count)
        prompts = [
            [{"role": "user", "content": dataset.user_prompt(code, past, window.future, fields, "", answer_format)}]
            for code, past, _ in picked
        ]
        regexes = [dataset.answer_regex(future.index, fields, answer_format) for _, _, future in picked]
        max_new = dataset.answer_token_budget(window.future, fields)
        generation.generate_samples(loaded, prompts[:4], max_new, 4, 1, regexes=regexes[:4])  # warm-up, compile
        if args.profile:
            profile(loaded, prompts, regexes, args.batch_size, args.steps)
            args.profile = False
        if args.step_scan:
            step_scan(loaded, window, prompts, regexes, [int(b) for b in args.step_scan.split(",")], args.steps)
            continue
        for mode in args.modes.split(","):
            measure_mode(args, loaded, window, mode, picked, prompts, regexes, max_new, fields, answer_format)


def measure_mode(args, loaded, window, mode, picked, prompts, regexes, max_new, fields, answer_format) -> None:
    """One window and mode: every prompt generated in batches, timed, the answers read; one BENCH line."""
    samples, constrained = mode_options(mode)
    if loaded.cuda:
        import torch

        torch.cuda.synchronize()
    STEPS.clear()
    started = time.perf_counter()
    answers = generation.generate_samples(
        loaded, prompts, max_new, args.batch_size, samples, args.temperature, regexes if constrained else None
    )
    seconds = time.perf_counter() - started
    tokens = sum(len(loaded.tokenizer(a)["input_ids"]) for group in answers for a in group)
    usable = impossible = 0
    for (_, past, _), group in zip(picked, answers, strict=True):
        read = read_samples(group, fields, window.future, past.index[-1], dataset.anchor_of(past, answer_format))
        usable, impossible = usable + read.ok, impossible + read.impossible
    four_bit = loaded.config.model.load_in_4bit if args.load_in_4bit is None else args.load_in_4bit
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
        "decode_steps": sum(STEPS),
        "ms_per_step": round(1000 * seconds / max(1, sum(STEPS)), 2),
        "usable": usable,
        "impossible_samples": impossible,
        "temperature": args.temperature if samples > 1 else None,
        "stack": args.stack,
        "load_in_4bit": args.stack == "unsloth" and bool(four_bit),
        "cuda_graphs": os.environ.get("UNSLOTH_DECODE_CUDA_GRAPHS", "unset"),
        "fold_gqa": attention.FOLD_GQA_DECODE,
        "device": "cuda" if loaded.cuda else "cpu",
    }
    print("BENCH " + json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
