"""Forecasts per second: batched generation against one prompt at a time, on the same windows.

Loads a trained adapter (or its untuned base with --base), builds the evaluation's prompts for the
latest windows of real price CSVs, and generates them twice through `model.generate`: with
--batch-size prompts together, then one at a time. Prints one JSON line per way and the speed-up.

    python benchmarks/generate_speed.py --model-dir outputs/model --prices ../shared/data/prices --window 5:5
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
    p.add_argument("--model-dir", required=True)
    p.add_argument("--prices", required=True, help="folder of price CSVs")
    p.add_argument("--window", default="5:5")
    p.add_argument("--count", type=int, default=32, help="prompts, generated both ways")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--base", action="store_true", help="the untuned base model instead of the adapter")
    args = p.parse_args()

    loaded = model.load_for_inference(args.model_dir, adapter=not args.base)
    window = dataset.parse_windows(args.window)[0]
    fields = loaded.config.get("dataset", {}).get("fields", dataset.FIELD_SETS["ohlcv"])
    prompts = prompts_for(Path(args.prices), window, fields, args.count)
    max_new = 24 + window.future * 64
    model.generate(loaded, prompts[:2], max_new, batch_size=2)  # warm-up (kernels, caches)
    results = {}
    for batch in (args.batch_size, 1):
        started = time.perf_counter()
        answers = model.generate(loaded, prompts, max_new, batch_size=batch)
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
            "device": "cuda" if loaded.cuda else "cpu",
        }
        print("BENCH " + json.dumps(figures), flush=True)
    print(f"BENCH speed-up of batch {args.batch_size} over one at a time: {results[args.batch_size] / results[1]:.1f}x")


if __name__ == "__main__":
    main()
