"""Every model a walk-forward evaluation scores, behind one interface, as darts' models are: `fit` on what
the training period offers (`History`: prices up to the last day before the test period, never a test day),
then `predict` the test windows (`Forecasts`: a point forecast per window, sampled closes where the model
has a distribution). `walk_forward.evaluate` is a loop over them.

Here: the naive baselines (persistence, drift, moving average), the probabilistic random walks (past returns,
RiskMetrics' EWMA and GARCH(1,1) volatility: `risk_models.py`) and the spec's LSTM. The LLMs, tuned and
untuned, are in `llm_forecaster.py`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

import dataset
import evaluation as ev
import risk_models as risk
from market_data import Company

log = logging.getLogger("stock.forecasters")


@dataclass
class History:
    """What a forecaster may learn from. `prices` end on `last_day`: the adapter's last training day, or the
    day before the test period. `cutoff` is the adapter's train/validation cutoff (None without one)."""

    prices: dict[str, pd.DataFrame]
    companies: list[Company]
    windows: list[dataset.WindowType]
    fields: list[str]
    stride: int  # the training examples' stride
    val_fraction: float
    cutoff: pd.Timestamp | None
    last_day: pd.Timestamp


@dataclass
class Forecasts:
    """One forecaster's forecasts of the test windows, in their order; None is a failed forecast."""

    points: list[np.ndarray | None]  # future × OHLC per window
    samples: list[np.ndarray | None] | None = None  # draws × future closes per window
    raw: list[np.ndarray | None] | None = None  # the points as generated, before a calibration weighed them
    answers: list[dict] = field(default_factory=list)  # the LLMs' raw answers and how each was read
    figures: dict = field(default_factory=dict)  # what the report shows about the run (training, timing)


class Forecaster:
    """`fit(history)`, then `predict(tests)`; `close()` frees what it holds. `calibration` is set by a fit
    that calibrates its bands on held-out days (the LLMs)."""

    name = "forecaster"
    calibration = None

    def fit(self, history: History) -> None:
        """Learn from the training period; a naive baseline has nothing to learn."""

    def predict(self, tests: list[ev.TestWindow]) -> Forecasts:
        raise NotImplementedError

    def close(self) -> None:
        """Free what the forecaster holds (a model, its memory) before the next one runs."""


class Baseline(Forecaster):
    """A naive rule of the window's own history: `evaluation.BASELINES`."""

    def __init__(self, name: str):
        self.name, self.rule = name, ev.BASELINES[name]

    def predict(self, tests: list[ev.TestWindow]) -> Forecasts:
        return Forecasts([self.rule(w) for w in tests])


class RandomWalk(Forecaster):
    """Persistence as its point, spread by each stock's own past `h`-day returns over the training days
    (all stocks' pooled when one has too few): the reference of every CRPS skill."""

    name = "random_walk"

    def fit(self, history: History) -> None:
        self.returns = ev.random_walk_returns(history.prices, history.windows, history.last_day)

    def predict(self, tests: list[ev.TestWindow]) -> Forecasts:
        return Forecasts([ev.persistence(w) for w in tests], [ev.random_walk_samples(w, self.returns) for w in tests])


class VolatilityRandomWalk(Forecaster):
    """Persistence as its point; the close's distribution a zero-drift random walk in log price whose variance
    is forecast at each origin from the stock's closes up to that origin, nothing later. Subclasses say how."""

    def predict(self, tests: list[ev.TestWindow]) -> Forecasts:
        return Forecasts([ev.persistence(w) for w in tests], [self.closes(w) for w in tests])

    def closes(self, w: ev.TestWindow, center=None) -> np.ndarray | None:
        """QUANTILE_DRAWS × future closes around `center` (default: the last close), or None without history."""
        variances, unit = self.variances(risk.log_returns(w.history["Close"]), w.code, w.window.future)
        if variances is None or not np.all(np.isfinite(variances)):
            return None
        return risk.closes_from_variances(w.last_close if center is None else center, variances, unit)

    def variances(self, returns: np.ndarray, code: str, horizon: int):
        """(variances of the cumulative log return to each step, the unit quantiles) or (None, None)."""
        raise NotImplementedError


class EwmaRandomWalk(VolatilityRandomWalk):
    """RiskMetrics: a Gaussian random walk whose daily variance is the EWMA (lambda 0.94) of squared log
    returns up to the origin. Nothing is fitted."""

    name = "ewma"

    def __init__(self):
        self.unit = risk.standard_quantiles()

    def variances(self, returns, code, horizon):
        if len(returns) < 2:
            return None, None
        return risk.ewma_step_variances(returns, horizon), self.unit


