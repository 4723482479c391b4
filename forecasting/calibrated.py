"""Calibrated bands as a forecast uses them: the record of a model's held-out errors (written by an evaluation,
beside the adapter) and what it makes of a new forecast: the weighed point and the band's distribution.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from forecasting import risk_models
from prompts.prompt_format import daily_volatility as volatility
from utils import atomic_write_text

FILE = "calibration.json"  # beside the adapter (read by forecasts) and in an evaluation's report folder


MIN_ERRORS = 30  # errors per horizon step below which no band is drawn (fewer cannot place a 2.5% tail)


FAMILIES = ("conformal", "ewma", "garch", "quantiles")  # what a calibrated band can be; `choose_families` picks


GRID = np.round(np.arange(1, 40) / 40, 3)  # 0.025, 0.05, … 0.975: the quantiles a sampled band is made of


LOWER = np.arange(len(GRID) // 2)  # GRID's levels below the median, and (HIGHER) their central bands' upper ends
HIGHER = len(GRID) - 1 - LOWER


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
    # window → per horizon step, per central band of GRID (τ, 1 − τ), τ < 0.5: how far the held-out days moved
    # the band of the K sampled closes out (or in), in units of the origin's volatility × its close
    corrections: dict[str, list[list[float]]] = field(default_factory=dict)
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

    def family(self, window: str, sampled: bool = True) -> str:
        """The window's band family; "quantiles" needs sampled closes: without them (`sampled` False, a greedy
        forecast) the conformal band stands in."""
        family = self.families.get(window, "conformal")
        return "conformal" if family == "quantiles" and not sampled else family

    def conformalized(self, window: str, samples, last_close: float, scale: float) -> np.ndarray | None:
        """GRID × future closes: the quantiles of the forecast's K sampled closes (K × future, weighed toward
        `last_close` as the point is), each central band (τ, 1 − τ) of GRID moved out by its held-out correction
        (conformalized quantiles, Romano et al. 2019) × `scale` (the origin's volatility) × `last_close`; None
        without corrections for every step."""
        steps = self.corrections.get(window) or []
        samples = np.asarray(samples, dtype=float)
        if samples.ndim != 2 or len(steps) < samples.shape[1]:
            return None
        q = np.quantile(self.weigh(window, samples, last_close), GRID, axis=0)
        widen = np.asarray(steps[: samples.shape[1]], dtype=float).T * scale * last_close  # LOWER × future
        q[LOWER] -= widen
        q[HIGHER] += widen
        return np.sort(q, axis=0)  # a band narrowed past its median keeps its quantiles in order

    def band_closes(self, window: str, point_closes, history: pd.DataFrame, code: str = "", samples=None):
        """The forecast's distribution of closes (n × future, or None) in the window's band family: the conformal
        `ensemble`, the `conformalized` quantiles of its sampled closes `samples` (K × future, as generated), or
        the EWMA or GARCH random walk of the stock's closes in `history` (up to the origin) centred on the
        point's closes. A stock without GARCH parameters gets the EWMA's."""
        family = self.family(window, samples is not None)
        if family == "quantiles":
            last = float(history["Close"].dropna().iloc[-1])
            return self.conformalized(window, samples, last, volatility(history))
        if family == "conformal":
            return self.ensemble(window, point_closes, volatility(history) if self.scaled else 1.0)
        return reference_closes(family, point_closes, history, self.garch.get(code))

    def quantiles(self, window: str, point_closes, levels, history=None, code: str = "", samples=None):
        """len(levels) × future closes, or None without a band."""
        closes = self.band_closes(window, point_closes, history, code, samples)
        return None if closes is None else np.quantile(closes, levels, axis=0)

    def describe(self, window: str, sampled: bool = True) -> str:
        """What the window's band is, in words."""
        family = self.family(window, sampled)
        if family == "conformal":
            stand_in = " (the window's band is sampled quantiles; this forecast has no samples)"
            return f"errors of {self.usable} held-out forecasts, {self.start} → {self.end}" + (
                stand_in if self.families.get(window) == "quantiles" else ""
            )
        if family == "quantiles":
            return f"the quantiles of its sampled closes, conformalized on held-out days {self.start} → {self.end}"
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

    def distributions(self, tests, predictions, samples=None) -> list:
        """Each usable forecast's closes (future × OHLC point forecasts; `samples`: each one's sampled closes, K ×
        future, or None) in its window's band family: n × future, or None."""
        samples = samples or [None] * len(tests)
        return [
            None if pred is None else self.band_closes(w.window.name, np.asarray(pred)[:, 3], w.history, w.code, drawn)
            for w, pred, drawn in zip(tests, predictions, samples, strict=True)
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


def reference_closes(family: str, point_closes, history: pd.DataFrame, garch: list[float] | None = None):
    """n × future closes of the EWMA (or, given its parameters, GARCH) random walk of `history`'s closes, centred
    on `point_closes` (one per step); None with fewer than two returns."""
    returns = risk_models.log_returns(history["Close"])
    horizon = len(point_closes)
    if family == "garch" and garch:
        model = risk_models.Garch(*garch)
        variances, unit = (
            model.step_variances(100 * returns, horizon) / 1e4,
            risk_models.standard_quantiles(nu=model.nu),
        )
    elif len(returns) >= 2:
        variances, unit = risk_models.ewma_step_variances(returns, horizon), risk_models.standard_quantiles()
    else:
        return None
    return risk_models.closes_from_variances(np.asarray(point_closes, dtype=float), variances, unit)


def load(path: Path) -> Calibration | None:
    """A saved calibration, or None when there is none or it cannot be read (a forecast then has no band)."""
    try:
        record = json.loads(Path(path).read_text())
        return Calibration(**record)
    except (OSError, ValueError, TypeError):
        return None
