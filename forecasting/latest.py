"""The forecast stage: the latest days' prompts of every stock asked for, one batch of generation, the answers
read into forecasts, charted and written.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

from config.inference_args import DecodingConfig
from forecasting.chart import plot_forecast
from forecasting.forecast_files import write_forecast_files
from forecasting.reading import Forecast, read_forecast
from llm import generation
from market import prompt_context, trading_calendar
from market.workspace import Workspace
from prompts import prompt_format
from utils import StockToolError

log = logging.getLogger("stock.forecast")


def latest(
    ws: Workspace,
    loaded,
    codes: list[str],
    past: int,
    future: int,
    context: str = "",
    decoding: DecodingConfig = DecodingConfig(),
    calibration=None,
    chart_dir: Path | None = None,
    chart_style: str = "international",
) -> list[Forecast]:
    """Forecasts of `future` trading days after each stock's latest `past`, by the loaded model, generated
    in one batch. With `chart_dir`, each valid one is charted there and written to CSV and JSON beside it."""
    if past < 1 or future < 1:
        raise StockToolError("--past and --future must be at least 1")
    fields = loaded.config.fields or ws.fields
    answer_format = loaded.config.answer_format
    end = ws.date_range()[1]
    trained = loaded.config.data or ws.data
    asked = [_latest_prompt(ws, trained, code, end, past, future, context, fields, answer_format) for code in codes]
    max_new = prompt_format.answer_token_budget(future, fields)
    check_fits(loaded, [a["prompt"] for a in asked], max_new, past)
    answers = generation.generate_samples(
        loaded,
        [a["prompt"] for a in asked],
        max_new,
        batch_size=max(8, decoding.samples),
        samples=decoding.samples,
        temperature=decoding.temperature,
        regexes=[a["regex"] for a in asked] if decoding.constrained else None,
        seed=decoding.seed,
        jump_forward=decoding.jump_forward,
        engine=decoding.engine,
        canonical=decoding.canonical,
    )
    results = []
    for a, raw in zip(asked, answers, strict=True):
        company, history = a["company"], a["history"]
        anchor = prompt_format.anchor_of(history, answer_format)
        result = read_forecast(
            company.code,
            company.name_zh,
            history,
            raw,
            fields,
            future,
            anchor,
            company.name_en,
            decoding.band,
            calibration,
            a["frame"],
            calendar=ws.data.calendar,
        )
        result.shown = a["frame"]  # the chart shows more days than the prompt
        if result.ok and chart_dir:  # an impossible candle is reported, never drawn as if it were a forecast
            result.chart = plot_forecast(result, chart_dir, chart_style)
            result.files = write_forecast_files(result, result.chart.with_suffix(""))
        results.append(result)
    return results


def _latest_prompt(ws: Workspace, trained, code, end, past, future, context, fields, answer_format) -> dict:
    """One stock's prompt from its latest `past` days up to `end`, with the context the adapter was trained with
    (signals, news as of the last known day) and then the user's; the answer's regex and the prices behind it."""
    # calendar days covering `past` trading days, and the CHART_DAYS a chart shows (a long holiday included)
    start = end - dt.timedelta(days=max(90, past * 3))
    company = prompt_context.with_english_name(ws.company(code))
    frame = ws.update_prices(company, start, end, fields)
    if len(frame) < past:
        raise StockToolError(f"{code} has only {len(frame)} trading days cached before {frame.index[-1]:%Y-%m-%d}")
    history = frame.iloc[-past:]
    built, _ = ws.context_builder(trained, {code: frame})(code)(history.index[-1])
    text = "\n".join(part for part in (built, context.strip()) if part)
    content = prompt_format.user_prompt(company.name_zh, history, future, fields, text, answer_format)
    dates = trading_calendar.next_trading_days(history.index[-1], future, ws.data.calendar)  # the exchange's days
    return {
        "company": company,
        "history": history,
        "frame": frame,  # its volatility scales a calibrated band
        "prompt": [{"role": "user", "content": content}],
        "regex": prompt_format.answer_regex(dates, fields, answer_format),
    }


def check_fits(loaded, prompts: list, max_new: int, past: int) -> None:
    """Refuse, before generating, a prompt that with its answer would not fit in the model's context."""
    if loaded.tokenizer is None:  # an injected fake model (tests)
        return
    longest = max(loaded.prompt_tokens(p) for p in prompts)
    if longest + max_new > loaded.context:
        raise StockToolError(
            f"--past {past}: the prompt is {longest:,} tokens and the answer needs up to {max_new:,}, more than the "
            f"model's context of {loaded.context:,} tokens; use a smaller --past"
        )


def band_calibration(model_dir: str, decoding: DecodingConfig):
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
