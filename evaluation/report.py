"""The evaluation report: report.md, metrics.json, forecasts.csv, answers.jsonl and PNG plots.

Everything is written into `<run>.partial` and renamed to `<run>` at the end, so a run that fails
half-way never leaves a report that looks complete.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from evaluation import report_bands
from evaluation.metrics import verdict
from evaluation.report_plots import (
    LABELS,
    ordered,
    plot_equity,
    plot_error_by_step,
    plot_predicted_vs_actual,
)
from forecasting import html
from utils import atomic_write_text, write_json, write_jsonl

# their point forecast is persistence: they appear in the probabilistic table
POINT_ONLY_SKIP = {"random_walk", "ewma", "garch"}


def _pct(value, digits: int = 2) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f}%"


def _num(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _ci(ci, scale: float = 1.0, digits: int = 3) -> str:
    if not ci or ci[0] is None:
        return ""
    return f" [{ci[0] * scale:.{digits}f}, {ci[1] * scale:.{digits}f}]"


def _summaries(table: dict, windows: list[str]):
    """(window, model, whole-window summary) in report order, for every model that has the window."""
    for window in windows:
        for model in ordered(table):
            summary = table[model].get(window, {}).get("all")
            if summary:
                yield window, model, summary


def headline_rows(table: dict, windows: list[str]) -> list[str]:
    lines = [
        "| window | model | valid | MAPE close % [95% CI] | skill vs persistence [95% CI] | DM p (worse) | "
        "direction right (majority class) | verdict |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for window, model, s in _summaries(table, windows):
        if model in POINT_ONLY_SKIP:
            continue
        mape = "n/a" if s["mape_close"] is None else f"{s['mape_close']:.3f}" + _ci(s.get("mape_close_ci95"))
        skill = "—" if model == "persistence" else _num(s["skill_mape"]) + _ci(s.get("skill_mape_ci95"))
        direction = _pct(s["directional_accuracy"], 1) + f" ({_pct(s['majority_rate'], 1)})"
        judged = "reference" if model == "persistence" else verdict(s)
        dm = "—" if model == "persistence" else _num(s.get("dm_p_worse"))
        lines.append(
            f"| {window} | {LABELS.get(model, model)} | {_pct(s['validity'], 1)} | {mape} | {skill} | {dm} | "
            f"{direction} | {judged} |"
        )
    return lines


def probabilistic_rows(table: dict, windows: list[str], context: dict | None = None) -> list[str]:
    """Coverage of the 80% and 95% bands, CRPS and pinball loss (in % of the origin's close), CRPS skill against
    the window's best simple reference and against the random walk, on the same forecasts; only models that
    forecast a distribution. Each row says which band it used (`band_used`)."""
    lines = [
        "| window | model | band | 80% band covers | 95% band covers | CRPS % | best reference: CRPS % | CRPS skill "
        "vs it [95% CI] | CRPS skill vs random walk | pinball % |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for window, model, s in _summaries(table, windows):
        if s.get("coverage80") is None:
            continue
        best = s.get("best_reference")
        reference = "n/a" if best is None else f"{best}: {_num(s.get('best_reference_crps'))}"
        skill = "—" if model == best else _num(s.get("crps_skill_best")) + _ci(s.get("crps_skill_best_ci95"))
        covers = {level: _pct(s[f"coverage{level}"], 1) for level in ("80", "95")}
        for level in covers:  # adaptive conformal levels: the fixed level's coverage beside
            fixed = s.get(f"coverage{level}_fixed")
            if fixed is not None and fixed != s[f"coverage{level}"]:
                covers[level] += f" (fixed {_pct(fixed, 1)})"
        lines.append(
            f"| {window} | {LABELS.get(model, model)} | {report_bands.band_used(context or {}, model, window)} | "
            f"{covers['80']} | {covers['95']} | "
            f"{_num(s['crps'])} | {reference} | {skill} | {_num(s['crps_skill'])} | {_num(s['pinball'])} |"
        )
    return lines


def bias_rows(table: dict, windows: list[str]) -> list[str]:
    """Mean forecast return against mean actual return, per window and horizon step (in %)."""
    lines = [
        "| window | model | step | mean forecast return % | mean actual return % | bias % |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for window in windows:
        for model in ordered(table):
            if model in POINT_ONLY_SKIP or model == "persistence" or window not in table[model]:
                continue
            for step, s in sorted(table[model][window]["steps"].items()):
                if s.get("bias") is None:
                    continue
                lines.append(
                    f"| {window} | {LABELS.get(model, model)} | {step} | {s['mean_forecast_return']:+.3f} | "
                    f"{s['mean_actual_return']:+.3f} | {s['bias']:+.3f} |"
                )
    return lines


def backtest_rows(backtests: dict) -> list[str]:
    lines = [
        "| strategy | total return | annualised Sharpe | max drawdown | trades |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for model in ordered(backtests):
        if model in POINT_ONLY_SKIP:
            continue
        s = backtests[model]["strategy"]
        lines.append(
            f"| {LABELS.get(model, model)} | {_pct(s['total_return'])} | {_num(s['sharpe'], 2)} | "
            f"{_pct(s['max_drawdown'])} | {s['trades']} |"
        )
    hold = next(iter(backtests.values()))["buy_and_hold"]
    lines.append(
        f"| buy and hold (same stocks and days) | {_pct(hold['total_return'])} | {_num(hold['sharpe'], 2)} | "
        f"{_pct(hold['max_drawdown'])} | — |"
    )
    return lines


def headline_text(table: dict, backtests: dict, context: dict) -> str:
    windows = context["windows"]
    return "\n".join(
        headline_rows(table, windows)
        + [""]
        + probabilistic_rows(table, windows, context)
        + [""]
        + backtest_rows(backtests)
    )


def render(context: dict, table: dict, backtests: dict) -> str:
    """The report's markdown: its sections in order."""
    windows = context["windows"]
    lines = [
        *_intro_lines(context),
        *_verdict_lines(table, windows),
        *_point_lines(context, table, windows),
        *_distribution_lines(context, table, windows),
        "## Bias: mean forecast return against mean actual return",
        "",
        *bias_rows(table, windows),
        "",
        *_backtest_lines(context, backtests),
        *_detail_lines(context),
    ]
    return "\n".join(lines) + "\n"


def _intro_lines(context: dict) -> list[str]:
    lines = [
        f"# Walk-forward evaluation, {context['test_start']} → {context['test_end']}",
        "",
        f"{len(context['companies'])} companies; window types {', '.join(context['windows'])} (past:future trading "
        f"days); origins every {context['config']['stride']} trading day(s). Each forecast was made at an origin's "
        "close from prices up to that day only, and every target day lies inside the test period.",
    ]
    if context.get("adapter"):
        lines.append(
            f"Adapter `{context['adapter']}` on `{context['base_model']}`, trained on prices up to "
            f"{context['adapter_data_last_date']} (before the test period)."
        )
    return lines


def _verdict_lines(table: dict, windows: list[str]) -> list[str]:
    lines = ["", "## Verdict", ""]
    for model in ordered(table):
        if model in ("persistence", *POINT_ONLY_SKIP):
            continue
        verdicts = [f"{w}: {verdict(table[model][w]['all'])}" for w in windows if w in table[model]]
        lines.append(f"- **{LABELS.get(model, model)}** — " + "; ".join(verdicts))
    return lines


def _point_lines(context: dict, table: dict, windows: list[str]) -> list[str]:
    return [
        "",
        "## Each model against persistence (all horizon steps together)",
        "",
        *headline_rows(table, windows),
        "",
        "- *MAPE*: mean absolute percentage error of the close, over the forecasts that were usable.",
        "- *Skill*: 1 − MAPE of the model / MAPE of persistence on the same usable forecasts; above 0 beats "
        "'tomorrow = today'. The verdict calls a difference only when the 95% interval excludes 0.",
        "- *Direction right*: the share of all forecasts (failures count as wrong) that called up vs not-up "
        "correctly, with the share of the most common actual direction beside it.",
        "- Intervals: block bootstrap over origin dates (blocks of 5 trading days, "
        f"{context['config']['bootstrap']} resamples).",
        "- An unparseable or impossible LLM answer is a failure: it lowers *valid* and *direction right*, is never "
        "replaced by another forecast, and its raw text is in `answers.jsonl`.",
        "",
    ]


def _distribution_lines(context: dict, table: dict, windows: list[str]) -> list[str]:
    return [
        "## Forecast distributions against the strongest simple references",
        "",
        *probabilistic_rows(table, windows, context),
        "",
        *report_bands.band_source_lines(context),
        "- Three simple references, all with persistence as their median: the *random walk* spreads it by each "
        "stock's own past returns over the same horizon, from days up to "
        f"{context.get('random_walk_last_day')} only; the *EWMA random walk* (RiskMetrics) is Gaussian in log price "
        "with the exponentially weighted (λ 0.94) variance of the stock's daily returns up to each origin; the "
        "*GARCH(1,1)-t random walk* has the variance of a GARCH(1,1) with Student-t innovations fitted (`arch`) on "
        f"each stock's returns up to {context.get('random_walk_last_day')}, filtered through each origin "
        f"({_garch_note(context)}). The *best reference* of a window is the one of the three with the lowest CRPS "
        "there: the one a forecast's distribution has to beat.",
        "- *CRPS* (continuous ranked probability score) and *pinball* (mean quantile loss at 2.5/10/50/90/97.5%) "
        "are in % of the origin's close; lower is better. *CRPS skill* = 1 − CRPS / the reference's CRPS on the "
        "same forecasts.",
        "- *DM p (worse)*: the Diebold–Mariano test of the close's absolute % error against persistence's on the "
        "same forecasts (one mean difference per origin date, Newey–West variance with horizon − 1 lags, Harvey et "
        "al.'s small-sample correction): the p-value of 'worse than persistence'; below 0.05 it is.",
        "",
    ]


def _garch_note(context: dict) -> str:
    figures = context.get("garch") or {}
    if not figures:
        return "a stock with under 250 daily returns, or whose fit fails, gets the EWMA's"
    return (
        f"fitted for {figures.get('fitted', 0)} stock(s); {figures.get('ewma_instead', 0)} with under 250 daily "
        "returns or a failed fit got the EWMA's"
    )


def _backtest_lines(context: dict, backtests: dict) -> list[str]:
    costs = context["costs"]
    return [
        f"## Backtest (window {context['backtest_window']}, next day)",
        "",
        "Long/flat, equal weight over the companies: hold a stock to the next close when its forecast close "
        f"beats today's by more than a round trip's costs ({100 * costs['brokerage']:.4f}% brokerage per side, "
        f"{100 * costs['sell_tax']:.2f}% tax on sells); otherwise, or after a failed forecast, stay in cash. "
        f"It covers the {next(iter(backtests.values()))['buy_and_hold']['days']} trading days that have a "
        "forecast (with an origin stride above 1, only those days, for buy and hold too).",
        "",
        *backtest_rows(backtests),
        "",
    ]


def _detail_lines(context: dict) -> list[str]:
    lines = [
        "## Plots",
        "",
        "![error by horizon step](error_by_step.png)",
        "",
        "![predicted vs actual close](predicted_vs_actual.png)",
        "",
        "![equity curves](equity.png)",
        "",
        "## Details",
        "",
        "- Per model × window × horizon step (MAE/RMSE/MAPE of close, MAE of open/high/low, intervals): "
        "`metrics.json`; every forecast step: `forecasts.csv`; raw LLM answers: `answers.jsonl`.",
    ]
    for model, g in context.get("generation", {}).items():
        speed = f" ({g['forecasts_per_s']} forecasts/s, batched)" if g.get("forecasts_per_s") else ""
        reused = f"; {g['reused']:,} answers reused from an interrupted run" if g.get("reused") else ""
        label = LABELS.get(model, model)
        lines.append(f"- {label}: {g['forecasts']:,} forecasts generated in {g['seconds']} s{speed}{reused}.")
    for window, f in context.get("lstm", {}).items():
        lines.append(
            f"- LSTM {window}: {f['train_windows']:,} training / {f['val_windows']:,} validation windows, "
            f"{f['epochs']} epochs, {f['seconds']} s on {f['device']}."
        )
    return lines


def write_report(run_dir: Path, context: dict, rows: pd.DataFrame, table: dict, backtests: dict, answers) -> dict:
    run_dir = Path(run_dir)
    staging = run_dir.with_name(run_dir.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    rows = rows.assign(
        band=[report_bands.band_used(context, m, w) for m, w in zip(rows["model"], rows["window"], strict=True)]
    )
    rows.to_csv(staging / "forecasts.csv", index=False, float_format="%.4f")
    write_jsonl(staging / "answers.jsonl", answers)
    summary = {m: {k: v for k, v in b.items() if k != "daily_returns"} for m, b in backtests.items()}
    write_json(staging / "metrics.json", {"context": context, "metrics": table, "backtest": summary})
    plot_error_by_step(table, context["windows"], staging / "error_by_step.png")
    kinds = {m: report_bands.band_kind(context, m) for m in rows["model"].unique()}
    plot_predicted_vs_actual(rows, context["backtest_window"], staging / "predicted_vs_actual.png", band_kinds=kinds)
    plot_equity(backtests, staging / "equity.png")
    markdown = atomic_write_text(staging / "report.md", render(context, table, backtests)).read_text(encoding="utf-8")
    html.write_report_page(staging, markdown)  # report.html: the same report as a page, its charts inline
    if run_dir.exists():
        shutil.rmtree(run_dir)
    staging.replace(run_dir)
    return {
        "report": run_dir / "report.md",
        "metrics": run_dir / "metrics.json",
        "dir": run_dir,
        "page": run_dir / html.REPORT_PAGE,
    }
