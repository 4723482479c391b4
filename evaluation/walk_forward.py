"""Walk-forward evaluation as a pipeline stage: the plan (`test_plan.py`: the test windows of every company and
window type), then a loop over the forecasters (`reference_forecasters.py`: the naive baselines, the random walks,
the LSTM; `llm_forecasters.py`: the tuned and untuned LLMs), each fitted on the training period and predicting the
same windows, then metrics, a backtest and the report (`metrics.py`, `backtest.py`, `report.py`).
"""

from __future__ import annotations

import functools
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from config.evaluation_args import EvalConfig
from config.flags import as_text
from config.inference_args import InferenceConfig
from evaluation import answer_cache, backtest, baselines, calibrate, llm_forecasters, metrics, test_plan
from evaluation.interface import Forecaster
from evaluation.reference_forecasters import Baseline, EwmaRandomWalk, GarchRandomWalk, Lstm, RandomWalk
from llm import distributed
from market.workspace import Workspace

log = logging.getLogger("stock.evaluate")


@dataclass(frozen=True)
class _Run:
    """One evaluation: where, what, with which settings, and where its files go."""

    ws: Workspace
    model_dir: str
    cfg: EvalConfig
    inference: InferenceConfig
    plan: test_plan.Plan
    run_dir: Path

    @property
    def cache_dir(self) -> Path:  # the answers generated so far: an interrupted evaluation resumes from them
        return self.run_dir.with_name(self.run_dir.name + ".answers")


def evaluate(ws: Workspace, model_dir: str, cfg: EvalConfig, inference: InferenceConfig, pool=None) -> dict:
    """Walk-forward forecasts over the test period by the tuned and untuned LLMs (the adapter in `model_dir`),
    the LSTM and the naive baselines, on the same windows; metrics with bootstrap intervals, a backtest and a
    report. `pool` (a `distributed.Pool` of ("eval", name) generators; default: the adapter and its base model,
    loaded on first use) spreads generation over the processes of a torchrun launch."""
    pool = pool or distributed.Pool(llm_forecasters.generator_factory(model_dir, inference))
    plan = test_plan.plan(ws, model_dir, cfg)
    print(
        f"evaluation: {len(plan.tests):,} test windows ({', '.join(w.name for w in plan.windows)}) over "
        f"{plan.test_start} → {plan.test_end}, {len(plan.companies)} companies; models: baselines + "
        f"{', '.join(plan.wanted)}"
    )
    run = _Run(
        ws, model_dir, cfg, inference, plan, ws.output_dir / (cfg.run_name or f"eval_{plan.test_start}_{plan.test_end}")
    )
    history = plan.history()
    outputs, calibrations = {}, {}
    for forecaster in _forecasters(run, pool):
        outputs[forecaster.name] = forecaster.fit(history).predict(list(plan.tests))
        forecaster.close()  # frees a model before the next one loads
        if forecaster.calibration is not None:
            calibrations[forecaster.name] = forecaster.calibration
    result = _score_and_report(run, outputs, calibrations, history)
    calibrate.save_all(calibrations, run.run_dir, Path(model_dir) if plan.adapter else None)
    shutil.rmtree(run.cache_dir, ignore_errors=True)  # the answers are in the report's answers.jsonl now
    return result


