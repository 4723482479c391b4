"""The forecasts' page (`index.html` beside the charts): every stock asked for, its verdict, band and chart."""

from __future__ import annotations

from pathlib import Path

from forecasting.html import _made, _title, embedded, escape_markdown, markdown_html, page
from utils import atomic_write_text

FORECAST_PAGE = "index.html"


PERSISTENCE = "this point forecast is persistence"  # said wherever a window type's point weight is 0


def _money(value: float) -> str:
    return f"{value:,.2f}"


def _change(value: float, base: float) -> str:
    return f"{100 * (value / base - 1):+.2f}%"


def band_words(result) -> str:
    """What a forecast's band is (calibrated, sampled, or whatever source set it), or why it has none."""
    from forecasting import chart, reading

    if result.bands is None:
        return chart.no_band_reason(result)
    label = next(iter(reading.band_levels(result.band)))
    kind = f" ({result.band_kind})" if getattr(result, "band_kind", "") else ""
    return f"{label} band{kind} from {result.band_source or 'an unnamed source'}"


def weight_words(result) -> str:
    """The point forecast's weight in words ('' at weight 1: the model's forecast as generated)."""
    if result.weight == 0:
        return (
            f"Point forecast: {PERSISTENCE} (the last close). On held-out days the model's predicted change did "
            "no better than 'tomorrow = today', so the calibration weighs it 0; the band is what this forecast adds."
        )
    if result.weight != 1:
        return (
            f"Point forecast: the last close + {result.weight:g} × the model's predicted change (the weight with the "
            "lowest error on held-out days; 0 would be persistence)."
        )
    return ""


def _verdict(result) -> str:
    """The forecast in one or two sentences."""
    from forecasting import reading

    last_day, last_close = result.past.index[-1], float(result.past["Close"].iloc[-1])
    closes = result.forecast["Close"]
    first_day, first = closes.index[0], float(closes.iloc[0])
    words = (
        f"**Close forecast for {first_day:%Y-%m-%d}: {_money(first)}** ({_change(first, last_close)} from "
        f"{_money(last_close)} on {last_day:%Y-%m-%d})"
    )
    if len(closes) > 1:
        end_day, end = closes.index[-1], float(closes.iloc[-1])
        words += f"; **{_money(end)} by {end_day:%Y-%m-%d}** ({_change(end, last_close)})"
    words += "."
    if result.bands is not None:
        label, (lo, hi) = next(iter(reading.band_levels(result.band).items()))
        low, high = (float(result.bands[f"q{q:g}"].iloc[-1]) for q in (lo, hi))
        words += f" Its {label} band on {closes.index[-1]:%Y-%m-%d}: {_money(low)} to {_money(high)}."
    else:
        words += " No band: see below."
    if result.weight == 0:
        words += f" Note: {PERSISTENCE}."
    return words


def _column(name: str) -> str:
    if name.startswith("Close_q"):
        return f"close {100 * float(name[7:]):g}%"
    return name.lower()


def _forecast_table(result) -> list[str]:
    from forecasting import forecast_files

    frame = forecast_files.forecast_frame(result)
    head = ["date", *(_column(c) for c in frame.columns)]
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * len(frame.columns)]
    for day, row in frame.iterrows():
        cells = [f"{v:,.0f}" if c == "Volume" else _money(v) for c, v in row.items()]
        lines.append(f"| {day:%Y-%m-%d} | " + " | ".join(cells) + " |")
    return lines


def _stock(result) -> str:
    english = f" ({result.name_en})" if result.name_en else ""
    return escape_markdown(f"{result.code} {result.name}{english}")


def _summary_rows(results) -> list[str]:
    lines = [
        "| stock | last known day | last close | forecast close | change | band |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        last = f"{r.past.index[-1]:%Y-%m-%d} | {_money(float(r.past['Close'].iloc[-1]))}"
        if r.forecast is None:
            lines.append(f"| {_stock(r)} | {last} | no usable forecast | — | — |")
            continue
        end_day, end = r.forecast.index[-1], float(r.forecast["Close"].iloc[-1])
        band = "none" if r.bands is None else escape_markdown(_band_kind(r))
        change = _change(end, float(r.past["Close"].iloc[-1]))
        lines.append(f"| {_stock(r)} | {last} | {_money(end)} ({end_day:%Y-%m-%d}) | {change} | {band} |")
    return lines


def _band_kind(result) -> str:
    from forecasting import reading

    label = next(iter(reading.band_levels(result.band)))
    return f"{label}, {result.band_kind}" if getattr(result, "band_kind", "") else label


def forecast_index(results, decoding=None) -> str:
    """The markdown of a run's forecasts page: a summary table, then each stock's verdict in words, what its band
    is, its weight, its notes, its chart and its table (or, for a failure, the problem and the raw answer)."""
    from forecasting import chart

    def days(counts: set) -> str:
        return "/".join(map(str, sorted(counts))) + (" trading day" if counts == {1} else " trading days")

    past = {len(r.past) for r in results}
    future = {len(r.forecast) for r in results if r.forecast is not None}
    lines = [
        f"# Forecasts: {len(results)} stock{'s' if len(results) != 1 else ''}",
        "",
        f"Each stock's next {days(future) if future else 'trading days'}, forecast from its latest {days(past)}"
        + (f"; decoding: {escape_markdown(decoding.describe())}" if decoding is not None else "")
        + ". A forecast of a stock price is uncertain: read the band, not only the line.",
        "",
        *_summary_rows(results),
    ]
    for r in results:
        lines += ["", f"## {_stock(r)}", ""]
        if r.forecast is None:
            lines += ["**No usable forecast.** The model's answer is reported as it was, never repaired:", ""]
            lines += [f"- {escape_markdown(p)}" for p in r.problems]
            lines += ["", "```", r.raw_answer, "```"]
            continue
        lines += [_verdict(r), ""]
        band = band_words(r)
        band = "No band" + band[len("no band") :] if band.startswith("no band") else f"Band: {band}"
        lines.append(f"- {escape_markdown(band)}.")
        if weight_words(r):
            lines.append(f"- {escape_markdown(weight_words(r))}")
        if r.samples > 1:
            lines.append(f"- Point forecast: the per-field median of {r.usable_samples} usable of {r.samples} answers.")
        said = ("no band", "point forecast:")  # said above, in the band's and the weight's words
        lines += [f"- Note: {escape_markdown(n)}" for n in r.notes if not n.startswith(said)]
        if r.chart:
            alt = (
                f"{r.code}: the last {len(chart.chart_history(r))} known trading days (shaded grey: the prompt's "
                f"{len(r.past)}), then the forecast right of the dashed line"
                + (", with its band" if r.bands is not None else "; no band")
            )
            lines += ["", f"![{escape_markdown(alt)}]({Path(r.chart).name})"]
        lines += ["", *_forecast_table(r)]
        files = [f"[{Path(p).suffix[1:].upper()}]({Path(p).name})" for p in r.files]
        if files:
            lines += ["", "Files beside this page: " + ", ".join(files) + "."]
    return "\n".join(lines) + "\n"


def write_forecast_index(folder: Path, results, decoding=None) -> Path:
    """`folder/index.html`: the run's forecasts (every code asked for), charts inline."""
    markdown = forecast_index(results, decoding)
    body = markdown_html(markdown, embedded(folder))
    return atomic_write_text(
        Path(folder) / FORECAST_PAGE, page(_title(markdown, "Forecasts"), body, markdown_html(_made()))
    )
