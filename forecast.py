"""One forecast, from model answers to what the user gets: sampled answers → point forecast and bands →
printed table, candlestick chart with the 80% band, and CSV/JSON files beside the chart.

How answers are decoded (`DecodingConfig`): greedy or the median of K samples, constrained to the answer
format or free. Sampling follows LLMTime (Gruver et al., 2023): the per-field median of sampled answers
is the point forecast, and their quantiles are the forecast's uncertainty.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

import dataset
import evaluation as ev
import generation
import prompt_context
import trading_calendar
from configs import DecodingConfig
from utils import StockToolError, atomic_write_text
from workspace import Workspace

log = logging.getLogger("stock.forecast")


def band_levels(band: float = 0.8) -> dict[str, tuple[float, float]]:
    """The central bands a forecast reports: `band` (drawn on the chart) and 95%."""
    low = round((1 - band) / 2, 6)
    return {f"{100 * band:g}%": (low, round(1 - low, 6)), "95%": (0.025, 0.975)}


@dataclass
class SampleRead:
    """What K answers to one prompt amount to."""

    point: pd.DataFrame | None  # the per-field median of the usable samples
    closes: np.ndarray | None  # usable samples' closes, usable × future
    usable: int  # samples that parsed (with the commonest dates)
    total: int
    problem: str = ""
    frames: list[pd.DataFrame] = field(default_factory=list)
    impossible: int = 0  # usable samples whose own candles are impossible (they still count as draws)

    @property
    def ok(self) -> bool:
        return self.point is not None


def read_samples(
    answers: list[str], fields: list[str], future: int, origin: pd.Timestamp, anchor: float | None = None
) -> SampleRead:
    """Parse every sample strictly; a forecast needs at least half of them parsed, then checks its point.

    The samples are draws of the forecast distribution: every sample that parses (with the commonest dates)
    counts, an impossible candle among them included, since each field's quantiles do not need the other
    fields. The point forecast is the per-field median of those samples, and it must be a possible candle:
    if not, the forecast is a failure, never repaired. With one sample (greedy) that is the old rule: an
    impossible answer fails. Measured on the GPU: at temperature 1, 88% of a tuned SmolLM2's 5-day samples
    held an impossible candle, so requiring every sample to be possible left 1 forecast of 64 usable; this
    rule leaves 29 (51 at temperature 0.7)."""
    frames, problems, impossible = [], [], 0
    for raw in answers:
        try:
            parsed = dataset.parse_answer(raw, fields, expected=future, anchor=anchor)
        except dataset.ForecastParseError as exc:
            problems.append(f"unparseable: {exc}")
            continue
        impossible += bool(dataset.validate_forecast(parsed, origin))
        frames.append(parsed)
    if frames:  # free decoding lets each sample choose its dates: only samples of the commonest dates combine
        dates = [tuple(f.index) for f in frames]
        common = max(set(dates), key=dates.count)
        problems += ["other dates than the other samples" for d in dates if d != common]
        frames = [f for f, d in zip(frames, dates, strict=True) if d == common]
    total, usable = len(answers), len(frames)
    problem = (
        ""
        if not problems
        else problems[0]
        if total == 1
        else f"{len(problems)} of {total} samples unusable; first: {problems[0]}"
    )
    if usable == 0 or 2 * usable < total:
        return SampleRead(None, None, usable, total, problem or "no answer", frames, impossible)
    columns = frames[0].columns
    stacked = np.stack([f[columns].to_numpy(dtype=float) for f in frames])
    point = pd.DataFrame(ev.median_forecast(stacked), index=frames[0].index, columns=columns)
    invalid = dataset.validate_forecast(point, origin)
    if invalid:
        what = "invalid: " if total == 1 else "the median candle is impossible: "
        return SampleRead(None, None, usable, total, what + "; ".join(invalid[:3]), frames, impossible)
    closes = np.stack([f["Close"].to_numpy(dtype=float) for f in frames])
    return SampleRead(point, closes, usable, total, problem, frames, impossible)


@dataclass
class Forecast:
    code: str
    name: str
    past: pd.DataFrame
    raw_answer: str
    forecast: pd.DataFrame | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    chart: Path | None = None
    bands: pd.DataFrame | None = None  # close quantiles per day (columns q0.025 … q0.975)
    band: float = 0.8
    band_source: str = ""  # what the bands are quantiles of
    weight: float = 1.0  # the model's change from the last close × weight is the point forecast (calibration.py)
    samples: int = 1
    usable_samples: int = 1
    files: list[Path] = field(default_factory=list)
    name_en: str = ""
    band_kind: str = ""  # "calibrated" or "sampled" (what `band_source` describes); pages.py says it
    shown: pd.DataFrame | None = None  # prices up to the last known day, more than `past`: drawn on the chart
    page: Path | None = None  # the run's index.html (pages.py) listing this forecast

    @property
    def ok(self) -> bool:
        return self.forecast is not None and not self.problems


def read_forecast(
    code,
    name,
    history,
    answers: list[str],
    fields,
    future,
    anchor=None,
    name_en="",
    band: float = 0.8,
    calibration=None,
    volatility_history=None,
    calendar: str | None = None,
) -> Forecast:
    """A user-facing forecast from one prompt's sampled answers (problems recorded, never repaired). Its bands
    come from `calibration` (a `calibration.Calibration`: the model's errors on held-out days) when given,
    scaled by the volatility of `volatility_history` (the stock's prices up to the last known day; default:
    `history`), else from the samples' quantiles when there are several. A day the exchange's `calendar` (or,
    without one, the week) has no session on is noted (free decoding lets the model choose its dates)."""
    read = read_samples(answers, fields, future, history.index[-1], anchor)
    result = Forecast(code, name, history, answers[0], samples=len(answers), usable_samples=read.usable)
    result.name_en, result.band = name_en, band
    if not read.ok:
        result.problems = [read.problem]
        return result
    result.forecast = read.point
    levels = sorted({q for pair in band_levels(band).values() for q in pair} | {0.5})
    quantiles = None
    if calibration is not None:
        known = history if volatility_history is None else volatility_history
        quantiles = _calibrated(result, read.point, calibration, f"{len(history)}:{future}", levels, known)
    elif len(answers) > 1:
        quantiles = ev.sample_quantiles(read.closes, levels)
        result.band_source, result.band_kind = f"{read.usable} sampled closes", "sampled"
    if quantiles is not None:
        result.bands = pd.DataFrame(quantiles.T, index=read.point.index, columns=[f"q{q:g}" for q in levels])
    if calendar:
        result.notes += [
            f"{d:%Y-%m-%d} ({d:%A}) is not a trading day of the {calendar} calendar"
            for d in trading_calendar.closed_days(result.forecast.index, calendar)
        ]
    else:
        result.notes += [
            f"{d:%Y-%m-%d} is a {d:%A}: the exchange does not trade on weekends"
            for d in result.forecast.index
            if d.weekday() >= 5
        ]
    if read.problem:
        result.notes.append(read.problem)
    if read.impossible:
        result.notes.append(
            f"{read.impossible} of {read.usable} samples were impossible candles "
            "(kept as draws; the median candle is possible)"
        )
    return result


def _calibrated(result: Forecast, point: pd.DataFrame, calibration, window: str, levels, known: pd.DataFrame):
    """Weigh `result`'s point forecast toward the last close by the calibration's weight, and its band quantiles
    in the window's band family (the held-out errors scaled by the stock's volatility, or a reference's random
    walk of the `known` prices; None, with a note, when too few errors)."""
    result.weight = calibration.weight(window)
    if result.weight != 1:
        prices = [c for c in ev.OHLC if c in point.columns]
        result.forecast = point.copy()
        result.forecast[prices] = calibration.weigh(window, point[prices], float(result.past["Close"].iloc[-1]))
        result.notes.append(
            f"point forecast: the model's change from the last close × {result.weight:g}, the weight with the "
            f"lowest error on held-out days ({calibration.start} → {calibration.end}; 0 would be persistence)"
        )
    quantiles = calibration.quantiles(window, result.forecast["Close"].to_numpy(), levels, known, result.code)
    if quantiles is None:
        result.notes.append(
            f"no band: the calibration ({calibration.start} → {calibration.end}) has too few errors for this window"
        )
    else:
        result.band_source = calibration.describe(window)
        family = calibration.family(window)
        result.band_kind = "calibrated" if family == "conformal" else family
    return quantiles


def forecast_frame(result: Forecast) -> pd.DataFrame:
    """The forecast as one table: the point candle per day, then the close's band quantiles."""
    frame = result.forecast.copy()
    if result.bands is not None:
        frame = frame.join(result.bands.add_prefix("Close_"))
    return frame


