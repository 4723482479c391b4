"""One forecast read from its answers: sampled answers → the point forecast (per-field median) and the
close's bands, from the calibration or the samples. The record a forecast is (`Forecast`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from config import data_args
from market import trading_calendar
from prompts import answer_parser

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
            parsed = answer_parser.parse_answer(raw, fields, expected=future, anchor=anchor)
        except answer_parser.ForecastParseError as exc:
            problems.append(f"unparseable: {exc}")
            continue
        impossible += bool(answer_parser.validate_forecast(parsed, origin))
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
    point = pd.DataFrame(median_forecast(stacked), index=frames[0].index, columns=columns)
    invalid = answer_parser.validate_forecast(point, origin)
    if invalid:
        what = "invalid: " if total == 1 else "the median candle is impossible: "
        return SampleRead(None, None, usable, total, what + "; ".join(invalid[:3]), frames, impossible)
    closes = np.stack([f["Close"].to_numpy(dtype=float) for f in frames])
    return SampleRead(point, closes, usable, total, problem, frames, impossible)


@dataclass(frozen=True)
class Forecast:
    """One stock's forecast as the user gets it, built once (`read_forecast`), then given its chart, files and page
    by `dataclasses.replace`."""

    code: str
    name: str
    past: pd.DataFrame
    raw_answer: str
    forecast: pd.DataFrame | None = None
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    chart: Path | None = None
    bands: pd.DataFrame | None = None  # close quantiles per day (columns q0.025 … q0.975)
    band: float = 0.8
    band_source: str = ""  # what the bands are quantiles of
    weight: float = 1.0  # the model's change from the last close × weight is the point forecast (calibrate.py)
    samples: int = 1
    usable_samples: int = 1
    files: tuple[Path, ...] = ()
    name_en: str = ""
    band_kind: str = ""  # "calibrated", "ewma", "garch" or "sampled" (what `band_source` describes)
    shown: pd.DataFrame | None = None  # prices up to the last known day, more than `past`: drawn on the chart
    page: Path | None = None  # the run's index.html (forecast_page.py) listing this forecast

    @property
    def ok(self) -> bool:
        return self.forecast is not None and not self.problems


@dataclass(frozen=True)
class Question:
    """One stock's forecast as asked: the company, the prompt's known days (`history`), how its answer is written
    (`fields`, `future` rows, the relative formats' `anchor`), and every known day (`known`: drawn on the chart, and
    the volatility behind a calibrated band; default `history`)."""

    code: str
    name: str
    history: pd.DataFrame
    fields: tuple[str, ...]
    future: int
    anchor: object = None
    name_en: str = ""
    known: pd.DataFrame | None = None


def read_forecast(question: Question, answers: list[str], band: float = 0.8, calibration=None, calendar=None):
    """A user-facing forecast from one prompt's sampled answers (problems recorded, never repaired). Its bands
    come from `calibration` (a `calibrated.Calibration`: the model's errors on held-out days) when given, else from
    the samples' quantiles when there are several. A day the exchange's `calendar` (or, without one, the week) has
    no session on is noted (free decoding lets the model choose its dates)."""
    q = question
    read = read_samples(answers, q.fields, q.future, q.history.index[-1], q.anchor)
    base = Forecast(
        q.code,
        q.name,
        q.history,
        answers[0],
        band=band,
        samples=len(answers),
        usable_samples=read.usable,
        name_en=q.name_en,
        shown=q.known,
    )
    if not read.ok:
        return replace(base, problems=(read.problem,))
    levels = sorted({lo for pair in band_levels(band).values() for lo in pair} | {0.5})
    read_as = {"forecast": read.point, "notes": ()}
    quantiles = None
    if calibration is not None:
        known = q.history if q.known is None else q.known
        sampled = read.closes if len(answers) > 1 else None
        quantiles, read_as = _calibrated(q, (read.point, sampled), calibration, levels, known)
    elif len(answers) > 1:
        quantiles = sample_quantiles(read.closes, levels)
        read_as |= {"band_source": f"{read.usable} sampled closes", "band_kind": "sampled"}
    if quantiles is not None:
        read_as["bands"] = pd.DataFrame(quantiles.T, index=read.point.index, columns=[f"q{lo:g}" for lo in levels])
    notes = read_as.pop("notes") + _calendar_notes(read.point.index, calendar)
    if read.problem:
        notes += (read.problem,)
    if read.impossible:
        notes += (
            f"{read.impossible} of {read.usable} samples were impossible candles (kept as draws; the median "
            "candle is possible)",
        )
    return replace(base, notes=notes, **read_as)


def _calendar_notes(days, calendar: str | None) -> tuple[str, ...]:
    """A note for each forecast day the exchange's calendar (or, without one, the week) has no session on."""
    if calendar:
        return tuple(
            f"{d:%Y-%m-%d} ({d:%A}) is not a trading day of the {calendar} calendar"
            for d in trading_calendar.closed_days(days, calendar)
        )
    return tuple(f"{d:%Y-%m-%d} is a {d:%A}: the exchange does not trade on weekends" for d in days if d.weekday() >= 5)


def _calibrated(q: Question, read, calibration, levels, known: pd.DataFrame):
    """(band quantiles, what the forecast reads as): the point forecast weighed toward the last close by the
    calibration's weight, and the quantiles in the window's band family (the held-out errors scaled by the stock's
    volatility, the sampled closes' conformalized quantiles, or a reference's random walk of the `known` prices;
    None, with a note, when too few errors). `read`: (the point forecast, the sampled closes or None)."""
    point, sampled = read
    window = f"{len(q.history)}:{q.future}"
    weight, notes, forecast = calibration.weight(window), (), point
    if weight != 1:
        prices = [c for c in data_args.OHLC if c in point.columns]
        forecast = point.copy()
        forecast[prices] = calibration.weigh(window, point[prices], float(q.history["Close"].iloc[-1]))
        held = f"{calibration.start} → {calibration.end}"
        notes += (
            f"point forecast: the model's change from the last close × {weight:g}, the weight with the lowest "
            f"error on held-out days ({held}; 0 would be persistence)",
        )
    read_as = {"forecast": forecast, "weight": weight}
    quantiles = calibration.quantiles(window, forecast["Close"].to_numpy(), levels, known, q.code, sampled)
    if quantiles is None:
        notes += (
            f"no band: the calibration ({calibration.start} → {calibration.end}) has too few errors for this window",
        )
    else:
        family = calibration.family(window, sampled is not None)
        read_as |= {
            "band_source": calibration.describe(window, sampled is not None),
            "band_kind": "calibrated" if family == "conformal" else family,
        }
    return quantiles, read_as | {"notes": notes}


QUANTILES = (0.025, 0.1, 0.5, 0.9, 0.975)  # the 95% and 80% bands and the median


def median_forecast(samples: np.ndarray) -> np.ndarray:
    """The point forecast of K sampled forecasts (K × future × fields): the per-field median.

    When every sample is a valid candle (low ≤ open, close ≤ high) so is the median, since order statistics
    keep the inequality: the k-th smallest low is at most the k-th smallest open."""
    return np.median(np.asarray(samples, dtype=float), axis=0)


def sample_quantiles(samples: np.ndarray, levels=QUANTILES) -> np.ndarray:
    """Quantiles over the first axis (the samples): len(levels) × the rest."""
    return np.quantile(np.asarray(samples, dtype=float), levels, axis=0)
