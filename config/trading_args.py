"""The trading server's settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from config.defaults import A_SHARE
from config.flags import AT_LEAST_1, between, option, shared


@dataclass(frozen=True)
class TradeConfig:
    execute: bool = option(False, "send the planned orders (otherwise nothing is sent)", group="trading", switch=True)
    api_url: str | None = option(
        None, "trading server base URL (default $STOCK_API_URL or the spec's)", group="trading"
    )
    threshold: float = option(
        0.01, "act when |expected return| exceeds this", group="trading", flag="--trade-threshold", check=A_SHARE
    )
    max_lots: int = option(1, "lots (1,000 shares) per order at most", group="trading", check=AT_LEAST_1)
    max_positions: int = option(5, "stocks held at most", group="trading", check=AT_LEAST_1)
    # bounded so that the calendar days they span stay dates (about 20 years of trading days, and 4 of forecasts)
    past: int = option(5, "known trading days given to the model", group="inference", cpu=1, check=between(1, 5000))
    future: int = option(5, "trading days to forecast", group="inference", cpu=1, check=between(1, 1000))
    journal_dir: str = shared("outputs/trades", "output_dir", convert=lambda out: str(Path(out) / "trades"))
