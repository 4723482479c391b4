"""Walk-forward evaluation as a pipeline stage: test windows for every company and window type, then a loop
over the forecasters (`forecasters.py`: the naive baselines, the random walk, the LSTM; `llm_forecaster.py`:
the tuned and untuned LLMs), each fitted on the training period and predicting the same windows, then metrics,
a backtest and the report. The arithmetic is in `evaluation.py`; the report in `report.py`.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from config import data_args, manifest
from config.data_args import DataConfig
from config.evaluation_args import EvalConfig
from config.flags import parse_flag
from evaluation import answer_cache, backtest, baselines, calibrate, forecast_windows, llm_forecasters, metrics
from evaluation.interface import Forecaster, History
from evaluation.reference_forecasters import Baseline, EwmaRandomWalk, GarchRandomWalk, Lstm, RandomWalk
from llm import distributed
from market.company_list import Company
from market.workspace import Workspace
from utils import StockToolError

log = logging.getLogger("stock.evaluate")

EVAL_MODELS = ("tuned", "base", "lstm")


@dataclass
class _Plan:
    """What an evaluation forecasts: the adapter's settings, the period, the companies' prices and test windows."""

    wanted: list[str]
    adapter: manifest.Manifest | None
    train_data: DataConfig
    test_start: dt.date
    test_end: dt.date
    seen_end: dt.date | None
    companies: list[Company]
    windows: list
    fields: list[str]
    answer_format: str
    prices: dict
    tests: list

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
            self.train_data.stride,
            self.train_data.val_fraction,
            cutoff,
            last_day,
        )


def evaluate(ws: Workspace, model_dir: str, cfg: EvalConfig, generators: dict | None = None, pool=None) -> dict:
    """Walk-forward forecasts over the test period by the tuned and untuned LLMs (the adapter in `model_dir`),
    the LSTM and the naive baselines, on the same windows; metrics with bootstrap intervals, a backtest and a
    report.

    `generators` maps "tuned"/"base" to `fn(prompts, max_new_tokens) -> answers`, replacing the
    real models (tests use it); by default the models are loaded from --model-dir. `pool` (a
    `distributed.Pool` over `llm_forecaster.generator_factory`) spreads generation over the processes of a
    torchrun launch.
    """
    pool = pool or distributed.Pool(llm_forecasters.generator_factory(model_dir, cfg))
    plan = _plan(ws, model_dir, cfg)
    print(
        f"evaluation: {len(plan.tests):,} test windows ({', '.join(w.name for w in plan.windows)}) over "
        f"{plan.test_start} → {plan.test_end}, {len(plan.companies)} companies; models: baselines + "
        f"{', '.join(plan.wanted)}"
    )
    run_dir = ws.output_dir / (cfg.run_name or f"eval_{plan.test_start}_{plan.test_end}")
    cache_dir = run_dir.with_name(run_dir.name + ".answers")
    history = plan.history()
    predictions, distributions, answers, figures, calibrations = {}, {}, [], {}, {}
    for forecaster in _forecasters(ws, model_dir, cfg, plan, generators, pool, cache_dir):
        forecaster.fit(history)
        out = forecaster.predict(plan.tests)
        forecaster.close()  # frees a model before the next one loads
        predictions[forecaster.name] = out.points
        if out.raw is not None:  # as generated, before the calibration weighed it (reported beside)
            predictions[f"{forecaster.name}_raw"] = out.raw
        if out.samples is not None:
            distributions[forecaster.name] = out.samples
        if forecaster.calibration is not None:
            calibrations[forecaster.name] = forecaster.calibration
        answers += out.answers
        figures[forecaster.name] = out.figures
    extra = {
        "answer_format": plan.answer_format,
        "bands": cfg.decoding.bands,
        "calibration": {name: cal.summary() for name, cal in calibrations.items()},
        "random_walk_last_day": f"{history.last_day:%Y-%m-%d}",
        "generation": {name: f["generation"] for name, f in figures.items() if "generation" in f},
        "lstm": figures.get("lstm", {}),
        "garch": figures.get("garch", {}),
    }
    result = _score_and_report(ws, model_dir, cfg, plan, run_dir, predictions, distributions, answers, extra)
    adapter_dir = None if "tuned" in (generators or {}) else Path(model_dir)  # not a fake's errors
    calibrate.save_all(calibrations, run_dir, adapter_dir)
    shutil.rmtree(cache_dir, ignore_errors=True)  # the answers are in the report's answers.jsonl now
    return result


def _forecasters(ws, model_dir, cfg: EvalConfig, plan: _Plan, generators, pool, cache_dir) -> list[Forecaster]:
    """The baselines, the random walk, then those of --eval-models: the LSTM, the tuned and the untuned LLM."""
    out: list[Forecaster] = [Baseline(name) for name in baselines.BASELINES] + [RandomWalk(), EwmaRandomWalk()]
    out.append(GarchRandomWalk())
    if "lstm" in plan.wanted:
        out.append(Lstm(cfg.lstm_epochs, cfg.seed))
    context = ws.context_builder(plan.train_data, plan.prices)  # as trained: same signals and news
    # a chunk (cached as a whole) fills one batch on every process
    chunk = max(256, pool.processes * cfg.batch_size // cfg.decoding.samples)
    for name in ("tuned", "base"):
        if name not in plan.wanted:
            continue
        fake = (generators or {}).get(name)
        # several processes (torchrun): each generates its share of every chunk
        generate = llm_forecasters.injected(fake) if fake else pool.generator(("eval", name))
        identity = llm_forecasters.model_identity(model_dir, name, plan.adapter, fake is not None)
        cache = answer_cache.AnswerCache(cache_dir / f"{name}.jsonl", f"{identity}:{cfg.decoding.identity()}")
        release = functools.partial(pool.release, ("eval", name))
        out.append(
            llm_forecasters.Llm(
                name,
                generate,
                cache,
                context,
                plan.fields,
                plan.answer_format,
                cfg.decoding,
                cfg.stride,
                chunk,
                release,
            )
        )
    return out


def _plan(ws: Workspace, model_dir: str, cfg: EvalConfig) -> _Plan:
    """The adapter's settings (or the command line's), the test period, prices up to its end, the test windows."""
    wanted = _parse_models(cfg.models)
    # an LSTM-and-baselines run reads no adapter, so one left in --model-dir neither changes nor blocks it
    adapter = manifest.read(str(model_dir)) if {"tuned", "base"} & set(wanted) else None
    train_data = (adapter.data if adapter else None) or ws.data
    test_start, test_end, seen_end = _test_period(ws, model_dir, cfg, adapter)
    companies = _eval_companies(ws, adapter)
    window_text = cfg.windows or (adapter.windows if adapter else None) or ws.data.windows
    windows = parse_flag(data_args.parse_windows, window_text, "--windows")
    fields = (adapter.fields if adapter else None) or ws.fields
    answer_format = adapter.answer_format if adapter else ws.data.answer_format
    first_day = dt.date(train_data.year, train_data.month, 1)
    prices = {c.code: ws.update_prices(c, first_day, test_end, fields) for c in companies}
    columns = [data_args.FIELDS[f][1] for f in fields]
    tests = _test_windows(companies, prices, windows, test_start, test_end, cfg.stride, columns)
    return _Plan(
        wanted,
        adapter,
        train_data,
        test_start,
        test_end,
        seen_end,
        companies,
        windows,
        fields,
        answer_format,
        prices,
        tests,
    )


def _score_and_report(ws, model_dir, cfg, plan: _Plan, run_dir, predictions, distributions, answers, extra):
    """Metrics with intervals, the next-day backtest, the report files and TensorBoard; printed headlines."""
    import model
    from evaluation import report, report_plots

    references = {name: distributions[name] for name in metrics.REFERENCES}
    frames = [
        metrics.forecast_rows(
            m, plan.tests, pred, distributions.get(m), references, _adaptive(m, plan, distributions, extra)
        )
        for m, pred in predictions.items()
    ]
    rows = metrics.add_errors(pd.concat(frames, ignore_index=True))
    table = metrics.metrics_table(rows, n_boot=cfg.bootstrap, seed=cfg.seed)
    costs = backtest.Costs(cfg.brokerage, cfg.sell_tax)
    one_step = min(plan.windows, key=lambda w: (w.future, w.past)).name
    backtests = {
        m: backtest.backtest(rows[(rows["model"] == m) & (rows["window"] == one_step) & (rows["step"] == 1)], costs)
        for m in predictions
    }
    context = {
        "test_start": str(plan.test_start),
        "test_end": str(plan.test_end),
        "adapter": model_dir if plan.adapter else None,
        "base_model": plan.adapter.base_model if plan.adapter else None,
        "adapter_data_last_date": str(plan.seen_end) if plan.seen_end else None,
        "adapter_training": asdict(plan.adapter.dataset) if plan.adapter and plan.adapter.dataset else None,
        "companies": [c.code for c in plan.companies],
        "windows": [w.name for w in plan.windows],
        "fields": plan.fields,
        "backtest_window": one_step,
        "costs": asdict(costs),
        "config": asdict(cfg),
        **extra,
    }
    paths = report.write_report(run_dir, context, rows, table, backtests, answers)
    board = ws.output_dir / "runs" / run_dir.name
    model.write_tensorboard(board, report_plots.tensorboard_scalars(table), sorted(run_dir.glob("*.png")))
    print(report.headline_text(table, backtests, context))
    print(f"report: {paths['report']} (page {paths['page']}, metrics {paths['metrics']}); TensorBoard: {board}")
    return {"table": table, "backtests": backtests, "paths": paths, "context": context}


def _adaptive(model: str, plan: _Plan, distributions: dict, extra: dict) -> dict | None:
    """The calibrated LLMs' 80% and 95% bands with levels adapted online over the test period (ACI), or None."""
    if model not in (extra.get("calibration") or {}) or distributions.get(model) is None:
        return None
    dists = distributions[model]
    return {level: calibrate.adaptive_bands(plan.tests, dists, 1 - int(level) / 100) for level in ("80", "95")}


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
        start = _date(cfg.test_start, "--test-start")
    elif seen:
        start = seen + dt.timedelta(days=1)
    else:
        raise StockToolError("--test-start is required when no trained adapter is evaluated")
    end = _date(cfg.test_end, "--test-end") if cfg.test_end else ws.date_range()[1]
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


