"""What a walk-forward evaluation forecasts: the adapter's settings (or the command line's), the test period
(never a day the adapter saw), the companies, their prices up to the period's end and the test windows."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import pandas as pd

from config import data_args, manifest
from config.context_args import ContextConfig
from config.data_args import DataConfig, ExamplesConfig
from config.evaluation_args import EvalConfig
from evaluation import forecast_windows
from evaluation.interface import History
from market.company_list import Company
from market.workspace import Workspace
from utils import StockToolError

log = logging.getLogger("stock.evaluate")


@dataclass(frozen=True)
class Plan:
    wanted: tuple[str, ...]  # the models of --eval-models
    adapter: manifest.Manifest | None
    data: DataConfig  # as the adapter was trained (or the command line's)
    examples: ExamplesConfig
    context: ContextConfig
    test_start: dt.date
    test_end: dt.date
    seen_end: dt.date | None  # the last day the adapter saw
    companies: tuple[Company, ...]
    windows: tuple
    prices: dict
    tests: tuple

    @property
    def fields(self) -> tuple[str, ...]:
        return self.examples.fields

    @property
    def answer_format(self) -> str:
        return self.examples.answer_format

    def history(self) -> History:
        """What the forecasters may fit on: prices up to the adapter's last training day, or else the day before
        the test period."""
        last_day = pd.Timestamp(self.seen_end or self.test_start - dt.timedelta(days=1))
        cutoff = pd.Timestamp(self.adapter.cutoff) if self.adapter and self.adapter.cutoff else None
        prices = {code: f[f.index <= last_day] for code, f in self.prices.items()}
        return History(
            prices,
            self.companies,
            self.windows,
            self.fields,
            self.examples.stride,
            self.examples.val_fraction,
            cutoff,
            last_day,
        )


def plan(ws: Workspace, model_dir: str, cfg: EvalConfig) -> Plan:
    """The adapter's settings (or the command line's), the test period, prices up to its end, the test windows."""
    wanted = cfg.models
    # an LSTM-and-baselines run reads no adapter, so one left in --model-dir neither changes nor blocks it
    adapter = manifest.read(str(model_dir)) if {"tuned", "base"} & set(wanted) else None
    data = (adapter.data if adapter else None) or ws.data
    examples = (adapter.examples if adapter else None) or ws.examples
    if adapter and adapter.dataset:  # what was built, whatever the settings said
        examples = ExamplesConfig(**vars(examples) | _built(adapter.dataset))
    test_start, test_end, seen_end = _test_period(ws, model_dir, cfg, adapter)
    companies = tuple(_eval_companies(ws, adapter))
    windows = cfg.windows or examples.windows
    first_day = dt.date(data.year, data.month, 1)
    prices = {c.code: ws.update_prices(c, first_day, test_end, examples.fields) for c in companies}
    columns = [data_args.FIELDS[f][1] for f in examples.fields]
    tests = _test_windows(companies, prices, windows, (test_start, test_end), cfg.stride, columns)
    context = (adapter.context if adapter else None) or ws.context
    return Plan(
        wanted,
        adapter,
        data,
        examples,
        context,
        test_start,
        test_end,
        seen_end,
        companies,
        tuple(windows),
        prices,
        tuple(tests),
    )


def _built(record) -> dict:
    """The window types, fields and answer format an adapter's examples were built with."""
    built = {"answer_format": record.answer_format}
    if record.windows:
        built["windows"] = data_args.parse_windows(",".join(record.windows))
    if record.fields:
        built["fields"] = tuple(record.fields)
    return built


def _test_period(ws: Workspace, model_dir: str, cfg: EvalConfig, adapter: manifest.Manifest | None):
    """(test_start, test_end, last day the adapter saw). Refuses a period the adapter was trained on."""
    seen = None
    if adapter:
        seen = adapter.last_seen
        if not seen:
            raise StockToolError(
                f"{model_dir} does not record the last day it was trained on; "
                "retrain it with --end-date so that an evaluation can keep to later days"
            )
        seen = dt.date.fromisoformat(seen)
    if cfg.test_start:
        start = dt.date.fromisoformat(cfg.test_start)
    elif seen:
        start = seen + dt.timedelta(days=1)
    else:
        raise StockToolError("--test-start is required when no trained adapter is evaluated")
    end = dt.date.fromisoformat(cfg.test_end) if cfg.test_end else ws.date_range()[1]
    if end < start:
        raise StockToolError(f"--test-end {end} is before --test-start {start}")
    if seen and seen >= start:
        raise StockToolError(
            f"the adapter in {model_dir} was trained on prices up to {seen}, which overlaps the "
            f"test period from {start}: that would score it on days it has seen. Use --test-start after {seen} "
            "or retrain with an earlier --end-date"
        )
    return start, end, seen


def _eval_companies(ws: Workspace, adapter: manifest.Manifest | None) -> list[Company]:
    """--company-list-file's companies when given, else the adapter's."""
    if ws.data.company_list_file or not adapter or not adapter.companies:
        return ws.companies()
    return [Company.from_saved(c) for c in adapter.companies]


def _test_windows(companies, prices, windows, period, stride, columns):
    tests = []
    start, end = (pd.Timestamp(day) for day in period)
    for window in windows:
        found = []
        for c in companies:
            found += forecast_windows.test_windows(
                prices[c.code], (c.code, c.name_zh), window, (start, end), stride, columns
            )
        if not found:
            log.warning("no %s test window fits in %s → %s", window.name, *period)
        tests += found
    if not tests:
        days = max((int(((f.index >= start) & (f.index <= end)).sum()) for f in prices.values()), default=0)
        raise StockToolError(
            f"no test window fits in {period[0]} → {period[1]}: the price data has {days} trading day(s) there "
            f"and the shortest window needs {min(w.future for w in windows)} (check --test-start/--test-end, "
            "--end-date and that prices reach the test period)"
        )
    return tests