class GarchRandomWalk(VolatilityRandomWalk):
    """GARCH(1,1) with Student-t innovations, fitted by `arch` per stock on its returns up to the history's
    last day (the adapter's last training day, or the day before the test period), then filtered with those
    parameters through each origin. A stock with too short a history, or whose fit fails, gets the EWMA
    (counted in `figures`)."""

    name = "garch"

    def __init__(self):
        self.fitted: dict[str, risk.Garch | None] = {}
        self.fallback = EwmaRandomWalk()

    def fit(self, history: History) -> None:
        self.fitted = {
            code: risk.fit_garch(risk.log_returns(frame.loc[frame.index <= history.last_day, "Close"]))
            for code, frame in history.prices.items()
        }
        missing = sorted(code for code, g in self.fitted.items() if g is None)
        if missing:
            log.info("GARCH: no fit for %d stock(s) (%s): the EWMA stands in", len(missing), ", ".join(missing))

    def variances(self, returns, code, horizon):
        garch = self.fitted.get(code)
        if garch is None:
            return self.fallback.variances(returns, code, horizon)
        return garch.step_variances(100 * returns, horizon) / 1e4, risk.standard_quantiles(nu=garch.nu)

    def predict(self, tests: list[ev.TestWindow]) -> Forecasts:
        out = super().predict(tests)
        fitted = sum(g is not None for g in self.fitted.values())
        out.figures = {"fitted": fitted, "ewma_instead": len(self.fitted) - fitted}
        return out


class Lstm(Forecaster):
    """The spec's LSTM: one network per window type, trained on exactly the LLM's training windows
    (`training_windows`), early stopping on its validation windows."""

    name = "lstm"

    def __init__(self, epochs: int, seed: int):
        self.epochs, self.seed = epochs, seed
        self.fitted: dict = {}

    def fit(self, history: History) -> None:
        import lstm

        cutoff = history.cutoff
        if cutoff is None:  # no adapter: the same rule as `training_data.build`, on the training days
            all_dates = [d for f in history.prices.values() for d in f.index]
            cutoff = dataset.split_cutoff(all_dates, history.val_fraction) if len(set(all_dates)) > 1 else None
        for window in history.windows:
            train, val = training_windows(history.prices, window, history.fields, history.stride, cutoff)
            if not train:
                log.warning("LSTM %s: no training window; its forecasts count as failures", window.name)
                continue
            settings = lstm.LstmSettings(epochs=self.epochs, seed=self.seed)
            self.fitted[window] = lstm.fit_lstm(*_xy(train), *_xy(val), settings)
            log.info("LSTM %s: %s", window.name, self.fitted[window]["figures"])

    def predict(self, tests: list[ev.TestWindow]) -> Forecasts:
        import lstm

        points: list = [None] * len(tests)
        for window, fitted in self.fitted.items():
            index = [i for i, w in enumerate(tests) if w.window == window]
            if not index:
                continue
            out = lstm.predict_lstm(fitted, [ev.window_features(tests[i].past) for i in index])
            for i, pred in zip(index, out, strict=True):
                points[i] = ev.targets_to_candles(pred, tests[i].last_close)
        tested = {t.window for t in tests}
        return Forecasts(points, figures={w.name: f["figures"] for w, f in self.fitted.items() if w in tested})


def _xy(windows: list) -> tuple[list, list]:
    """(features, targets) of (code, past, future) windows: the LSTM's inputs and its log-ratio targets."""
    x = [ev.window_features(past) for _, past, _ in windows]
    y = [ev.window_targets(future, float(past["Close"].iloc[-1])) for _, past, future in windows]
    return x, y


def training_windows(prices: dict, window, fields, stride: int, cutoff: pd.Timestamp | None):
    """([(code, past, future)] train, [...] validation): exactly the windows `training_data.build` gives the
    LLM (the same spans, split by the same `dataset.chronological_split`), as frames for the LSTM."""
    windows = []
    for code, frame in prices.items():
        spans, _ = dataset.window_spans(frame, window, fields, stride)
        windows += [(code, frame.iloc[start:mid], frame.iloc[mid:end]) for start, mid, end in spans]
    train, val, _ = dataset.chronological_split(windows, cutoff, span=lambda w: (w[1].index[0], w[2].index[-1]))
    return train, val
