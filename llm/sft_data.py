"""Stage 2, the training data: every company's windowed chat examples, split chronologically into train and
validation, written as JSONL beside a manifest of what was built. The JSONL is for inspection (what the model
was trained on); training takes the examples in memory and does not read it back.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import pandas as pd

import dataset
from config.data_args import fields_text
from config.flags import as_text
from market.company_list import Company
from market.workspace import Workspace
from utils import StockToolError, write_json, write_jsonl

log = logging.getLogger("stock.sft_data")


@dataclass(frozen=True)
class TrainingData:
    """What training takes: the examples (TRL's conversational prompt-completion rows), and what the adapter's
    manifest records of them: the settings they were built with, the built dataset's record, the companies."""

    train: tuple[dict, ...]
    val: tuple[dict, ...]
    dataset: dict  # cutoff, first and last day, counts (`config.manifest.DatasetRecord`)
    settings: dict  # the data, examples and context settings, as saved

    def manifest(self) -> dict:
        """The keys this stage adds to the adapter's stock_config.json."""
        return self.settings | {"dataset": self.dataset}


def prepare(ws: Workspace) -> TrainingData:
    """Companies → prices → news → examples (with --universe market, the other listed stocks' too)."""
    companies = ws.companies()
    prices = ws.fetch_prices(companies)
    ws.collect_news(companies)
    market = ws.market_stocks({c.code for c in companies}) if ws.data.universe == "market" else {}
    train, val, record = build(ws, companies, prices, market)
    saved = {"data": as_text(ws.data), "examples": as_text(ws.examples), "context": as_text(ws.context)}
    saved["companies"] = [asdict(c) for c in companies]
    return TrainingData(tuple(train), tuple(val), record, saved)


def build(ws: Workspace, companies: list[Company], prices: dict[str, pd.DataFrame], market=None):
    """(train, validation, the dataset's record): targets before the cutoff train, inputs from it validate,
    straddlers are dropped; validation is thinned evenly to --max-val-examples. The cutoff comes from the
    companies' days; `market` ({code: (Company, frame)}, --universe market) adds training windows of other
    stocks, every --universe-stride days, whose targets end before it (they never validate)."""
    data = ws.examples
    examples, skipped = _all_examples(ws, companies, prices)
    all_dates = [d for f in prices.values() for d in f.index]
    cutoff = dataset.split_cutoff(all_dates, data.val_fraction)
    train, val, straddling = dataset.chronological_split(examples, cutoff)
    others = _market_examples(ws, market or {}, cutoff)
    train += others
    if not train:
        raise StockToolError(f"no training window ends before the validation cutoff {cutoff:%Y-%m-%d}")
    if len(val) > data.max_val_examples:  # an even spread over the held-out period, not a shuffle
        step = len(val) / data.max_val_examples
        val = [val[int(i * step)] for i in range(data.max_val_examples)]
    manifest = {
        "cutoff": cutoff.strftime("%Y-%m-%d"),
        "first_date": min(all_dates).strftime("%Y-%m-%d"),
        "last_date": max(all_dates).strftime("%Y-%m-%d"),  # nothing after it was seen: the leakage guard
        "stride": data.stride,
        "windows": [w.name for w in ws.windows],
        "fields": list(ws.fields),
        "answer_format": data.answer_format,
        "companies": [c.code for c in companies],
        "universe": ws.data.universe,
        "market_stocks": len({e["meta"]["code"] for e in others}),
        "market_train_examples": len(others),
        "train_examples": len(train),
        "val_examples": len(val),
        "dropped_straddling_cutoff": straddling,
        "skipped_blank_fields": skipped,
        "per_window": {w.name: sum(e["meta"]["window"] == w.name for e in train) for w in ws.windows},
        "per_context": _count_by(train, "context"),
    }
    out = ws.examples_dir()
    write_jsonl(out / "train.jsonl", train)
    write_jsonl(out / "val.jsonl", val)
    write_json(out / "manifest.json", manifest)
    print(
        f"examples: {len(train):,} train / {len(val):,} validation (cutoff {manifest['cutoff']}, "
        f"{straddling} straddling the cutoff dropped, {skipped} with blank fields skipped) → {out}"
    )
    return train, val, manifest


def _all_examples(ws: Workspace, companies: list[Company], prices: dict[str, pd.DataFrame]) -> tuple[list, int]:
    """(every company's examples of every window type, windows skipped for blank fields)."""
    from tqdm import tqdm

    examples, skipped = [], 0
    context = ws.context_builder(ws.context, prices)
    for company in tqdm(companies, desc="examples", unit="company", disable=len(companies) < 3):
        frame = prices[company.code]
        for window in ws.windows:
            if len(frame) < window.past + window.future:
                log.warning("%s has %d trading days, too few for window %s", company.code, len(frame), window.name)
                continue
            style = dataset.ExampleStyle(ws.examples.stride, context(company.code), ws.examples.answer_format)
            built, bad = dataset.build_examples(frame, company.name_zh, company.code, window, ws.fields, style)
            examples += built
            skipped += bad
    if not examples:
        longest = max(w.past + w.future for w in ws.windows)
        raise StockToolError(
            f"too little history: no company has {longest} trading days with every field in "
            f"--fields {fields_text(ws.fields)}; start earlier with --year/--month or use shorter --windows"
        )
    return examples, skipped


def _market_examples(ws: Workspace, market: dict, cutoff: pd.Timestamp) -> list[dict]:
    """The training windows of the market's other stocks (`market`: {code: (Company, frame)}) whose targets
    end before `cutoff`, every --universe-stride trading days; prices only (no news or signals for them)."""
    from tqdm import tqdm

    style = dataset.ExampleStyle(ws.data.universe_stride, None, ws.examples.answer_format)
    kept = []
    for company, frame in tqdm(market.values(), desc="market examples", unit="stock", disable=len(market) < 3):
        frame = frame.loc[frame.index < cutoff]
        for window in ws.windows:
            if len(frame) >= window.past + window.future:
                built, _ = dataset.build_examples(frame, company.name_zh, company.code, window, ws.fields, style)
                kept += built
    return kept


def _count_by(examples: list[dict], key: str) -> dict[str, int]:
    """How many examples carry each value of meta[key], by value in order."""
    values = sorted({e["meta"][key] for e in examples})
    return {v: sum(e["meta"][key] == v for e in examples) for v in values}
