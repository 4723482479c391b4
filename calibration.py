"""Forecast bands calibrated on the model's own errors: split conformal prediction on held-out days.

A tuned model's sampled answers sit far too close together to be an interval (README: the 80% band of
K = 8 samples covered 34–41% of outcomes). So the band comes from how wrong the model's point forecasts
were on windows it never trained on: the validation period of its training, whose targets lie on or after
the training cutoff and before the test period. There the model forecasts as usual, and each forecast step
leaves a relative close error e = actual / forecast − 1, kept per window type and horizon step. A new
forecast's distribution is its point close × (1 + e) over those errors, so its 80% band runs from the 10th
to the 90th percentile of them: split conformal prediction (Vovk et al., 2005; per horizon step as in
Stankeviciute et al., 2021), which covers as often as intended when the errors of the test period are like
those of the calibration period, and says nothing more.

Each error is kept in units of its stock's volatility at the forecast's origin: the standard deviation of the
last VOL_DAYS daily log returns up to that day (normalized conformal prediction, Papadopoulos et al., 2008, with
the simplest difficulty estimate there is). A band is then the point close × (1 + e × that volatility), wide for
a stock that has been moving and in a month that moves, narrow for a quiet one. Measured on both test periods
(README): the 80% band covered about 74% of March–April 2026 outcomes, against 60–63% with unscaled errors.

The same held-out forecasts weigh the point forecast. A tuned model's predicted change (forecast − last close)
barely correlates with what happened (README: about −0.1 to +0.02), so taken at face value it loses to
persistence. Each window type's weight w in [0, 1] is the one whose forecast last close + w × (forecast − last
close) had the lowest close MAPE on the calibration days (w = 1: the model as generated; 0: persistence). The
weight maps every candle to a candle (the map is increasing), and the errors behind the band are those of
the weighted forecasts. It is fit before the test period and never sees it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from utils import atomic_write_text, write_jsonl

FILE = "calibration.json"  # beside the adapter (read by forecasts) and in an evaluation's report folder
MIN_ERRORS = 30  # errors per horizon step below which no band is drawn (fewer cannot place a 2.5% tail)
VOL_DAYS = 20  # daily returns behind a forecast's volatility (as the baselines' 20-day lookback)
MIN_VOL = 0.002  # a floor for the volatility of a stock that has not moved (0.2% a day)
WEIGHTS = np.round(np.linspace(0, 1, 21), 2)  # the point weights tried, 0.05 apart


@dataclass
class Calibration:
    """Relative close errors of one model's point forecasts, per window type and horizon step."""

    errors: dict[str, list[list[float]]]  # window name → [errors of step 1, of step 2, …]
    start: str = ""  # the calibration targets' first and last days
    end: str = ""
    windows: int = 0  # calibration forecasts made
    usable: int = 0  # of them, usable (parsed, possible candles)
    decoding: str = ""  # DecodingConfig.identity() of the forecasts: bands fit forecasts decoded alike
    notes: list[str] = field(default_factory=list)
    point: str = "model"  # "calibrated": the errors are those of the forecasts weighted by `weights`
    weights: dict[str, float] = field(default_factory=dict)  # window name → the model's change's weight
    weighing: dict[str, dict] = field(default_factory=dict)  # window name → close MAPE (%) at weights 1, 0, w
    scaled: bool = False  # True: errors in units of the origin's volatility (`volatility`); older files: False
    # the held-out forecasts' answer records (walk_forward): written beside the report, never into this file
    answers: list[dict] = field(default_factory=list, repr=False, compare=False)

    def weight(self, window: str) -> float:
        return self.weights.get(window, 1.0) if self.point == "calibrated" else 1.0

    def weigh(self, window: str, point, last_close: float) -> np.ndarray:
        """Price forecasts (any shape) of `window` moved toward `last_close` by the window's weight."""
        return last_close + self.weight(window) * (np.asarray(point, dtype=float) - last_close)

    def step_errors(self, window: str, step: int) -> np.ndarray | None:
        """The errors behind step `step` (1-based) of `window`; too few of them: every window type's errors
        of that step pooled; still too few: None."""
        own = self.errors.get(window, [])
        values = own[step - 1] if step <= len(own) else []
        if len(values) >= MIN_ERRORS:
            return np.asarray(values, dtype=float)
        pooled = [e for steps in self.errors.values() if step <= len(steps) for e in steps[step - 1]]
        return np.asarray(pooled, dtype=float) if len(pooled) >= MIN_ERRORS else None

    def ensemble(self, window: str, point_closes, volatility: float = 1.0) -> np.ndarray | None:
        """The forecast's distribution of closes, n × future (n: the fewest errors of any step, each step's
        errors thinned evenly to n), or None when a step has too few errors. `volatility`: the stock's at the
        origin (`volatility()`), when the errors are scaled."""
        columns = [self.step_errors(window, step) for step in range(1, len(point_closes) + 1)]
        if any(c is None for c in columns):
            return None
        n = min(len(c) for c in columns)
        thinned = [np.sort(c)[np.linspace(0, len(c) - 1, n).astype(int)] for c in columns]
        scale = volatility if self.scaled else 1.0
        return np.asarray(point_closes, dtype=float)[None, :] * (1 + scale * np.stack(thinned, axis=1))

    def quantiles(self, window: str, point_closes, levels, volatility: float = 1.0) -> np.ndarray | None:
        """len(levels) × future closes, or None without a band."""
        closes = self.ensemble(window, point_closes, volatility)
        return None if closes is None else np.quantile(closes, levels, axis=0)

    def weighted(self, tests, predictions) -> list:
        """The point forecasts (future × OHLC, or None) of `tests`, each weighted by its window's weight."""
        return [
            None if pred is None else self.weigh(w.window.name, pred, w.last_close)
            for w, pred in zip(tests, predictions, strict=True)
        ]

    def distributions(self, tests, predictions) -> list:
        """Each usable forecast's closes (future × OHLC point forecasts) spread by the errors: n × future, or None."""
        return [
            None if pred is None else self.ensemble(w.window.name, np.asarray(pred)[:, 3], volatility(w.history))
            for w, pred in zip(tests, predictions, strict=True)
        ]

    def summary(self) -> dict:
        """What a report says about it: the period, the counts, and the 80% band's width per window and step
        (in % of the close, or in units of the volatility when scaled)."""
        widths = {}
        for window, steps in self.errors.items():
            widths[window] = [
                round(100 * float(np.quantile(e, 0.9) - np.quantile(e, 0.1)), 3) if len(e) else None for e in steps
            ]
        return {
            "start": self.start,
            "end": self.end,
            "windows": self.windows,
            "usable": self.usable,
            "errors_per_step": {w: [len(e) for e in steps] for w, steps in self.errors.items()},
            "band80_width_pct" if not self.scaled else "band80_width_vol": widths,
            "scaled": self.scaled,
            "point": self.point,
            "weights": self.weights,
            "weighing": self.weighing,
            "notes": self.notes,
        }

    def save(self, path: Path) -> Path:
        record = {k: v for k, v in asdict(self).items() if k != "answers"}
        return atomic_write_text(Path(path), json.dumps(record, indent=1) + "\n")


