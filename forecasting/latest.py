"""The forecast stage: the latest days' prompts of every stock asked for, one batch of generation, the answers
read into forecasts, charted and written.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, replace
from pathlib import Path

from config.inference_args import ForecastConfig, InferenceConfig
from forecasting.chart import plot_forecast
from forecasting.forecast_files import write_forecast_files
from forecasting.reading import Forecast, Question, read_forecast
from llm import generation
from market import prompt_context, trading_calendar
from market.workspace import Workspace
from prompts import prompt_format
from utils import StockToolError

log = logging.getLogger("stock.forecast")


@dataclass(frozen=True)
class _Asked:
    """One stock's prompt as the adapter was trained to read it, the answer's regex, and how to read the answer."""

    question: Question
    prompt: list
    regex: str


def forecast(
    ws: Workspace,
    loaded,
    asked: ForecastConfig,
    inference: InferenceConfig,
    calibration=None,
    chart_dir: Path | None = None,
) -> list[Forecast]:
    """Forecasts of `asked.future` trading days after each of `asked.codes`' latest `asked.past`, by the loaded
    model, generated in one batch. With `chart_dir`, each valid one is charted there and written to CSV and JSON
    beside it."""
    if asked.past < 1 or asked.future < 1:
        raise StockToolError("--past and --future must be at least 1")
    end = ws.date_range()[1]
    prompts = [_prompt(ws, loaded.config, asked, code, end) for code in asked.codes or ("2330",)]
    fields = prompts[0].question.fields
    max_new = prompt_format.answer_token_budget(asked.future, fields)
    check_fits(loaded, [a.prompt for a in prompts], max_new, asked.past)
    how = generation.Sampling.of(inference, max(8, inference.samples))
    regexes = [a.regex for a in prompts] if inference.constrained else None
    answers = generation.generate_samples(loaded, [a.prompt for a in prompts], max_new, how, regexes)
    results = []
    for a, raw in zip(prompts, answers, strict=True):
        result = read_forecast(a.question, raw, inference.band, calibration, ws.data.calendar)
        if result.ok and chart_dir:  # an impossible candle is reported, never drawn as if it were a forecast
            chart = plot_forecast(result, chart_dir, asked.chart_style)
            result = replace(result, chart=chart)
            result = replace(result, files=tuple(write_forecast_files(result, chart.with_suffix(""))))
        results.append(result)
    return results


def _prompt(ws: Workspace, adapter, asked: ForecastConfig, code: str, end) -> _Asked:
    """One stock's prompt from its latest `asked.past` days up to `end`, in the adapter's fields and answer format,
    with the context the adapter was trained with (signals, news as of the last known day) and then the user's;
    the answer's regex, dated on the exchange's next sessions."""
    fields = tuple(adapter.fields or ws.fields)
    answer_format = adapter.answer_format
    # calendar days covering `past` trading days, and the CHART_DAYS a chart shows (a long holiday included)
    start = end - dt.timedelta(days=max(90, asked.past * 3))
    company = prompt_context.with_english_name(ws.company(code))
    frame = ws.update_prices(company, start, end, fields)
    if len(frame) < asked.past:
        raise StockToolError(f"{code} has only {len(frame)} trading days cached before {frame.index[-1]:%Y-%m-%d}")
    history = frame.iloc[-asked.past :]
    built, _ = ws.context_builder(adapter.context or ws.context, {code: frame})(code)(history.index[-1])
    text = "\n".join(part for part in (built, asked.context.strip()) if part)
    anchor = prompt_format.anchor_of(frame, answer_format)  # the whole cached frame: the scaled format's volatility
    content = prompt_format.user_prompt(company.name_zh, history, asked.future, fields, text, anchor or "absolute")
    dates = trading_calendar.next_trading_days(history.index[-1], asked.future, ws.data.calendar)
    question = Question(company.code, company.name_zh, history, fields, asked.future, anchor, company.name_en, frame)
    regex = prompt_format.answer_regex(dates, fields, answer_format)
    return _Asked(question, [{"role": "user", "content": content}], regex)


def check_fits(loaded, prompts: list, max_new: int, past: int) -> None:
    """Refuse, before generating, a prompt that with its answer would not fit in the model's context."""
    longest = max(loaded.prompt_tokens(p) for p in prompts)
    if longest + max_new > loaded.context:
        raise StockToolError(
            f"--past {past}: the prompt is {longest:,} tokens and the answer needs up to {max_new:,}, more than the "
            f"model's context of {loaded.context:,} tokens; use a smaller --past"
        )


def band_calibration(model_dir: str, decoding: InferenceConfig):
    """The adapter's calibration (written by an evaluation) when the bands are to come from it and it was
    made with this decoding; else None (the bands then come from samples, if any)."""
    from forecasting import calibrated

    if decoding.bands != "calibrated":
        return None
    cal = calibrated.load(Path(model_dir) / calibrated.FILE)
    if cal is None:
        return None
    if cal.point != decoding.point:
        log.warning(
            "%s was calibrated for --point %s, not %s: no calibrated band (evaluate with --point %s)",
            model_dir,
            cal.point,
            decoding.point,
            decoding.point,
        )
        return None
    if cal.decoding != decoding.identity():
        log.warning(
            "%s was calibrated with decoding %s, not %s: no calibrated band (evaluate with this decoding)",
            model_dir,
            cal.decoding,
            decoding.identity(),
        )
        return None
    return cal
