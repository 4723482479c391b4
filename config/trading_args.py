"""The trading server's settings: what to act on, how much at most, and whether orders are really sent."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from config.flags import AT_LEAST_1, option, settle, shared


@dataclass(frozen=True)
class TradeConfig:
    execute: bool = option(False, "send the planned orders (otherwise nothing is sent)", group="trading", switch=True)
    api_url: str | None = option(
        None, "trading server base URL (default $STOCK_API_URL or the spec's)", group="trading"
    )
    threshold: float = option(
        0.01,
        "act when |expected return| exceeds this",
        group="trading",
        flag="--trade-threshold",
        check=("from 0 up to 1 (exclusive)", lambda v: 0 <= v < 1),
    )
    max_lots: int = option(1, "lots (1,000 shares) per order at most", group="trading", check=AT_LEAST_1)
    max_positions: int = option(5, "stocks held at most", group="trading", check=AT_LEAST_1)
    journal_dir: str = shared("outputs/trades", "output_dir", convert=lambda out: str(Path(out) / "trades"))

    def __post_init__(self):
        settle(self)
