"""Forecasts per second: batched generation against one prompt at a time, on the same windows.

Loads a trained adapter (or its untuned base with --base), builds the evaluation's prompts for the
latest windows of real price CSVs, and generates them twice through `model.generate`: with
--batch-size prompts together, then one at a time. Prints one JSON line per way and the speed-up.

    python benchmarks/generate_speed.py --model-dir outputs/model --prices ../shared/data/prices --window 5:5
    python benchmarks/generate_speed.py --model-name <HF folder or .gguf> --prices ... --fixed-tokens 250

`--fixed-tokens N` makes every answer exactly N tokens long, both ways: pure generation throughput at a
forecast's length, for a model (such as an untuned base) whose own answers stop early.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dataset  # noqa: E402
import market_data  # noqa: E402
import model  # noqa: E402


def prompts_for(prices: Path, window: dataset.WindowType, fields: list[str], count: int) -> list:
    prompts = []
    files = sorted(f for f in prices.glob("*.csv") if f.stem.isdigit())  # stock codes (not TAIEX.csv)
    per_company = max(1, -(-count // len(files)))
    for path in files:
        frame = market_data.parse_price_csv(path)
        for end in range(len(frame) - per_company, len(frame)):
            past = frame.iloc[end - window.past : end]
            content = dataset.user_prompt(path.stem, past, window.future, fields)
            prompts.append([{"role": "user", "content": content}])
    return prompts[:count]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", help="a trained adapter")
    p.add_argument("--model-name", help="instead of --model-dir: a base model (Hub id, HF folder or .gguf)")
    p.add_argument("--fixed-tokens", type=int, default=0, help="generate exactly this many tokens per answer")
    p.add_argument("--prices", required=True, help="folder of price CSVs")
    p.add_argument("--window", default="5:5")
    p.add_argument("--count", type=int, default=32, help="prompts, generated both ways")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--base", action="store_true", help="the untuned base model instead of the adapter")
    args = p.parse_args()

    if args.model_name:
        cuda = model.cuda_available()
        cfg = model.ModelConfig(model_name=args.model_name, max_seq_length=8192)
        base, tokenizer = model.load_base(cfg, model.resolve_model_source(args.model_name), cuda)
        if cuda:
            from unsloth import FastLanguageModel

            FastLanguageModel.for_inference(base)
        loaded = model.LoadedModel(base.eval(), tokenizer, cuda, {})
    elif args.model_dir:
        loaded = model.load_for_inference(args.model_dir, adapter=not args.base)
    else:
        p.error("give --model-dir or --model-name")
    window = dataset.parse_windows(args.window)[0]
    fields = loaded.config.get("dataset", {}).get("fields", dataset.FIELD_SETS["ohlcv"])
    prompts = prompts_for(Path(args.prices), window, fields, args.count)
    max_new = args.fixed_tokens or dataset.answer_token_budget(window.future, fields)
    model.generate(loaded, prompts[:2], max_new, batch_size=2, min_new_tokens=args.fixed_tokens)  # warm-up
    results = {}
    for batch in (args.batch_size, 1):
        started = time.perf_counter()
        answers = model.generate(loaded, prompts, max_new, batch_size=batch, min_new_tokens=args.fixed_tokens)
        seconds = time.perf_counter() - started
        parsed = 0
        for answer in answers:
            try:
                dataset.parse_answer(answer, fields, expected=window.future)
                parsed += 1
            except dataset.ForecastParseError:
                pass
        results[batch] = len(prompts) / seconds
        figures = {
            "window": window.name,
            "prompts": len(prompts),
            "batch_size": batch,
            "seconds": round(seconds, 2),
            "forecasts_per_s": round(results[batch], 2),
            "parsed": parsed,
            "new_tokens_each": args.fixed_tokens or "up to " + str(max_new),
            "device": "cuda" if loaded.cuda else "cpu",
        }
        print("BENCH " + json.dumps(figures), flush=True)
    print(f"BENCH speed-up of batch {args.batch_size} over one at a time: {results[args.batch_size] / results[1]:.1f}x")


if __name__ == "__main__":
    main()
