"""The forecaster interface of a walk-forward evaluation, as darts' `ForecastingModel` has it: `fit` on a `History`
(what the training period offers) returns the forecaster, `predict` test windows into `Forecasts` (refused before
`fit`), and `supports_probabilistic_prediction` says whether the forecasts carry a distribution.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from config.data_args import WindowType
from evaluation.forecast_windows import TestWindow
from market.company_list import Company
from utils import StockToolError


@dataclass(frozen=True)
class History:
    """What a forecaster may learn from. `prices` end on `last_day`: the adapter's last training day, or the
    day before the test period. `cutoff` is the adapter's train/validation cutoff (None without one)."""

    prices: dict[str, pd.DataFrame]
    companies: tuple[Company, ...]
    windows: tuple[WindowType, ...]
    fields: tuple[str, ...]
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


class Forecaster(ABC):
    """`fit(history)` → the forecaster, then `predict(tests)`; `close()` frees what it holds. `calibration` is set by
    a fit that calibrates its bands on held-out days (the LLMs)."""

    name = "forecaster"
    calibration = None
    supports_probabilistic_prediction = False
    _history: History | None = None

    def fit(self, history: History) -> Forecaster:
        """Learn from the training period (`_fit`; a naive baseline has nothing to learn)."""
        self._fit(history)
        self._history = history
        return self

    def predict(self, tests: list[TestWindow]) -> Forecasts:
        if self._history is None:
            raise StockToolError(f"the {self.name} forecaster predicts only after fit")
        return self._predict(tests)

    def _fit(self, history: History) -> None:  # noqa: B027 (a forecaster with nothing to learn keeps it)
        """What `fit` learns (nothing, by default)."""

    @abstractmethod
    def _predict(self, tests: list[TestWindow]) -> Forecasts: ...

    def close(self) -> None:  # noqa: B027 (one that holds nothing keeps it)
        """Free what the forecaster holds (a model, its memory) before the next one runs."""
