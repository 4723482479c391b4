"""The forecast's candlestick chart (mplfinance)."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from forecasting.reading import Forecast, band_levels

CHART_STYLES = {
    # (up, down) of the known candles; Taiwan's convention is red up, green down
    "international": ("#26a69a", "#ef5350"),
    "taiwan": ("#ef5350", "#26a69a"),
}


CHART_DAYS = 30  # known trading days a forecast chart shows at least (more than the prompt's, to judge it by)


def chart_history(result: Forecast) -> pd.DataFrame:
    """The known days a chart draws: the last CHART_DAYS (or `past`, when longer) of `result.shown`, the stock's
    prices up to the last known day (without them, of `past`)."""
    known = result.past if result.shown is None else result.shown
    return known.iloc[-max(CHART_DAYS, len(result.past)) :]


def no_band_reason(result: Forecast) -> str:
    """Why a forecast has no band, in words ('' when it has one)."""
    if result.bands is not None:
        return ""
    return next(
        (n for n in result.notes if n.startswith("no band")),
        "no band: no calibration for this adapter and decoding (an evaluation, --evaluate 1, makes one), and a "
        "single greedy answer has no spread (--samples above 1 gives a sampled band)",
    )


def _subtitle_and_band(result: Forecast, past: pd.DataFrame) -> tuple[str, dict]:
    """(the chart's subtitle, mplfinance's fill_between for the close's band when there is one)."""
    prompt_days, future, extra = len(result.past), len(result.forecast), {}
    days = "day" if future == 1 else f"{future} days"
    subtitle = f"forecast {days} right of the dashed line (blue up / orange down) from the {prompt_days} known"
    subtitle += " day shaded grey" if prompt_days == 1 else " days shaded grey"
    if result.bands is not None:
        (label, (lo, hi)), *_ = band_levels(result.band).items()
        last_close = [math.nan] * (len(past) - 1) + [float(past["Close"].iloc[-1])]  # the band starts there
        low = last_close + list(result.bands[f"q{lo:g}"])
        high = last_close + list(result.bands[f"q{hi:g}"])
        extra["fill_between"] = {"y1": np.array(low), "y2": np.array(high), "alpha": 0.2, "color": "tab:blue"}
        kind = f" ({result.band_kind})" if result.band_kind else ""
        subtitle += f"; shaded blue: the {label} band{kind} of the close, from {result.band_source}"
    return subtitle, extra


def _mark_up(axes, result: Forecast, combined: pd.DataFrame, shown: tuple[int, bool]) -> None:
    """The dashed line before the forecast, the prompt's days shaded, the notes box, one date label per few
    days; `shown` = (known days on the chart, whether volume is drawn)."""
    (known, volume), prompt_days, forecast = shown, len(result.past), result.forecast
    step = max(1, math.ceil(len(combined) / 12))
    for ax in axes:
        ax.axvline(known - 0.5, linestyle="--", color="gray", linewidth=1)
        if volume and ax.get_ylabel().startswith("Volume"):  # room for the forecast's bars too
            ax.set_ylim(0, 1.05 * max(combined["Volume"].iloc[:known].max(), forecast["Volume"].max()))
    if known > prompt_days:  # the days the model was shown
        axes[0].axvspan(known - prompt_days - 0.5, known - 0.5, color="0.5", alpha=0.12, linewidth=0)
    said = [no_band_reason(result)] + (["point forecast = persistence (weight 0)"] if result.weight == 0 else [])
    if any(said):
        box = {"boxstyle": "round", "facecolor": "white", "edgecolor": "0.6", "alpha": 0.9}
        text = "\n".join(textwrap.fill(line, 70) for line in said if line)
        axes[0].text(0.01, 0.98, text, transform=axes[0].transAxes, va="top", fontsize=8, bbox=box, zorder=5)
    axes[0].set_xticks(range(0, len(combined), step))
    axes[-1].set_xticks(range(0, len(combined), step))
    axes[-1].set_xticklabels([f"{d:%m-%d}" for d in combined.index[::step]], rotation=45)


def plot_forecast(result: Forecast, out_dir: Path, chart_style: str = "international") -> Path:
    """Candles of at least CHART_DAYS known days (the prompt's shaded grey) then the forecast days (blue up /
    orange down, after a dashed line across the price and volume panels), the close's band shaded, or a note
    saying why there is none. One date label per few trading days (about 12 of them), and forecast-day volume
    in grey: it is a forecast, not a fact. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import mplfinance as mpf

    past, forecast, prompt_days = chart_history(result), result.forecast, len(result.past)
    columns = ["Open", "High", "Low", "Close", "Volume"]
    combined = pd.concat([past[columns], forecast.reindex(columns=columns)])
    up, down = CHART_STYLES[chart_style]
    colors = mpf.make_marketcolors(up=up, down=down, edge="inherit", wick="inherit", volume="in")
    style = mpf.make_mpf_style(base_mpf_style="yahoo", marketcolors=colors)
    forecast_colors = mpf.make_marketcolors(up="tab:blue", down="tab:orange", edge="inherit", wick="inherit")
    predicted = [forecast_colors] * len(forecast)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{result.code}_{past.index[-1]:%Y%m%d}_{prompt_days}to{len(forecast)}.png"
    tmp = path.with_name(f".{path.name}.tmp.png")
    title = f"{result.code} {result.name_en}".strip()
    subtitle, extra = _subtitle_and_band(result, past)
    volume = "Volume" in forecast.columns and not combined["Volume"].isna().any()
    if volume:  # forecast volume as grey bars of its own, known volume in the style's colours
        forecast_volume = combined["Volume"].where(combined.index.isin(forecast.index))
        combined.loc[forecast.index, "Volume"] = 0.0
        extra["addplot"] = [mpf.make_addplot(forecast_volume, type="bar", panel=1, color="lightgray", width=0.8)]
    fig, axes = mpf.plot(
        combined,
        type="candle",
        volume=volume,
        style=style,
        marketcolor_overrides=[None] * len(past) + predicted,
        title={"title": title + "\n" + textwrap.fill(subtitle, 100), "fontsize": 10},
        figsize=(10, 6),
        returnfig=True,
        **extra,
    )
    _mark_up(axes, result, combined, (len(past), volume))
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    matplotlib.pyplot.close(fig)
    tmp.replace(path)
    return path
