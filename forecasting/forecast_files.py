"""A forecast as the user gets it: the printed table, and the CSV and JSON files beside its chart."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from forecasting.reading import Forecast, band_levels
from utils import atomic_write_text


def forecast_frame(result: Forecast) -> pd.DataFrame:
    """The forecast as one table: the point candle per day, then the close's band quantiles."""
    frame = result.forecast.copy()
    if result.bands is not None:
        frame = frame.join(result.bands.add_prefix("Close_"))
    return frame


def forecast_table(result: Forecast) -> str:
    if result.forecast is None:
        return ""
    return forecast_frame(result).to_string(float_format=lambda v: f"{v:,.2f}")


def write_forecast_files(result: Forecast, stem: Path) -> list[Path]:
    """`<stem>.csv` (one row per forecast day) and `<stem>.json` (the same, with the run's facts), atomically."""
    frame = forecast_frame(result)
    csv_path = atomic_write_text(stem.with_suffix(".csv"), frame.to_csv(index_label="Date", float_format="%.4f"))
    rows = [{"date": f"{d:%Y-%m-%d}", **{k: _plain(v) for k, v in row.items()}} for d, row in frame.iterrows()]
    record = {
        "code": result.code,
        "name": result.name,
        "last_known_day": f"{result.past.index[-1]:%Y-%m-%d}",
        "last_close": float(result.past["Close"].iloc[-1]),
        "samples": result.samples,
        "usable_samples": result.usable_samples,
        "band_source": result.band_source,
        "weight": result.weight,
        "bands": {k: [f"q{lo:g}", f"q{hi:g}"] for k, (lo, hi) in band_levels(result.band).items()}
        if result.bands is not None
        else {},
        "forecast": rows,
        "notes": result.notes,
    }
    json_path = atomic_write_text(stem.with_suffix(".json"), json.dumps(record, ensure_ascii=False, indent=2) + "\n")
    return [csv_path, json_path]


def _plain(value):
    value = float(value)
    return round(value, 4) if math.isfinite(value) else None


def print_forecast(result: Forecast) -> None:
    print(f"{result.code} {result.name}: last known day {result.past.index[-1]:%Y-%m-%d}")
    if result.forecast is not None:
        if result.samples > 1:
            print(
                f"point forecast: the per-field median of {result.usable_samples} usable of {result.samples} sampled "
                "answers"
            )
        if result.bands is not None:
            bands = ", ".join(f"Close_q{lo:g}…q{hi:g} the {k} band" for k, (lo, hi) in band_levels(result.band).items())
            print(f"{bands}, from {result.band_source}")
        print(forecast_table(result))
    for note in result.notes:
        print(f"note: {note}")
    if result.problems:
        print("The answer is not a usable forecast:")
        for problem in result.problems:
            print(f"  - {problem}")
        print("Raw model answer:\n" + result.raw_answer)
    if result.page:
        print(f"page: {result.page}")
    for path in result.files:
        print(f"forecast: {path}")
    if result.chart:
        print(f"chart: {result.chart}")
