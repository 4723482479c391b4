"""The evaluation report's plots (PNG) and its TensorBoard scalars."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

MODEL_ORDER = [
    "tuned",
    "tuned_raw",
    "base",
    "base_raw",
    "lstm",
    "drift",
    "moving_average",
    "persistence",
    "random_walk",
    "ewma",
    "garch",
]
LABELS = {
    "tuned": "LLM + LoRA (tuned)",
    "tuned_raw": "LLM + LoRA as generated (weight 1)",
    "base": "LLM untuned",
    "base_raw": "LLM untuned as generated (weight 1)",
    "lstm": "LSTM",
    "drift": "drift (20 days)",
    "moving_average": "moving average (20 days)",
    "persistence": "persistence (tomorrow = today)",
    "random_walk": "random walk (persistence + past returns)",
    "ewma": "EWMA random walk (RiskMetrics, λ 0.94)",
    "garch": "GARCH(1,1)-t random walk",
}


def ordered(models) -> list[str]:
    return sorted(models, key=lambda m: MODEL_ORDER.index(m) if m in MODEL_ORDER else len(MODEL_ORDER))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_error_by_step(table: dict, windows: list[str], path: Path) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(windows), figsize=(4.5 * len(windows), 3.6), squeeze=False)
    for ax, window in zip(axes[0], windows, strict=True):
        for model in ordered(table):
            steps = table[model].get(window, {}).get("steps", {})
            xs = sorted(steps)
            ys = [steps[x]["mape_close"] for x in xs]
            if any(y is not None for y in ys):
                ax.plot(xs, [float("nan") if y is None else y for y in ys], marker=".", label=LABELS.get(model, model))
        ax.set_title(f"window {window}")
        ax.set_xlabel("horizon step (trading days ahead)")
        ax.set_ylabel("MAPE of close, %")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_predicted_vs_actual(
    rows: pd.DataFrame, window: str, path: Path, samples: int = 3, band_kinds: dict | None = None
) -> None:
    """Next-day close forecasts against the actual close for a few stocks, with the 80% band of the first model
    (in report order) that forecast one, labelled with what it is (`band_kinds`: model → calibrated, …)."""
    plt = _pyplot()
    one = rows[(rows["window"] == window) & (rows["step"] == 1)]
    codes = list(dict.fromkeys(one["code"]))
    codes = (["2330"] if "2330" in codes else []) + [c for c in codes if c != "2330"]
    codes = codes[:samples]
    fig, axes = plt.subplots(len(codes), 1, figsize=(10, 3 * len(codes)), squeeze=False)
    for ax, code in zip(axes[:, 0], codes, strict=True):
        mine = one[one["code"] == code]
        actual = mine[mine["model"] == "persistence"].sort_values("target_date")
        ax.plot(actual["target_date"], actual["actual_close"], color="black", linewidth=2, label="actual")
        for model in ordered(mine["model"].unique()):
            if model == "persistence":
                continue
            m = mine[mine["model"] == model].sort_values("target_date")
            ax.plot(m["target_date"], m["pred_close"], marker=".", linewidth=1, label=LABELS.get(model, model))
        banded = [
            m
            for m in ordered(mine["model"].unique())
            if "q0100" in mine and mine.loc[mine["model"] == m, "q0100"].notna().any()
        ]
        if banded:
            m = mine[mine["model"] == banded[0]].sort_values("target_date")
            kind = (band_kinds or {}).get(banded[0])
            label = f"80% band of {LABELS.get(banded[0], banded[0])}" + (f" ({kind})" if kind else "")
            ax.fill_between(m["target_date"], m["q0100"], m["q0900"], color="tab:blue", alpha=0.15, label=label)
        ax.set_title(f"{code}: next-day close forecasts (window {window})")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_equity(backtests: dict, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 4))
    for model in ordered(backtests):
        daily = backtests[model]["daily_returns"]["strategy"]
        ax.plot(daily.index, (1 + daily).cumprod(), label=LABELS.get(model, model))
    hold = next(iter(backtests.values()))["daily_returns"]["buy_and_hold"]
    ax.plot(hold.index, (1 + hold).cumprod(), color="black", linestyle="--", label="buy and hold")
    ax.set_ylabel("equity (start = 1)")
    ax.set_title("Next-day long/flat strategies after costs")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


TENSORBOARD_METRICS = (
    "mape_close",
    "skill_mape",
    "directional_accuracy",
    "validity",
    "bias",
    "coverage80",
    "crps_skill",
    "crps_skill_best",
)


def tensorboard_scalars(table: dict) -> dict[str, list[tuple[int, float]]]:
    """The headline metrics as TensorBoard series: `eval/<metric>/<window>/<model>` at step 0 for the whole
    window, and `eval_by_step/<metric>/<window>/<model>` over the horizon steps."""
    series: dict[str, list[tuple[int, float]]] = {}
    for model, windows in table.items():
        for window, entry in windows.items():
            for metric in TENSORBOARD_METRICS:
                value = entry["all"].get(metric)
                if value is not None:
                    series[f"eval/{metric}/{window}/{model}"] = [(0, value)]
                steps = [(int(k), s.get(metric)) for k, s in sorted(entry["steps"].items(), key=lambda kv: int(kv[0]))]
                points = [(k, v) for k, v in steps if v is not None]
                if len(points) > 1:
                    series[f"eval_by_step/{metric}/{window}/{model}"] = points
    return series
