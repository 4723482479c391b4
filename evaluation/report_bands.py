"""What each model's band in an evaluation report is: the words of its rows and of its band's source."""

from __future__ import annotations

from evaluation.metrics import REFERENCES
from evaluation.report_plots import LABELS


def band_source_lines(context: dict) -> list[str]:
    """Where the LLMs' bands came from: their errors on held-out days (calibrated) or their samples."""
    lines = []
    if context.get("config", {}).get("decoding", {}).get("samples", 1) > 1:
        lines.append("- Sampled LLM forecasts: the point forecast is the per-field median of the usable samples.")
    if context.get("bands", "samples") == "samples":
        return lines + ["- LLM bands: the quantiles of the usable samples (none for greedy forecasts)."]
    for name, cal in (context.get("calibration") or {}).items():
        if cal.get("usable"):
            lines.append(
                f"- {LABELS.get(name, name)} bands: its point forecast spread by its own close errors on "
                f"{cal['usable']:,} held-out forecasts with targets {cal['start']} → {cal['end']} (after its training "
                "cutoff, before the test period; `calibration.py`)."
            )
            for window, weight in (cal.get("weights") or {}).items():
                mape = cal["weighing"][window]
                lines.append(
                    f"  - {window}: point forecast = last close + {weight:g} × (the model's forecast − last close), "
                    f"the weight with the lowest close MAPE on those days ({mape['weighted']:.3f}%; as generated "
                    f"{mape['model']:.3f}%, persistence {mape['persistence']:.3f}%)."
                    + (" With weight 0, **this point forecast is persistence**." if weight == 0 else "")
                )
            for window, family in (cal.get("families") or {}).items():
                crps = ", ".join(f"{k} {v:.3f}" for k, v in (cal.get("family_crps") or {}).get(window, {}).items())
                lines.append(
                    f"  - {window}: the band is {FAMILY_WORDS.get(family, family)}, the family with the lowest CRPS "
                    f"% on those days ({crps}; the model's own errors scored cross-fitted over two halves)."
                )
            lines.append(
                "  - Coverage: each band's level adapted online over the test period (adaptive conformal inference, "
                "Gibbs & Candès 2021, step 0.005 per known outcome, per window type and horizon step, from outcomes "
                "known at each origin only); the fixed level's coverage is beside it in brackets."
            )
        else:
            lines.append(f"- {LABELS.get(name, name)}: no band; {'; '.join(cal.get('notes') or ['not calibrated'])}.")
    return lines


FAMILY_WORDS = {
    "conformal": "the model's own held-out errors, scaled by volatility (conformal)",
    "ewma": "the EWMA random walk around the point forecast",
    "garch": "the GARCH(1,1)-t random walk around the point forecast",
    "quantiles": "the quantiles of its sampled closes, conformalized on those days (CQR)",
}


BAND_WORDS = {
    "random_walk": "past returns",
    "ewma": "EWMA",
    "garch": "GARCH-t",
    "conformal": "conformal errors",
    "quantiles": "sample quantiles, conformalized",
}


def band_used(context: dict, model: str, window: str) -> str:
    """The band a model's rows of one window type used, in a few words: a reference's own; a calibrated LLM's
    family for that window (conformal errors, sample quantiles, or the EWMA/GARCH walk around its point), its
    level adapted online (ACI); sampled; or "" for a model without one."""
    if model in REFERENCES:
        return BAND_WORDS[model]
    cal = (context.get("calibration") or {}).get(model) or {}
    if cal.get("usable") and context.get("bands") == "calibrated":
        family = (cal.get("families") or {}).get(window, "conformal")
        if family == "quantiles" and str((context.get("config") or {}).get("decoding", {}).get("samples", 1)) == "1":
            family = "conformal"
        return f"{BAND_WORDS.get(family, family)}, ACI"
    return "sampled" if context.get("bands") == "samples" and not model.endswith("_raw") else ""


def band_kind(context: dict, model: str) -> str:
    """What a model's band is, in a word or two: calibrated (its errors on held-out days), sampled, or a
    reference's (persistence spread by past returns)."""
    if model in REFERENCES:
        return "a reference's"
    if model in (context.get("calibration") or {}) and context.get("bands") == "calibrated":
        return "calibrated" if (context["calibration"][model] or {}).get("usable") else ""
    return "sampled" if context.get("bands") == "samples" else ""