def _test_windows(companies, prices, windows, test_start, test_end, stride, columns):
    if stride < 1:
        raise StockToolError("--eval-stride must be at least 1")
    tests = []
    start, end = pd.Timestamp(test_start), pd.Timestamp(test_end)
    for window in windows:
        found = []
        for c in companies:
            found += forecast_windows.test_windows(
                prices[c.code], c.code, c.name_zh, window, start, end, stride, columns
            )
        if not found:
            log.warning("no %s test window fits in %s → %s", window.name, test_start, test_end)
        tests += found
    if not tests:
        days = max((int(((f.index >= start) & (f.index <= end)).sum()) for f in prices.values()), default=0)
        raise StockToolError(
            f"no test window fits in {test_start} → {test_end}: the price data has {days} trading day(s) there "
            f"and the shortest window needs {min(w.future for w in windows)} (check --test-start/--test-end, "
            "--end-date and that prices reach the test period)"
        )
    return tests


def _parse_models(text: str) -> list[str]:
    models = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in models if m not in EVAL_MODELS]
    if unknown:
        raise StockToolError(f"--eval-models: unknown {unknown}; choose from {', '.join(EVAL_MODELS)}")
    return models


def _date(text: str, flag: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise StockToolError(f"{flag} {text!r} is not a date YYYY-MM-DD") from exc
