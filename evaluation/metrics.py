"""Scores of forecasts, as pure functions: per-row errors, CRPS and pinball loss, metrics with block-bootstrap
intervals, the Diebold–Mariano test, skills against persistence and the best simple reference.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from config.data_args import OHLC
from evaluation.forecast_windows import TestWindow
from forecasting.reading import QUANTILES, sample_quantiles

# the simple probabilistic references, each scored on every row that has a distribution: persistence spread by
# past returns (forecasters.RandomWalk), RiskMetrics' EWMA and GARCH(1,1)-t random walks (risk_models.py)
REFERENCES = ("random_walk", "ewma", "garch")


def crps_ensemble(samples: np.ndarray, actual: float) -> float:
    """The continuous ranked probability score of an ensemble: E|X − y| − ½ E|X − X'| (lower is better).
    O(K log K) through the sorted form of the second term."""
    x = np.sort(np.asarray(samples, dtype=float))
    n = len(x)
    spread = 2 * np.sum((2 * np.arange(1, n + 1) - n - 1) * x) / n**2
    return float(np.mean(np.abs(x - actual)) - 0.5 * spread)


def pinball_loss(quantiles: np.ndarray, actual: float, levels=QUANTILES) -> float:
    """The mean quantile (pinball) loss over `levels`: τ·(y − q) above the quantile, (1 − τ)·(q − y) below."""
    diff = actual - np.asarray(quantiles, dtype=float)
    tau = np.asarray(levels, dtype=float)
    return float(np.mean(np.maximum(tau * diff, (tau - 1) * diff)))


def forecast_rows(
    model: str,
    windows: list[TestWindow],
    predictions: list[np.ndarray | None],
    distributions: list[np.ndarray | None] | None = None,
    references: dict[str, list] | None = None,
    bands: dict[str, list] | None = None,
) -> pd.DataFrame:
    """One row per model × window × horizon step. A failed forecast (None) keeps its rows, marked invalid.

    `distributions` (a probabilistic model's closes, samples × future, per window) add the quantiles of
    QUANTILES, CRPS and pinball loss, all in % of the origin's close; `references` (REFERENCES' distributions,
    by name) add each one's CRPS on the same row (`ref_crps_<name>`), for skills on the same forecasts. `bands`
    ({"80": …, "95": …}: per window, future × (low, high) closes, or None) are the bands whose coverage counts,
    when they are not the distribution's fixed quantiles (adaptive conformal inference)."""
    records = []
    for i, (w, pred) in enumerate(zip(windows, predictions, strict=True)):
        actual = w.actual[OHLC].to_numpy(dtype=float)
        dist = distributions[i] if distributions is not None and pred is not None else None
        refs = {name: dists[i] for name, dists in (references or {}).items()}
        for step in range(w.window.future):
            row = {
                "model": model,
                "code": w.code,
                "window": w.window.name,
                "origin": w.origin,
                "step": step + 1,
                "target_date": w.actual.index[step],
                "last_close": w.last_close,
                "valid": pred is not None,
            }
            for j, column in enumerate(OHLC):
                row[f"actual_{column.lower()}"] = actual[step, j]
                row[f"pred_{column.lower()}"] = float(pred[step, j]) if pred is not None else math.nan
            row |= _distribution_scores(dist, refs, step, w.last_close, actual[step, 3])
            for level, edges in (bands or {}).items():
                edge = edges[i] if dist is not None else None
                row[f"band{level}_lo"] = math.nan if edge is None else float(edge[step, 0])
                row[f"band{level}_hi"] = math.nan if edge is None else float(edge[step, 1])
            records.append(row)
    return pd.DataFrame.from_records(records)


def _distribution_scores(dist, refs: dict, step: int, last_close: float, actual: float) -> dict:
    """Quantiles, CRPS and pinball loss of one step's forecast distribution, in % of the origin's close."""
    out = {f"q{round(1000 * q):04d}": math.nan for q in QUANTILES}
    out |= {"crps": math.nan, "pinball": math.nan} | {f"ref_crps_{name}": math.nan for name in REFERENCES}
    scale = 100 / last_close
    target = (actual - last_close) * scale
    for name, ref in refs.items():
        if ref is not None:
            out[f"ref_crps_{name}"] = crps_ensemble((ref[:, step] - last_close) * scale, target)
    if dist is None:
        return out
    values = (np.asarray(dist, dtype=float)[:, step] - last_close) * scale
    quantiles = sample_quantiles(values)
    for q, value in zip(QUANTILES, quantiles, strict=True):
        out[f"q{round(1000 * q):04d}"] = last_close + value / scale
    out["crps"] = crps_ensemble(values, target)
    out["pinball"] = pinball_loss(quantiles, target)
    return out


