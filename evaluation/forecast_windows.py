"""Test windows: one forecast made at an origin for the next `future` trading days, as it could have been
made that evening.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from config.data_args import OHLC, WindowType


@dataclass(frozen=True)
class TestWindow:
    code: str
    name: str
    window: WindowType
    history: pd.DataFrame  # every known day up to and including the origin (as-of: nothing later)
    actual: pd.DataFrame  # the `future` trading days after the origin

    @property
    def origin(self) -> pd.Timestamp:
        return self.history.index[-1]

    @property
    def past(self) -> pd.DataFrame:
        """The days the LLM's prompt shows."""
        return self.history.iloc[-self.window.past :]

    @property
    def last_close(self) -> float:
        return float(self.history["Close"].iloc[-1])


def test_windows(
    frame: pd.DataFrame, company: tuple[str, str], window: WindowType, period: tuple, stride: int = 1, columns=None
) -> list[TestWindow]:
    """Forecasts of `company` (code, name) whose every target day lies in `period` (the test period's first and
    last day), origins `stride` days apart.

    The first origin is the last trading day before the period; history is cut at the origin, so a window can
    never see its own targets. Windows with a blank value in `columns` are skipped.
    """
    (code, name), (test_start, test_end) = company, period
    index = frame.index
    needed = frame[columns or OHLC].notna().all(axis=1).to_numpy()  # the prompt's fields, all present
    windows = []
    first = int(index.searchsorted(test_start))  # first target day
    for target in range(max(first, window.past), len(frame) - window.future + 1, stride):
        origin = target - 1
        last = target + window.future - 1
        if index[last] > test_end:
            break
        if not needed[target - window.past : last + 1].all():
            continue
        windows.append(TestWindow(code, name, window, frame.iloc[: origin + 1], frame.iloc[target : last + 1]))
    return windows