def volatility(history: pd.DataFrame) -> float:
    """The standard deviation of the last VOL_DAYS daily log returns of `history`'s closes (at least MIN_VOL;
    MIN_VOL too with fewer than two returns)."""
    closes = history["Close"].dropna().to_numpy(dtype=float)[-(VOL_DAYS + 1) :]
    closes = closes[closes > 0]
    if len(closes) < 3:
        return MIN_VOL
    return max(float(np.std(np.diff(np.log(closes)))), MIN_VOL)


def best_weight(last_closes, forecasts, actuals) -> tuple[float, dict]:
    """The weight of WEIGHTS whose weighted forecasts have the lowest close MAPE (the smaller weight on a tie),
    and the MAPE (%) at weights 1, 0 and that one. Arrays of one value per forecast step."""
    last, forecast, actual = (np.asarray(a, dtype=float) for a in (last_closes, forecasts, actuals))
    mape = [float(100 * np.mean(np.abs(last + w * (forecast - last) - actual) / np.abs(actual))) for w in WEIGHTS]
    best = int(np.argmin(mape))
    figures = {"model": mape[-1], "persistence": mape[0], "weighted": mape[best]}
    return float(WEIGHTS[best]), {k: round(v, 4) for k, v in figures.items()}


def fit(tests, predictions, decoding: str = "", point: str = "calibrated", answers=(), scaled=True) -> Calibration:
    """Weights and errors of the point forecasts `predictions` (future × OHLC arrays, or None for a failure)
    against the windows' actual closes. `point` "calibrated" fits each window type's weight (`best_weight`)
    and keeps the weighted forecasts' errors; "model" keeps the forecasts as they are (weight 1). A failed
    forecast adds no error (it is counted in `usable`). `answers`: the forecasts' answer records, kept with it.
    `scaled`: errors in units of each origin's volatility (the default; False: as they are)."""
    weights, weighing = {}, {}
    if point == "calibrated":
        for name in sorted({w.window.name for w in tests}):
            steps = [
                (w.last_close, forecast, outcome)
                for w, pred in zip(tests, predictions, strict=True)
                if w.window.name == name and pred is not None
                for forecast, outcome in zip(np.asarray(pred)[:, 3], w.actual["Close"].to_numpy(float), strict=True)
                if forecast > 0 and math.isfinite(outcome) and outcome > 0
            ]
            if len(steps) >= MIN_ERRORS:
                weights[name], weighing[name] = best_weight(*zip(*steps, strict=True))
    cal = Calibration({}, decoding=decoding, point=point, weights=weights, weighing=weighing, scaled=scaled)
    cal.answers = list(answers)
    usable = 0
    for w, pred in zip(tests, predictions, strict=True):
        steps = cal.errors.setdefault(w.window.name, [[] for _ in range(w.window.future)])
        if pred is None:
            continue
        usable += 1
        actual = w.actual["Close"].to_numpy(dtype=float)
        closes = cal.weigh(w.window.name, np.asarray(pred)[:, 3], w.last_close)
        scale = volatility(w.history) if scaled else 1.0
        for step, (forecast, outcome) in enumerate(zip(closes, actual, strict=True)):
            if forecast > 0 and math.isfinite(outcome):
                steps[step].append(float((outcome / forecast - 1) / scale))
    days = [d for w in tests for d in w.actual.index]
    cal.start = f"{min(days):%Y-%m-%d}" if days else ""
    cal.end = f"{max(days):%Y-%m-%d}" if days else ""
    cal.windows, cal.usable = len(tests), usable
    return cal