def add_errors(rows: pd.DataFrame) -> pd.DataFrame:
    """Per-row errors. Direction is up vs not up relative to the origin's close; an invalid forecast
    is never right about direction."""
    rows = rows.copy()
    for column in ("open", "high", "low", "close"):
        rows[f"abs_err_{column}"] = (rows[f"pred_{column}"] - rows[f"actual_{column}"]).abs()
    rows["sq_err_close"] = (rows["pred_close"] - rows["actual_close"]) ** 2
    rows["ape_close"] = 100 * rows["abs_err_close"] / rows["actual_close"].abs()
    rows["persist_abs_err_close"] = (rows["last_close"] - rows["actual_close"]).abs()
    rows["persist_ape_close"] = 100 * rows["persist_abs_err_close"] / rows["actual_close"].abs()
    rows["actual_up"] = rows["actual_close"] > rows["last_close"]
    rows["pred_up"] = rows["pred_close"] > rows["last_close"]
    rows["direction_right"] = rows["valid"] & (rows["pred_up"] == rows["actual_up"])
    rows["pred_return"] = 100 * (rows["pred_close"] / rows["last_close"] - 1)  # in %
    rows["actual_return"] = 100 * (rows["actual_close"] / rows["last_close"] - 1)
    rows["probabilistic"] = rows["valid"] & rows["crps"].notna() if "crps" in rows else False
    if "crps" in rows:
        actual = rows["actual_close"]
        for level, low, high in (("80", "q0100", "q0900"), ("95", "q0025", "q0975")):
            fixed = (rows[low] <= actual) & (actual <= rows[high])
            rows[f"covered{level}_fixed"] = fixed
            if f"band{level}_lo" in rows:  # adapted bands where a model has them, its fixed quantiles elsewhere
                adapted = rows[f"band{level}_lo"].notna()
                band = (rows[f"band{level}_lo"] <= actual) & (actual <= rows[f"band{level}_hi"])
                rows[f"covered{level}"] = band.where(adapted, fixed)
            else:
                rows[f"covered{level}"] = fixed
    return rows


# The columns summed per origin date; every metric below is a ratio of these sums, which is what lets
# the bootstrap resample dates and recompute each metric exactly.
_PROB_SUMS = [  # summed over rows with a distribution
    "covered80",
    "covered95",
    "crps",
    "pinball",
    *(f"ref_crps_{name}" for name in REFERENCES),
    "covered80_fixed",
    "covered95_fixed",
]


_SUMS = [
    "n",
    "valid",
    "abs_err_close",
    "sq_err_close",
    "ape_close",
    "persist_abs_err_close",
    "persist_ape_close",
    "abs_err_open",
    "abs_err_high",
    "abs_err_low",
    "direction_right",
    "actual_up",
    "pred_return",
    "actual_return",
    "probabilistic",
    *_PROB_SUMS,
]


_VALID_SUMS = _SUMS[2:10] + ["pred_return", "actual_return"]  # summed over valid rows