def forecast_table(result: Forecast) -> str:
    if result.forecast is None:
        return ""
    return forecast_frame(result).to_string(float_format=lambda v: f"{v:,.2f}")


def write_forecast_files(result: Forecast, stem: Path) -> list[Path]:
    """`<stem>.csv` (one row per forecast day) and `<stem>.json` (the same, with the run's facts), atomically."""
    frame = forecast_frame(result)
    csv_path = atomic_write_text(stem.with_suffix(".csv"), frame.to_csv(index_label="Date", float_format="%.4f"))
    rows = [{"date": f"{d:%Y-%m-%d}", **{k: _plain(v) for k, v in row.items()}} for d, row in frame.iterrows()]
    record = {
        "code": result.code,
        "name": result.name,
        "last_known_day": f"{result.past.index[-1]:%Y-%m-%d}",
        "last_close": float(result.past["Close"].iloc[-1]),
        "samples": result.samples,
        "usable_samples": result.usable_samples,
        "band_source": result.band_source,
        "weight": result.weight,
        "bands": {k: [f"q{lo:g}", f"q{hi:g}"] for k, (lo, hi) in band_levels(result.band).items()}
        if result.bands is not None
        else {},
        "forecast": rows,
        "notes": result.notes,
    }
    json_path = atomic_write_text(stem.with_suffix(".json"), json.dumps(record, ensure_ascii=False, indent=2) + "\n")
    return [csv_path, json_path]


