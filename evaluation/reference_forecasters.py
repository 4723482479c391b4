"""The forecasters every evaluation runs beside the LLMs: the naive baselines, the random walks (past returns,
RiskMetrics' EWMA, GARCH(1,1)-t) and the spec's LSTM.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

import dataset
from evaluation import baselines, forecast_windows
from evaluation.interface import Forecaster, Forecasts, History
from forecasting import risk_models

log = logging.getLogger("stock.forecasters")


class Baseline(Forecaster):
    """A naive rule of the window's own history: `baselines.BASELINES`."""

    def __init__(self, name: str):
        self.name, self.rule = name, baselines.BASELINES[name]

    def _predict(self, tests: list[forecast_windows.TestWindow]) -> Forecasts:
        return Forecasts([self.rule(w) for w in tests])


class RandomWalk(Forecaster):
    """Persistence as its point, spread by each stock's own past `h`-day returns over the training days
    (all stocks' pooled when one has too few): the reference of every CRPS skill."""

    name = "random_walk"
    supports_probabilistic_prediction = True

    def _fit(self, history: History) -> None:
        self.returns = baselines.random_walk_returns(history.prices, history.windows, history.last_day)

    def _predict(self, tests: list[forecast_windows.TestWindow]) -> Forecasts:
        return Forecasts(
            [baselines.persistence(w) for w in tests], [baselines.random_walk_samples(w, self.returns) for w in tests]
        )


class VolatilityRandomWalk(Forecaster):
    """Persistence as its point; the close's distribution a zero-drift random walk in log price whose variance
    is forecast at each origin from the stock's closes up to that origin, nothing later. Subclasses say how."""

    supports_probabilistic_prediction = True

    def _predict(self, tests: list[forecast_windows.TestWindow]) -> Forecasts:
        return Forecasts([baselines.persistence(w) for w in tests], [self.closes(w) for w in tests])

    def closes(self, w: forecast_windows.TestWindow, center=None) -> np.ndarray | None:
        """QUANTILE_DRAWS × future closes around `center` (default: the last close), or None without history."""
        variances, unit = self.variances(risk_models.log_returns(w.history["Close"]), w.code, w.window.future)
        if variances is None or not np.all(np.isfinite(variances)):
            return None
        return risk_models.closes_from_variances(w.last_close if center is None else center, variances, unit)

    def variances(self, returns: np.ndarray, code: str, horizon: int):
        """(variances of the cumulative log return to each step, the unit quantiles) or (None, None)."""
        raise NotImplementedError


class EwmaRandomWalk(VolatilityRandomWalk):
    """RiskMetrics: a Gaussian random walk whose daily variance is the EWMA (lambda 0.94) of squared log
    returns up to the origin. Nothing is fitted."""

    name = "ewma"

    def __init__(self):
        self.unit = risk_models.standard_quantiles()

    def variances(self, returns, code, horizon):
        if len(returns) < 2:
            return None, None
        return risk_models.ewma_step_variances(returns, horizon), self.unit


class GarchRandomWalk(VolatilityRandomWalk):
    """GARCH(1,1) with Student-t innovations, fitted by `arch` per stock on its returns up to the history's
    last day (the adapter's last training day, or the day before the test period), then filtered with those
    parameters through each origin. A stock with too short a history, or whose fit fails, gets the EWMA
    (counted in `figures`)."""

    name = "garch"

    def __init__(self):
        self.fitted: dict[str, risk_models.Garch | None] = {}
        self.fallback = EwmaRandomWalk()

    def _fit(self, history: History) -> None:
        self.fitted = {
            code: risk_models.fit_garch(risk_models.log_returns(frame.loc[frame.index <= history.last_day, "Close"]))
            for code, frame in history.prices.items()
        }
        missing = sorted(code for code, g in self.fitted.items() if g is None)
        if missing:
            log.info("GARCH: no fit for %d stock(s) (%s): the EWMA stands in", len(missing), ", ".join(missing))

    def variances(self, returns, code, horizon):
        garch = self.fitted.get(code)
        if garch is None:
            return self.fallback.variances(returns, code, horizon)
        return garch.step_variances(100 * returns, horizon) / 1e4, risk_models.standard_quantiles(nu=garch.nu)

    def _predict(self, tests: list[forecast_windows.TestWindow]) -> Forecasts:
        out = super()._predict(tests)
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

    def _fit(self, history: History) -> None:
        from llm import lstm

        cutoff = history.cutoff
        if cutoff is None:  # no adapter: the same rule as `sft_data.build`, on the training days
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

    def _predict(self, tests: list[forecast_windows.TestWindow]) -> Forecasts:
        from llm import lstm

        points: list = [None] * len(tests)
        for window, fitted in self.fitted.items():
            index = [i for i, w in enumerate(tests) if w.window == window]
            if not index:
                continue
            out = lstm.predict_lstm(fitted, [baselines.window_features(tests[i].past) for i in index])
            for i, pred in zip(index, out, strict=True):
                points[i] = baselines.targets_to_candles(pred, tests[i].last_close)
        tested = {t.window for t in tests}
        return Forecasts(points, figures={w.name: f["figures"] for w, f in self.fitted.items() if w in tested})


def _xy(windows: list) -> tuple[list, list]:
    """(features, targets) of (code, past, future) windows: the LSTM's inputs and its log-ratio targets."""
    x = [baselines.window_features(past) for _, past, _ in windows]
    y = [baselines.window_targets(future, float(past["Close"].iloc[-1])) for _, past, future in windows]
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