def _forecasters(run: _Run, pool) -> list[Forecaster]:
    """The baselines, the random walks, then those of --eval-models: the LSTM, the tuned and the untuned LLM."""
    plan, decoding = run.plan, run.inference
    out: list[Forecaster] = [Baseline(name) for name in baselines.BASELINES] + [RandomWalk(), EwmaRandomWalk()]
    out.append(GarchRandomWalk())
    if "lstm" in plan.wanted:
        out.append(Lstm(run.cfg.lstm_epochs, run.cfg.seed))
    context = run.ws.context_builder(plan.context, plan.prices)  # as trained: same signals and news
    # a chunk (cached as a whole) fills one batch on every process
    chunk = max(256, pool.processes * (decoding.batch_size or llm_forecasters.FORECAST_BATCH) // decoding.samples)
    for name in ("tuned", "base"):
        if name not in plan.wanted:
            continue
        key = ("eval", name)
        identity = f"{pool.identity(key)}:{decoding.identity()}"
        cache = answer_cache.AnswerCache(run.cache_dir / f"{name}.jsonl", identity)
        # several processes (torchrun): each generates its share of every chunk
        release = functools.partial(pool.release, key)
        out.append(
            llm_forecasters.Llm(
                name,
                pool.generator(key),
                cache,
                context,
                plan.fields,
                plan.answer_format,
                decoding,
                run.cfg.stride,
                chunk,
                release,
            )
        )
    return out


def _score_and_report(run: _Run, outputs: dict, calibrations: dict, history) -> dict:
    """Metrics with intervals, the next-day backtest, the report files and TensorBoard; printed headlines."""
    import model
    from evaluation import report, report_plots

    plan, cfg = run.plan, run.cfg
    predictions = {}
    for name, out in outputs.items():
        predictions[name] = out.points
        if out.raw is not None:  # as generated, before the calibration weighed it (reported beside)
            predictions[f"{name}_raw"] = out.raw
    distributions = {name: out.samples for name, out in outputs.items() if out.samples is not None}
    references = {name: distributions[name] for name in metrics.REFERENCES}
    frames = [
        metrics.forecast_rows(
            m, list(plan.tests), pred, distributions.get(m), references, _adaptive(m, plan, distributions, calibrations)
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
    context = _context(run, outputs, calibrations, history, {"backtest_window": one_step, "costs": asdict(costs)})
    answers = [a for out in outputs.values() for a in out.answers]
    paths = report.write_report(run.run_dir, context, rows, table, backtests, answers)
    board = run.ws.output_dir / "runs" / run.run_dir.name
    model.write_tensorboard(board, report_plots.tensorboard_scalars(table), sorted(run.run_dir.glob("*.png")))
    print(report.headline_text(table, backtests, context))
    print(f"report: {paths['report']} (page {paths['page']}, metrics {paths['metrics']}); TensorBoard: {board}")
    return {"table": table, "backtests": backtests, "paths": paths, "context": context}


def _context(run: _Run, outputs: dict, calibrations: dict, history, backtested: dict) -> dict:
    """What the report says about the run: the period, the adapter, the companies and windows, the settings."""
    plan = run.plan
    figures = {name: out.figures for name, out in outputs.items()}
    return {
        "test_start": str(plan.test_start),
        "test_end": str(plan.test_end),
        "adapter": run.model_dir if plan.adapter else None,
        "base_model": plan.adapter.base_model if plan.adapter else None,
        "adapter_data_last_date": str(plan.seen_end) if plan.seen_end else None,
        "adapter_training": asdict(plan.adapter.dataset) if plan.adapter and plan.adapter.dataset else None,
        "companies": [c.code for c in plan.companies],
        "windows": [w.name for w in plan.windows],
        "fields": list(plan.fields),
        **backtested,
        "config": as_text(run.cfg) | {"decoding": as_text(run.inference)},
        "answer_format": plan.answer_format,
        "bands": run.inference.bands,
        "calibration": {name: cal.summary() for name, cal in calibrations.items()},
        "random_walk_last_day": f"{history.last_day:%Y-%m-%d}",
        "generation": {name: f["generation"] for name, f in figures.items() if "generation" in f},
        "lstm": figures.get("lstm", {}),
        "garch": figures.get("garch", {}),
    }


def _adaptive(model: str, plan, distributions: dict, calibrations: dict) -> dict | None:
    """The calibrated LLMs' 80% and 95% bands with levels adapted online over the test period (ACI), or None."""
    if model not in calibrations or distributions.get(model) is None:
        return None
    dists, tests = distributions[model], list(plan.tests)
    return {level: calibrate.adaptive_bands(tests, dists, 1 - int(level) / 100) for level in ("80", "95")}
