"""Calibrating bands on a model's own held-out forecasts: the point's weight, split conformal errors, the
band family per window type, and adaptive conformal inference over the test period.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from forecasting import risk_models
from forecasting.calibrated import FILE, GRID, HIGHER, LOWER, MIN_ERRORS, Calibration, reference_closes, volatility
from utils import write_jsonl

WEIGHTS = np.round(np.linspace(0, 1, 21), 2)  # the point weights tried, 0.05 apart


ACI_GAMMA = 0.005  # adaptive conformal inference's step (Gibbs & Candès, 2021, used 0.005 on daily returns)


def fit_garch_all(prices: dict, last_day) -> dict[str, list[float]]:
    """{code: GARCH parameters} fitted on each stock's closes up to `last_day` (stocks whose fit fails: absent)."""
    out = {}
    for code, frame in prices.items():
        model = risk_models.fit_garch(
            risk_models.log_returns(frame.loc[frame.index <= pd.Timestamp(last_day), "Close"])
        )
        if model is not None:
            out[code] = [model.omega, model.alpha, model.beta, model.nu, model.backcast]
    return out


def fit_corrections(cal: Calibration, tests, samples) -> None:
    """Sets `cal.corrections` from the held-out forecasts' sampled closes (`samples`: K × future per window, or
    None): per window type with at least MIN_ERRORS of them, per step and central band (τ, 1 − τ) of GRID, split
    conformal quantile regression's correction (Romano et al., 2019): the ⌈(1 − 2τ)(n + 1)⌉-th smallest of the
    n scores max(q_τ − y, y − q_1−τ) / (volatility × last close), q the samples' quantiles (weighed as the point
    is) and y the close that came."""
    for name in sorted({w.window.name for w in tests}):
        index = [i for i, w in enumerate(tests) if w.window.name == name and samples[i] is not None]
        if len(index) < MIN_ERRORS:
            continue
        steps = []
        for step in range(tests[index[0]].window.future):
            scores = []
            for i in index:
                w = tests[i]
                q = np.quantile(cal.weigh(name, samples[i][:, step], w.last_close), GRID)
                actual = float(w.actual["Close"].iloc[step])
                scores.append(
                    np.maximum(q[LOWER] - actual, actual - q[HIGHER]) / (volatility(w.history) * w.last_close)
                )
            steps.append([round(float(c), 5) for c in conformal_quantiles(np.asarray(scores), 1 - 2 * GRID[LOWER])])
        cal.corrections[name] = steps


def conformal_quantiles(scores: np.ndarray, coverages) -> np.ndarray:
    """Per column of `scores` (n × levels), the ⌈coverage × (n + 1)⌉-th smallest score (the largest when that
    exceeds n): split conformal's finite-sample quantile."""
    n = len(scores)
    ranks = np.minimum(np.ceil(np.asarray(coverages) * (n + 1)).astype(int), n) - 1
    return np.sort(scores, axis=0)[ranks, np.arange(scores.shape[1])]


def choose_families(cal: Calibration, tests, held, garch_before: dict, wanted: str = "auto") -> None:
    """Sets `cal.families` (and `family_crps`): per window type, the band family with the lowest mean CRPS of the
    close (in % of the origin's close) on the held-out forecasts `held` (`interface.Forecasts`: points, and
    sampled closes when K > 1), or `wanted` when it names one. The conformal band and the conformalized sample
    quantiles are scored cross-fitted over two halves of the origins; GARCH with `garch_before`, parameters
    fitted on days before the held-out period."""
    from evaluation import metrics

    predictions, drawn = held.points, held.samples or [None] * len(tests)
    for name in sorted({w.window.name for w in tests}):
        index = [i for i, w in enumerate(tests) if w.window.name == name and predictions[i] is not None]
        if wanted != "auto":
            cal.families[name] = wanted
        if len(index) < 2 * MIN_ERRORS:
            continue
        mine = [tests[i] for i in index]
        weighted = cal.weighted(mine, [predictions[i] for i in index])
        points = [p[:, 3] for p in weighted]
        scored = {
            "conformal": _cross_fitted(cal, mine, weighted),
            "ewma": [reference_closes("ewma", p, tests[i].history) for i, p in zip(index, points, strict=True)],
            "garch": [
                reference_closes("garch", p, tests[i].history, garch_before.get(tests[i].code))
                for i, p in zip(index, points, strict=True)
            ],
        }
        if all(drawn[i] is not None for i in index):
            scored["quantiles"] = _cross_fitted_samples(cal, mine, [drawn[i] for i in index])
        crps = {}
        for family, dists in scored.items():
            values = [
                metrics.crps_ensemble(
                    100 * (d[:, s] / tests[i].last_close - 1), 100 * (actual / tests[i].last_close - 1)
                )
                for i, d in zip(index, dists, strict=True)
                if d is not None
                for s, actual in enumerate(tests[i].actual["Close"].to_numpy(dtype=float))
            ]
            if values:
                crps[family] = round(float(np.mean(values)), 5)
        cal.family_crps[name] = crps
        if wanted == "auto" and crps:
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


def _cross_fitted_samples(cal: Calibration, tests, samples) -> list:
    """Each held-out forecast's conformalized sample quantiles, corrected by the other half of the origins."""
    origins = sorted({w.origin for w in tests})
    middle = origins[len(origins) // 2]
    out = [None] * len(tests)
    for mine in (lambda w: w.origin < middle, lambda w: w.origin >= middle):
        other = Calibration({}, point=cal.point, weights=cal.weights)
        rest = [i for i, w in enumerate(tests) if not mine(w)]
        fit_corrections(other, [tests[i] for i in rest], [samples[i] for i in rest])
        for i, w in enumerate(tests):
            if mine(w):
                out[i] = other.conformalized(w.window.name, samples[i], w.last_close, volatility(w.history))
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


def held_out(history, stride: int, columns) -> tuple[list, Calibration | None]:
    """(the calibration period's windows, None), or ([], an empty calibration saying why there is none). The
    period: every company's windows whose targets all lie in [the history's cutoff, its last day], on or after the
    adapter's training cutoff (so never a training target) and before the test period, origins `stride` days
    apart. `history`: the forecasters' `interface.History`."""
    from evaluation import forecast_windows

    if history.cutoff is None:
        return [], Calibration({}, notes=["no adapter with a training cutoff: no calibration period"])
    start, last, found = pd.Timestamp(history.cutoff), pd.Timestamp(history.last_day), []
    cutoff = f"{start:%Y-%m-%d}"
    for window in history.windows:
        for c in history.companies:
            found += forecast_windows.test_windows(
                history.prices[c.code], (c.code, c.name_zh), window, (start, last), stride, columns
            )
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
