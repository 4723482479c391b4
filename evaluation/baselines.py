"""The naive baselines (persistence, drift, moving average), the random walk of past returns, and the LSTM's
features: pure functions of a test window.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from config.data_args import OHLC
from evaluation.forecast_windows import TestWindow

BASELINE_LOOKBACK = 20  # trading days of history the drift and moving-average baselines look at


def persistence(w: TestWindow) -> np.ndarray:
    """Tomorrow = today: the last known candle repeated for every step (future × OHLC)."""
    return np.tile(w.history[OHLC].iloc[-1].to_numpy(dtype=float), (w.window.future, 1))


def drift(w: TestWindow, lookback: int = BASELINE_LOOKBACK) -> np.ndarray:
    """The last candle moved along the straight line through the closes of the last `lookback` days."""
    closes = w.history["Close"].iloc[-(lookback + 1) :].to_numpy(dtype=float)
    slope = (closes[-1] - closes[0]) / (len(closes) - 1) if len(closes) > 1 else 0.0
    steps = np.arange(1, w.window.future + 1, dtype=float)[:, None]
    return persistence(w) + slope * steps


def moving_average(w: TestWindow, lookback: int = BASELINE_LOOKBACK) -> np.ndarray:
    """The mean candle of the last `lookback` days, for every step."""
    mean = w.history[OHLC].iloc[-lookback:].to_numpy(dtype=float).mean(axis=0)
    return np.tile(mean, (w.window.future, 1))


BASELINES = {"persistence": persistence, "drift": drift, "moving_average": moving_average}


def window_features(past: pd.DataFrame) -> np.ndarray:
    """(past, 5): log of open/high/low/close over the last close, and log volume over the window's mean."""
    last_close = float(past["Close"].iloc[-1])
    prices = np.log(past[OHLC].to_numpy(dtype=float) / last_close)
    volume = past["Volume"].to_numpy(dtype=float) if "Volume" in past else np.ones(len(past))
    volume = np.nan_to_num(volume, nan=0.0) + 1.0
    return np.concatenate([prices, np.log(volume / volume.mean())[:, None]], axis=1).astype(np.float32)


def window_targets(future: pd.DataFrame, last_close: float) -> np.ndarray:
    """(future, 4): log of open/high/low/close over the origin's close."""
    return np.log(future[OHLC].to_numpy(dtype=float) / last_close).astype(np.float32)


def targets_to_candles(log_ratios: np.ndarray, last_close: float) -> np.ndarray:
    """Invert `window_targets`, then make each row a candle (high the highest, low the lowest)."""
    candles = last_close * np.exp(np.asarray(log_ratios, dtype=float))
    high, low = candles.max(axis=1), candles.min(axis=1)
    candles[:, 1], candles[:, 2] = high, low
    return candles


def horizon_returns(frame: pd.DataFrame, horizon: int, last_day: pd.Timestamp) -> np.ndarray:
    """Every `horizon`-day close-to-close return of a stock whose end day is on or before `last_day`
    (the training days: nothing from the test period)."""
    closes = frame.loc[frame.index <= last_day, "Close"].dropna().to_numpy(dtype=float)
    if len(closes) <= horizon:
        return np.empty(0)
    return closes[horizon:] / closes[:-horizon] - 1


def random_walk_returns(prices: dict, windows, last_day: pd.Timestamp, minimum: int = 20) -> dict:
    """{(code, horizon): returns} for the probabilistic random walk: persistence, spread by the stock's own
    past `horizon`-day returns up to `last_day`; a stock with fewer than `minimum` uses all stocks' pooled."""
    table: dict = {}
    for horizon in sorted({step for w in windows for step in range(1, w.future + 1)}):
        own = {code: horizon_returns(frame, horizon, last_day) for code, frame in prices.items()}
        pooled = np.concatenate([r for r in own.values() if len(r)]) if any(len(r) for r in own.values()) else None
        for code, returns in own.items():
            table[(code, horizon)] = returns if len(returns) >= minimum or pooled is None else pooled
    return table


def random_walk_samples(w: TestWindow, returns: dict) -> np.ndarray | None:
    """The random walk's closes for every step of `w` (n × future), or None without history."""
    columns = [returns.get((w.code, step)) for step in range(1, w.window.future + 1)]
    if any(c is None or not len(c) for c in columns):
        return None
    n = min(len(c) for c in columns)
    return w.last_close * (1 + np.stack([np.sort(c)[np.linspace(0, len(c) - 1, n).astype(int)] for c in columns], 1))
