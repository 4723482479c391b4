"""Paired comparison of two LLM evaluations of the same test period (the ablation's arms).

Each `--evaluate 1` run writes `answers.jsonl` (the raw answers) and `metrics.json` (its adapter's answer format
and fields). Two arms scored separately have overlapping intervals that say little about which is better, since
both face the same days. This script re-reads both runs' answers with the project's own parser, keeps the
forecasts that both got right (valid, possible candles), and bootstraps the difference of their close MAPE
(B − A, in % points, and as skill vs persistence) over blocks of target dates, as `evaluation.summarize` does:

    python -m benchmarks.paired --prices ../shared/data/prices --a <run A>/eval_greedy --b <run B>/eval_greedy
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from config import data_args
from evaluation import metrics
from forecasting import reading
from market import price_files
from prompts import prompt_format


def close_errors(run: Path, folder: Path, prices: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per valid forecast step of a run: its key, the close APE and persistence's."""
    training = json.loads((run / "metrics.json").read_text())["context"]["adapter_training"]
    fields, answer_format = training["fields"], training.get("answer_format", "absolute")
    records = []
    for line in (run / "answers.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["code"] not in prices:
            prices[row["code"]] = price_files.parse_price_csv(folder / f"{row['code']}.csv")
        frame = prices[row["code"]]
        window = data_args.parse_windows(row["window"])[0]
        origin = pd.Timestamp(row["origin"])
        at = int(frame.index.get_loc(origin))
        history, actual = frame.iloc[: at + 1], frame.iloc[at + 1 : at + 1 + window.future]
        samples = row["answer"] if isinstance(row["answer"], list) else [row["answer"]]
        read = reading.read_samples(
            samples, fields, window.future, origin, prompt_format.anchor_of(history, answer_format)
        )
        if not read.ok:
            continue
        last_close = float(history["Close"].iloc[-1])
        for step, (pred, true) in enumerate(zip(read.point["Close"], actual["Close"], strict=True), start=1):
            records.append(
                {
                    "key": (row["code"], row["window"], row["origin"], step),
                    "window": row["window"],
                    "target_date": actual.index[step - 1],
                    "ape": 100 * abs(pred - true) / true,
                    "persist_ape": 100 * abs(last_close - true) / true,
                }
            )
    return pd.DataFrame.from_records(records)


def compare(a: pd.DataFrame, b: pd.DataFrame, n_boot: int, seed: int = 0) -> list[dict]:
    """Per window: both runs' MAPE and skill on the shared valid steps, and the 95% interval of B − A."""
    both = a.merge(b[["key", "ape"]], on="key", suffixes=("_a", "_b"))
    out = []
    for window, group in both.groupby("window", sort=False):
        sums = group.groupby("target_date")[["ape_a", "ape_b", "persist_ape"]].sum().to_numpy()
        idx = metrics.block_bootstrap_indices(len(sums), n_boot, 5, seed)
        boot = sums[idx].sum(axis=1)
        total = sums.sum(axis=0)
        diff = (boot[:, 0] - boot[:, 1]) / boot[:, 2]  # skill B − skill A = (MAPE A − MAPE B) / persistence
        out.append(
            {
                "window": window,
                "steps": len(group),
                "mape_a": total[0] / len(group),
                "mape_b": total[1] / len(group),
                "skill_a": 1 - total[0] / total[2],
                "skill_b": 1 - total[1] / total[2],
                "skill_b_minus_a": (total[0] - total[1]) / total[2],
                "ci95": [float(np.percentile(diff, 2.5)), float(np.percentile(diff, 97.5))],
            }
        )
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prices", required=True, help="the folder of price CSVs the runs were evaluated on")
    parser.add_argument("--a", required=True, type=Path, help="evaluation folder A (answers.jsonl, metrics.json)")
    parser.add_argument("--b", required=True, type=Path, help="evaluation folder B, same test period")
    parser.add_argument("--n-boot", type=int, default=2000)
    args = parser.parse_args(argv)
    folder = price_files.resolve_price_dir(args.prices)
    prices: dict[str, pd.DataFrame] = {}
    a, b = close_errors(args.a, folder, prices), close_errors(args.b, folder, prices)
    print(f"A: {args.a}\nB: {args.b}")
    print("| window | steps valid in both | MAPE A | MAPE B | skill A | skill B | skill B − A [95% CI] |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in compare(a, b, args.n_boot):
        lo, hi = r["ci95"]
        print(
            f"| {r['window']} | {r['steps']:,} | {r['mape_a']:.3f} | {r['mape_b']:.3f} | {r['skill_a']:+.3f} | "
            f"{r['skill_b']:+.3f} | {r['skill_b_minus_a']:+.3f} [{lo:+.3f}, {hi:+.3f}] |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
