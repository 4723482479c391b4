"""The walk-forward evaluation's settings."""

from __future__ import annotations

from dataclasses import dataclass

from config.defaults import A_SHARE, BOOTSTRAP, BROKERAGE, SEED, SELL_TAX
from config.flags import AT_LEAST_0, AT_LEAST_1, option, shared
from config.inference_args import DecodingConfig


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
    models: str = option(
        "tuned,base,lstm",
        "models besides the always-run baselines (persistence, drift, moving average): tuned, base, lstm",
        group="evaluation",
        flag="--eval-models",
    )
    windows: str | None = shared(None, "windows")  # None: the adapter's window types
    batch_size: int = option(
        1024,
        "forecast evaluation: sequences (prompts x samples) generated together (a batch the GPU cannot hold is "
        "split in two); instruction comparison: prompts, GPU 64, CPU 8",
        group="evaluation",
        flag="--eval-batch-size",
        cpu=8,
        check=AT_LEAST_1,
    )
    bootstrap: int = option(
        BOOTSTRAP, "block-bootstrap resamples for 95%% intervals", group="evaluation", check=AT_LEAST_0
    )
    brokerage: float = option(BROKERAGE, "backtest brokerage per side (0.1425%%)", group="evaluation", check=A_SHARE)
    sell_tax: float = option(
        SELL_TAX, "backtest securities transaction tax on sells", group="evaluation", check=A_SHARE
    )
    run_name: str | None = option(
        None, "report folder under --output-dir (default eval_<start>_<end>)", group="evaluation", flag="--eval-name"
    )
    lstm_epochs: int = option(
        30, "LSTM baseline epochs (early stopping on validation)", group="evaluation", check=AT_LEAST_1
    )
    seed: int = shared(SEED, "random_state")
    decoding: DecodingConfig = DecodingConfig()
