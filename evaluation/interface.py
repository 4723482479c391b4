"""The forecaster interface of a walk-forward evaluation, as darts' models have it: `fit` on a `History`,
then `predict` test windows into `Forecasts`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from config import data_args
from evaluation import forecast_windows
from market.company_list import Company


@dataclass
class History:
    """What a forecaster may learn from. `prices` end on `last_day`: the adapter's last training day, or the
    day before the test period. `cutoff` is the adapter's train/validation cutoff (None without one)."""

    prices: dict[str, pd.DataFrame]
    companies: list[Company]
    windows: list[data_args.WindowType]
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

    def predict(self, tests: list[forecast_windows.TestWindow]) -> Forecasts:
        raise NotImplementedError

    def close(self) -> None:
        """Free what the forecaster holds (a model, its memory) before the next one runs."""