def held_out(
    prices: dict, companies, windows, cutoff: str | None, end, stride: int, columns
) -> tuple[list, Calibration | None]:
    """(the calibration period's windows, None), or ([], an empty calibration saying why there is none). The
    period: every company's windows whose targets all lie in [cutoff, end], on or after the adapter's training
    cutoff (so never a training target) and before the test period, origins `stride` days apart."""
    import evaluation as ev

    if not cutoff:
        return [], Calibration({}, notes=["no adapter with a training cutoff: no calibration period"])
    start, last, found = pd.Timestamp(cutoff), pd.Timestamp(end), []
    for window in windows:
        for c in companies:
            found += ev.test_windows(prices[c.code], c.code, c.name_zh, window, start, last, stride, columns)
    if len(found) >= MIN_ERRORS:
        return found, None
    note = (
        f"{len(found)} forecast windows fit between the training cutoff {cutoff} and {last:%Y-%m-%d}, fewer than the "
        f"{MIN_ERRORS} a band needs: no band (train with a longer validation period)"
    )
    return [], Calibration({}, start=cutoff, end=f"{last:%Y-%m-%d}", windows=len(found), notes=[note])


def save_all(calibrations: dict, run_dir: Path, adapter_dir: Path | None) -> None:
    """Each model's calibration into the report folder as `calibration-<model>.json` (its forecasts' answers as
    `calibration-answers-<model>.jsonl`); the tuned model's also
    into `adapter_dir` (None: not), where its forecasts (`--train 0`) find their band."""
    for name, cal in calibrations.items():
        if not cal.errors:
            continue
        cal.save(Path(run_dir) / f"calibration-{name}.json")
        write_jsonl(Path(run_dir) / f"calibration-answers-{name}.jsonl", cal.answers)
        if name == "tuned" and adapter_dir is not None:
            path = cal.save(Path(adapter_dir) / FILE)
            print(f"calibration: {cal.usable} of {cal.windows} held-out forecasts ({cal.start} → {cal.end}) → {path}")


def load(path: Path) -> Calibration | None:
    """A saved calibration, or None when there is none or it cannot be read (a forecast then has no band)."""
    try:
        record = json.loads(Path(path).read_text())
        return Calibration(**record)
    except (OSError, ValueError, TypeError):
        return None