def _plain(value):
    value = float(value)
    return round(value, 4) if math.isfinite(value) else None


CHART_STYLES = {
    # (up, down) of the known candles; Taiwan's convention is red up, green down
    "international": ("#26a69a", "#ef5350"),
    "taiwan": ("#ef5350", "#26a69a"),
}


CHART_DAYS = 30  # known trading days a forecast chart shows at least (more than the prompt's, to judge it by)


def chart_history(result: Forecast) -> pd.DataFrame:
    """The known days a chart draws: the last CHART_DAYS (or `past`, when longer) of `result.shown`, the stock's
    prices up to the last known day (without them, of `past`)."""
    known = result.past if result.shown is None else result.shown
    return known.iloc[-max(CHART_DAYS, len(result.past)) :]


def no_band_reason(result: Forecast) -> str:
    """Why a forecast has no band, in words ('' when it has one)."""
    if result.bands is not None:
        return ""
    return next(
        (n for n in result.notes if n.startswith("no band")),
        "no band: no calibration for this adapter and decoding (an evaluation, --evaluate 1, makes one), and a "
        "single greedy answer has no spread (--samples above 1 gives a sampled band)",
    )


def plot_forecast(result: Forecast, out_dir: Path, chart_style: str = "international") -> Path:
    """Candles of at least CHART_DAYS known days (the prompt's shaded grey) then the forecast days (blue up /
    orange down, after a dashed line across the price and volume panels), the close's band shaded, or a note
    saying why there is none. One date label per few trading days (about 12 of them), and forecast-day volume
    in grey: it is a forecast, not a fact. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import mplfinance as mpf

    past, forecast, prompt_days = chart_history(result), result.forecast, len(result.past)
    columns = ["Open", "High", "Low", "Close", "Volume"]
    combined = pd.concat([past[columns], forecast.reindex(columns=columns)])
    up, down = CHART_STYLES[chart_style]
    colors = mpf.make_marketcolors(up=up, down=down, edge="inherit", wick="inherit", volume="in")
    style = mpf.make_mpf_style(base_mpf_style="yahoo", marketcolors=colors)
    forecast_colors = mpf.make_marketcolors(up="tab:blue", down="tab:orange", edge="inherit", wick="inherit")
    predicted = [forecast_colors] * len(forecast)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{result.code}_{past.index[-1]:%Y%m%d}_{prompt_days}to{len(forecast)}.png"
    tmp = path.with_name(f".{path.name}.tmp.png")
    title = f"{result.code} {result.name_en}".strip()
    extra = {}
    days = "day" if len(forecast) == 1 else f"{len(forecast)} days"
    subtitle = f"forecast {days} right of the dashed line (blue up / orange down) from the {prompt_days} known"
    subtitle += " day shaded grey" if prompt_days == 1 else " days shaded grey"
    if result.bands is not None:
        (label, (lo, hi)), *_ = band_levels(result.band).items()
        last_close = [math.nan] * (len(past) - 1) + [float(past["Close"].iloc[-1])]  # the band starts there
        low = last_close + list(result.bands[f"q{lo:g}"])
        high = last_close + list(result.bands[f"q{hi:g}"])
        extra["fill_between"] = {"y1": np.array(low), "y2": np.array(high), "alpha": 0.2, "color": "tab:blue"}
        kind = f" ({result.band_kind})" if result.band_kind else ""
        subtitle += f"; shaded blue: the {label} band{kind} of the close, from {result.band_source}"
    volume = "Volume" in forecast.columns and not combined["Volume"].isna().any()
    if volume:  # forecast volume as grey bars of its own, known volume in the style's colours
        forecast_volume = combined["Volume"].where(combined.index.isin(forecast.index))
        combined.loc[forecast.index, "Volume"] = 0.0
        extra["addplot"] = [mpf.make_addplot(forecast_volume, type="bar", panel=1, color="lightgray", width=0.8)]
    fig, axes = mpf.plot(
        combined,
        type="candle",
        volume=volume,
        style=style,
        marketcolor_overrides=[None] * len(past) + predicted,
        title={"title": title + "\n" + textwrap.fill(subtitle, 100), "fontsize": 10},
        figsize=(10, 6),
        returnfig=True,
        **extra,
    )
    step = max(1, math.ceil(len(combined) / 12))
    for ax in axes:
        ax.axvline(len(past) - 0.5, linestyle="--", color="gray", linewidth=1)
        if volume and ax.get_ylabel().startswith("Volume"):  # room for the forecast's bars too
            ax.set_ylim(0, 1.05 * max(past["Volume"].max(), forecast["Volume"].max()))
    if len(past) > prompt_days:  # the days the model was shown
        axes[0].axvspan(len(past) - prompt_days - 0.5, len(past) - 0.5, color="0.5", alpha=0.12, linewidth=0)
    said = [no_band_reason(result)] + (["point forecast = persistence (weight 0)"] if result.weight == 0 else [])
    if any(said):
        box = {"boxstyle": "round", "facecolor": "white", "edgecolor": "0.6", "alpha": 0.9}
        text = "\n".join(textwrap.fill(line, 70) for line in said if line)
        axes[0].text(0.01, 0.98, text, transform=axes[0].transAxes, va="top", fontsize=8, bbox=box, zorder=5)
    axes[0].set_xticks(range(0, len(combined), step))
    axes[-1].set_xticks(range(0, len(combined), step))
    axes[-1].set_xticklabels([f"{d:%m-%d}" for d in combined.index[::step]], rotation=45)
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    matplotlib.pyplot.close(fig)
    tmp.replace(path)
    return path


def print_forecast(result: Forecast) -> None:
    print(f"{result.code} {result.name}: last known day {result.past.index[-1]:%Y-%m-%d}")
    if result.forecast is not None:
        if result.samples > 1:
            print(
                f"point forecast: the per-field median of {result.usable_samples} usable of {result.samples} sampled "
                "answers"
            )
        if result.bands is not None:
            bands = ", ".join(f"Close_q{lo:g}…q{hi:g} the {k} band" for k, (lo, hi) in band_levels(result.band).items())
            print(f"{bands}, from {result.band_source}")
        print(forecast_table(result))
    for note in result.notes:
        print(f"note: {note}")
    if result.problems:
        print("The answer is not a usable forecast:")
        for problem in result.problems:
            print(f"  - {problem}")
        print("Raw model answer:\n" + result.raw_answer)
    if result.page:
        print(f"page: {result.page}")
    for path in result.files:
        print(f"forecast: {path}")
    if result.chart:
        print(f"chart: {result.chart}")


# --------------------------------------------------------------------------- the forecast stage


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
    max_new = dataset.answer_token_budget(future, fields)
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
        anchor = dataset.anchor_of(history, answer_format)
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
    content = dataset.user_prompt(company.name_zh, history, future, fields, text, answer_format)
    dates = trading_calendar.next_trading_days(history.index[-1], future, ws.data.calendar)  # the exchange's days
    return {
        "company": company,
        "history": history,
        "frame": frame,  # its volatility scales a calibrated band
        "prompt": [{"role": "user", "content": content}],
        "regex": dataset.answer_regex(dates, fields, answer_format),
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
    import calibration

    if decoding.bands != "calibrated":
        return None
    cal = calibration.load(Path(model_dir) / calibration.FILE)
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