def _per_date_sums(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(dates, D × len(_SUMS) sums). Error sums and persistence's matched errors use valid rows only."""
    valid = rows["valid"].to_numpy()
    table = pd.DataFrame({"origin": rows["origin"].to_numpy(), "n": 1, "valid": valid.astype(float)})
    for column in _VALID_SUMS:
        table[column] = np.where(valid, rows[column].to_numpy(dtype=float), 0.0)
    table["direction_right"] = rows["direction_right"].to_numpy(dtype=float)
    table["actual_up"] = rows["actual_up"].to_numpy(dtype=float)
    probabilistic = rows["probabilistic"].to_numpy(dtype=bool) if "probabilistic" in rows else np.zeros(len(rows), bool)
    table["probabilistic"] = probabilistic.astype(float)
    for column in _PROB_SUMS:
        values = rows[column].to_numpy(dtype=float) if column in rows else np.zeros(len(rows))
        table[column] = np.where(probabilistic, values, 0.0)
    grouped = table.groupby("origin", sort=True)[_SUMS].sum()
    return grouped.index.to_numpy(), grouped.to_numpy(dtype=float)


def _metrics_from_sums(s: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics from column sums; works on one row of sums or on a (boot, k) matrix."""
    col = {name: s[..., i] for i, name in enumerate(_SUMS)}
    with np.errstate(divide="ignore", invalid="ignore"):
        valid = col["valid"]
        up_rate = col["actual_up"] / col["n"]
        return {
            "validity": col["valid"] / col["n"],
            "mae_close": col["abs_err_close"] / valid,
            "rmse_close": np.sqrt(col["sq_err_close"] / valid),
            "mape_close": col["ape_close"] / valid,
            "mae_open": col["abs_err_open"] / valid,
            "mae_high": col["abs_err_high"] / valid,
            "mae_low": col["abs_err_low"] / valid,
            "persistence_mape_close": col["persist_ape_close"] / valid,
            "skill_mae": 1 - col["abs_err_close"] / col["persist_abs_err_close"],
            "skill_mape": 1 - col["ape_close"] / col["persist_ape_close"],
            "directional_accuracy": col["direction_right"] / col["n"],
            "majority_rate": np.maximum(up_rate, 1 - up_rate),
            "mean_forecast_return": col["pred_return"] / valid,  # % from the origin's close
            "mean_actual_return": col["actual_return"] / valid,
            "bias": (col["pred_return"] - col["actual_return"]) / valid,
            "coverage80": col["covered80"] / col["probabilistic"],
            "coverage95": col["covered95"] / col["probabilistic"],
            "coverage80_fixed": col["covered80_fixed"] / col["probabilistic"],  # without adaptive levels
            "coverage95_fixed": col["covered95_fixed"] / col["probabilistic"],
            "crps": col["crps"] / col["probabilistic"],  # % of the origin's close
            "pinball": col["pinball"] / col["probabilistic"],
            "random_walk_crps": col["ref_crps_random_walk"] / col["probabilistic"],
            "crps_skill": 1 - col["crps"] / col["ref_crps_random_walk"],
            **{f"{name}_crps": col[f"ref_crps_{name}"] / col["probabilistic"] for name in REFERENCES[1:]},
            **{f"crps_skill_{name}": 1 - col["crps"] / col[f"ref_crps_{name}"] for name in REFERENCES[1:]},
        }


def block_bootstrap_indices(n_dates: int, n_boot: int, block: int, seed: int) -> np.ndarray:
    """(n_boot, ≥n_dates) date indices: circular blocks of `block` consecutive dates, drawn with replacement.
    Blocks keep the serial correlation of neighbouring days (and of overlapping multi-day targets)."""
    block = max(1, min(block, n_dates))
    n_blocks = math.ceil(n_dates / block)
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n_dates, size=(n_boot, n_blocks))
    return ((starts[:, :, None] + np.arange(block)) % n_dates).reshape(n_boot, -1)[:, :n_dates]


CI_METRICS = (
    "mape_close",
    "skill_mape",
    "skill_mae",
    "directional_accuracy",
    "bias",
    "coverage80",
    "crps_skill",
    *(f"crps_skill_{name}" for name in REFERENCES[1:]),
)


def summarize(rows: pd.DataFrame, n_boot: int = 1000, block: int = 5, seed: int = 0) -> dict:
    """Point metrics and 95% block-bootstrap intervals (over origin dates) for one group of rows."""
    dates, sums = _per_date_sums(rows)
    point = {k: _clean(v) for k, v in _metrics_from_sums(sums.sum(axis=0)).items()}
    point["windows"] = int(rows.drop_duplicates(["code", "origin"]).shape[0])
    point["forecast_steps"] = int(len(rows))
    point["dates"] = len(dates)
    if len(dates) >= 2 and n_boot > 0:
        idx = block_bootstrap_indices(len(dates), n_boot, block, seed)
        boot = _metrics_from_sums(sums[idx].sum(axis=1))
        for name in CI_METRICS:
            values = boot[name][np.isfinite(boot[name])]
            point[f"{name}_ci95"] = (
                [_clean(np.percentile(values, 2.5)), _clean(np.percentile(values, 97.5))] if len(values) else None
            )
        point |= _dm_against_persistence(sums, int(rows["step"].max()))
    return point


def diebold_mariano(d, horizon: int = 1) -> tuple[float, float, float]:
    """(statistic, p of "worse", two-sided p) of the Diebold–Mariano test that the loss differential series `d`
    (model's loss − reference's, one value per forecast date) has mean 0. Its variance is Newey–West's HAC with
    `horizon` − 1 lags (multi-step forecasts overlap), with Harvey, Leybourne and Newbold's (1997) small-sample
    correction and Student-t tails with n − 1 degrees of freedom. "Worse": the model's loss is higher (d > 0).
    NaNs when the differential does not vary."""
    from scipy import stats

    d = np.asarray(d, dtype=float)
    n, lag = len(d), max(0, horizon - 1)
    if n < 3:
        return math.nan, math.nan, math.nan
    e = d - d.mean()
    variance = e @ e / n
    for k in range(1, min(lag, n - 1) + 1):
        variance += 2 * (1 - k / (lag + 1)) * (e[k:] @ e[:-k]) / n
    if not variance > 1e-18:
        return math.nan, math.nan, math.nan
    h = lag + 1
    stat = d.mean() / math.sqrt(variance / n) * math.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n)
    return stat, float(stats.t.sf(stat, n - 1)), float(2 * stats.t.sf(abs(stat), n - 1))


def _dm_against_persistence(sums: np.ndarray, horizon: int) -> dict:
    """The DM test of close APE against persistence's on the same valid rows, one mean differential per date."""
    col = {name: sums[:, i] for i, name in enumerate(_SUMS)}
    has = col["valid"] > 0
    d = (col["ape_close"][has] - col["persist_ape_close"][has]) / col["valid"][has]
    stat, worse, two_sided = diebold_mariano(d, horizon)
    return {"dm_stat": _clean(stat), "dm_p_worse": _clean(worse), "dm_p": _clean(two_sided)}


def _clean(value) -> float | None:
    value = float(value)
    return round(value, 6) if math.isfinite(value) else None


def metrics_table(rows: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict:
    """{model: {window: {"all": summary, "steps": {step: summary}}}}; rows from `add_errors`. Each summary of a
    model with a distribution also names the window's best simple reference and its CRPS skill against it."""
    table: dict = {}
    for (model, window), group in rows.groupby(["model", "window"], sort=False):
        entry = {"all": summarize(group, n_boot, seed=seed), "steps": {}}
        for step, by_step in group.groupby("step"):
            entry["steps"][int(step)] = summarize(by_step, n_boot=0)
        table.setdefault(model, {})[window] = entry
    for window in {w for entries in table.values() for w in entries}:
        best = best_reference(table, window)
        for entries in table.values():
            for summary in [entries[window]["all"], *entries[window]["steps"].values()] if window in entries else []:
                _skill_against(summary, best)
    return table


def best_reference(table: dict, window: str) -> str | None:
    """The simple reference (REFERENCES) with the lowest CRPS on `window`, among those the table holds."""
    scored = [
        (table[name][window]["all"]["crps"], name)
        for name in REFERENCES
        if window in table.get(name, {}) and table[name][window]["all"].get("crps") is not None
    ]
    return min(scored)[1] if scored else None


def _skill_against(summary: dict, best: str | None) -> None:
    """Adds `best_reference` and its CRPS and CRPS skill (with interval) to a summary."""
    summary["best_reference"] = best
    key = None if best is None else ("crps_skill" if best == "random_walk" else f"crps_skill_{best}")
    summary["best_reference_crps"] = None if best is None else summary.get(f"{best}_crps")
    summary["crps_skill_best"] = summary.get(key) if key else None
    summary["crps_skill_best_ci95"] = summary.get(f"{key}_ci95") if key else None


def verdict(summary: dict) -> str:
    """Plain words for a skill interval: better or worse than persistence only when the CI excludes 0."""
    if not summary.get("validity"):
        return "no usable forecasts"
    ci = summary.get("skill_mape_ci95")
    if not ci or ci[0] is None:
        return "too few dates to tell"
    if ci[0] > 0:
        return "beats persistence"
    if ci[1] < 0:
        return "loses to persistence"
    return "no detectable difference from persistence"
