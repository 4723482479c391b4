"""The walk-forward evaluation's settings: the test period, the models beside the baselines, the intervals and the
backtest's costs."""

from __future__ import annotations

from dataclasses import dataclass

from config.data_args import WindowType, parse_windows, windows_text
from config.defaults import BOOTSTRAP, BROKERAGE, SEED, SELL_TAX
from config.flags import AT_LEAST_0, AT_LEAST_1, option, settle, shared

EVAL_MODELS = ("tuned", "base", "lstm")
A_SHARE = ("from 0 up to 1 (exclusive)", lambda v: 0 <= v < 1)


def parse_models(text: str) -> tuple[str, ...]:
    models = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = [m for m in models if m not in EVAL_MODELS]
    if unknown:
        raise ValueError(f"unknown {unknown}; choose from {', '.join(EVAL_MODELS)}")
    return models


@dataclass(frozen=True)
class EvalConfig:
    test_start: str | None = option(
        None,
        "first target day, YYYY-MM-DD (default: the day after the adapter's data)",
        group="evaluation",
        check="date",
    )
    test_end: str | None = option(
        None, "last target day, YYYY-MM-DD (default: --end-date or today)", group="evaluation", check="date"
    )
    stride: int = option(
        1, "trading days between forecast origins", group="evaluation", flag="--eval-stride", check=AT_LEAST_1
    )
    models: tuple[str, ...] = option(
        ("tuned", "base", "lstm"),
        "models besides the always-run baselines (persistence, drift, moving average): tuned, base, lstm",
        group="evaluation",
        flag="--eval-models",
        parse=parse_models,
        text=",".join,
    )
    windows: tuple[WindowType, ...] | None = option(
        None,
        "window types past:future to evaluate (default: the adapter's)",
        group="evaluation",
        parse=parse_windows,
        text=windows_text,
    )
    bootstrap: int = option(
        BOOTSTRAP, "block-bootstrap resamples for 95%% intervals", group="evaluation", check=AT_LEAST_0, more=True
    )
    brokerage: float = option(
        BROKERAGE, "backtest brokerage per side (0.1425%%)", group="evaluation", check=A_SHARE, more=True
    )
    sell_tax: float = option(
        SELL_TAX, "backtest securities transaction tax on sells", group="evaluation", check=A_SHARE, more=True
    )
    run_name: str | None = option(
        None,
        "report folder under --output-dir (default eval_<start>_<end>)",
        group="evaluation",
        flag="--eval-name",
        more=True,
    )
    lstm_epochs: int = option(
        30, "LSTM baseline epochs (early stopping on validation)", group="evaluation", check=AT_LEAST_1, more=True
    )
    seed: int = shared(SEED, "random_state")

    def __post_init__(self):
        settle(self)
