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

The same held-out days choose the band's family, per window type: these conformal errors, or the distribution of
one of the two strongest simple references (`risk_models.py`: RiskMetrics' EWMA or a GARCH(1,1)-t random walk)
centred on the point forecast, whichever had the lowest CRPS there. The conformal errors are scored cross-fitted
(each half of the held-out origins by the errors of the other half), the references with GARCH parameters fitted
on days before the held-out period only, so no family is scored on what it was fitted on.

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

import risk_models as risk
from utils import atomic_write_text, write_jsonl

FILE = "calibration.json"  # beside the adapter (read by forecasts) and in an evaluation's report folder
MIN_ERRORS = 30  # errors per horizon step below which no band is drawn (fewer cannot place a 2.5% tail)
VOL_DAYS = 20  # daily returns behind a forecast's volatility (as the baselines' 20-day lookback)
MIN_VOL = 0.002  # a floor for the volatility of a stock that has not moved (0.2% a day)
WEIGHTS = np.round(np.linspace(0, 1, 21), 2)  # the point weights tried, 0.05 apart
FAMILIES = ("conformal", "ewma", "garch")  # what a calibrated band can be; `choose_families` picks per window
ACI_GAMMA = 0.005  # adaptive conformal inference's step (Gibbs & Candès, 2021, used 0.005 on daily returns)


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
    families: dict[str, str] = field(default_factory=dict)  # window name → band family (FAMILIES); absent: conformal
    family_crps: dict[str, dict] = field(default_factory=dict)  # window → family → CRPS (%) on the held-out days
    garch: dict[str, list[float]] = field(default_factory=dict)  # code → GARCH (omega, alpha, beta, nu, backcast)
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

    def family(self, window: str) -> str:
        return self.families.get(window, "conformal")

    def band_closes(self, window: str, point_closes, history: pd.DataFrame, code: str = "") -> np.ndarray | None:
        """The forecast's distribution of closes (n × future) in the window's band family: the conformal
        `ensemble`, or the EWMA or GARCH random walk of the stock's closes in `history` (up to the origin)
        centred on the point's closes. A stock without GARCH parameters gets the EWMA's."""
        family = self.family(window)
        if family == "conformal":
            return self.ensemble(window, point_closes, volatility(history) if self.scaled else 1.0)
        return reference_closes(family, point_closes, history, self.garch.get(code))

    def quantiles(self, window: str, point_closes, levels, history=None, code: str = "") -> np.ndarray | None:
        """len(levels) × future closes, or None without a band."""
        closes = self.band_closes(window, point_closes, history, code)
        return None if closes is None else np.quantile(closes, levels, axis=0)

    def describe(self, window: str) -> str:
        """What the window's band is, in words."""
        family = self.family(window)
        if family == "conformal":
            return f"errors of {self.usable} held-out forecasts, {self.start} → {self.end}"
        name = "RiskMetrics EWMA" if family == "ewma" else "GARCH(1,1)-t"
        crps = self.family_crps.get(window) or {}
        why = (
            f"lowest CRPS on held-out days {self.start} → {self.end}, below the model's own errors"
            if crps and min(crps, key=crps.get) == family
            else "as asked"
        )
        return f"a {name} random walk around the point ({why})"

    def weighted(self, tests, predictions) -> list:
        """The point forecasts (future × OHLC, or None) of `tests`, each weighted by its window's weight."""
        return [
            None if pred is None else self.weigh(w.window.name, pred, w.last_close)
            for w, pred in zip(tests, predictions, strict=True)
        ]

    def distributions(self, tests, predictions) -> list:
        """Each usable forecast's closes (future × OHLC point forecasts) in its window's band family: n × future,
        or None."""
        return [
            None if pred is None else self.band_closes(w.window.name, np.asarray(pred)[:, 3], w.history, w.code)
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
            "families": self.families,
            "family_crps": self.family_crps,
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


def reference_closes(family: str, point_closes, history: pd.DataFrame, garch: list[float] | None = None):
    """n × future closes of the EWMA (or, given its parameters, GARCH) random walk of `history`'s closes, centred
    on `point_closes` (one per step); None with fewer than two returns."""
    returns = risk.log_returns(history["Close"])
    horizon = len(point_closes)
    if family == "garch" and garch:
        model = risk.Garch(*garch)
        variances, unit = model.step_variances(100 * returns, horizon) / 1e4, risk.standard_quantiles(nu=model.nu)
    elif len(returns) >= 2:
        variances, unit = risk.ewma_step_variances(returns, horizon), risk.standard_quantiles()
    else:
        return None
    return risk.closes_from_variances(np.asarray(point_closes, dtype=float), variances, unit)


def fit_garch_all(prices: dict, last_day) -> dict[str, list[float]]:
    """{code: GARCH parameters} fitted on each stock's closes up to `last_day` (stocks whose fit fails: absent)."""
    out = {}
    for code, frame in prices.items():
        model = risk.fit_garch(risk.log_returns(frame.loc[frame.index <= pd.Timestamp(last_day), "Close"]))
        if model is not None:
            out[code] = [model.omega, model.alpha, model.beta, model.nu, model.backcast]
    return out


def choose_families(cal: Calibration, tests, predictions, garch_before: dict, wanted: str = "auto") -> None:
    """Sets `cal.families` (and `family_crps`): per window type, the band family with the lowest mean CRPS of the
    close (in % of the origin's close) on the held-out forecasts, or `wanted` when it names one. The conformal
    band is scored cross-fitted over two halves of the origins; GARCH with `garch_before`, parameters fitted
    on days before the held-out period."""
    import evaluation as ev

    for name in sorted({w.window.name for w in tests}):
        index = [i for i, w in enumerate(tests) if w.window.name == name and predictions[i] is not None]
        if len(index) < 2 * MIN_ERRORS:
            continue
        weighted = cal.weighted([tests[i] for i in index], [predictions[i] for i in index])
        points = [p[:, 3] for p in weighted]
        scored = {
            "conformal": _cross_fitted(cal, [tests[i] for i in index], weighted),
            "ewma": [reference_closes("ewma", p, tests[i].history) for i, p in zip(index, points, strict=True)],
            "garch": [
                reference_closes("garch", p, tests[i].history, garch_before.get(tests[i].code))
                for i, p in zip(index, points, strict=True)
            ],
        }
        crps = {}
        for family, dists in scored.items():
            values = [
                ev.crps_ensemble(100 * (d[:, s] / tests[i].last_close - 1), 100 * (actual / tests[i].last_close - 1))
                for i, d in zip(index, dists, strict=True)
                if d is not None
                for s, actual in enumerate(tests[i].actual["Close"].to_numpy(dtype=float))
            ]
            if values:
                crps[family] = round(float(np.mean(values)), 5)
        cal.family_crps[name] = crps
        if wanted != "auto":
            cal.families[name] = wanted
        elif crps:
            cal.families[name] = min(crps, key=crps.get)


def _cross_fitted(cal: Calibration, tests, weighted) -> list:
    """Each held-out forecast's conformal distribution made from the errors of the other half of the origins
    (`weighted`: the forecasts as weighed by the calibration)."""
    origins = sorted({w.origin for w in tests})
    middle = origins[len(origins) // 2]
    halves = [[w.origin < middle for w in tests], [w.origin >= middle for w in tests]]
    out = [None] * len(tests)
    for mine, other in (halves, halves[::-1]):
        rest = [i for i, keep in enumerate(other) if keep]
        fitted = fit([tests[i] for i in rest], [weighted[i] for i in rest], point="model", scaled=cal.scaled)
        for i, keep in enumerate(mine):
            if keep:
                w = tests[i]
                scale = volatility(w.history) if cal.scaled else 1.0
                out[i] = fitted.ensemble(w.window.name, weighted[i][:, 3], scale)
    return out


def adaptive_levels(origins, targets, inside, alpha: float, gamma: float = ACI_GAMMA) -> np.ndarray:
    """Adaptive conformal inference (Gibbs & Candès, 2021) for forecasts made at `origins` of outcomes known on
    `targets`: the miscoverage level each forecast's band uses. Starting at `alpha`, every outcome that becomes
    known before a forecast's origin updates the level by a ← a + gamma × (alpha − miss), so misses widen the
    band and hits narrow it; `inside(i, a)` says whether outcome i lies in forecast i's band at level a. Only
    outcomes known at each origin are used."""
    origins, targets = np.asarray(origins), np.asarray(targets)
    used = np.empty(len(origins))
    level, pending = alpha, []  # (target, miss) of forecasts whose outcome is not yet known
    for i in np.argsort(origins, kind="stable"):
        known = sorted((p for p in pending if p[0] <= origins[i]), key=lambda p: p[0])
        pending = [p for p in pending if p[0] > origins[i]]
        for _, miss in known:
            level += gamma * (alpha - miss)
        used[i] = level
        pending.append((targets[i], float(not inside(i, level))))
    return used


def adaptive_bands(tests, dists, alpha: float, gamma: float = ACI_GAMMA) -> list:
    """Per test window, future × 2 (low, high) closes of its central 1 − `alpha` band from its distribution
    (samples × future closes, or None: then None), the level adapted online (`adaptive_levels`) separately for
    each window type and horizon step, in the order of the forecasts' origins. A level at or below 0 gives the
    distribution's whole range."""
    out = [None if d is None else np.zeros((w.window.future, 2)) for w, d in zip(tests, dists, strict=True)]
    groups: dict = {}
    for i, w in enumerate(tests):
        for step in range(w.window.future) if dists[i] is not None else []:
            groups.setdefault((w.window.name, step), []).append(i)
    for (_, step), index in groups.items():

        def band(j, level, step=step, index=index):
            a = min(max(level, 0.0), 1.0)
            return np.quantile(dists[index[j]][:, step], [a / 2, 1 - a / 2])

        def inside(j, level, step=step, index=index):
            low, high = band(j, level)
            return bool(low <= tests[index[j]].actual["Close"].iloc[step] <= high)

        origins = [tests[i].origin for i in index]
        targets = [tests[i].actual.index[step] for i in index]
        for j, level in enumerate(adaptive_levels(origins, targets, inside, alpha, gamma)):
            out[index[j]][step] = band(j, level)
    return out


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
