"""The next-day long/flat backtest with Taiwan's costs, against buy-and-hold."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from config.defaults import BROKERAGE, SELL_TAX
from evaluation.metrics import _clean


@dataclass(frozen=True)
class Costs:
    """Taiwan cash-equity costs: brokerage on each side, securities transaction tax on sells."""

    brokerage: float = BROKERAGE
    sell_tax: float = SELL_TAX

    @property
    def exit(self) -> float:
        return self.brokerage + self.sell_tax

    @property
    def round_trip(self) -> float:
        return self.brokerage + self.exit


def backtest(rows: pd.DataFrame, costs: Costs = Costs()) -> dict:
    """Next-day long/flat strategy, equal weight over companies; rows: one model's 1-step forecasts.
    Daily returns are indexed by the day they are earned (the target day).

    At each origin's close, hold the stock to the next close when the forecast close beats today's by
    more than a round trip's costs; otherwise (or when the forecast failed) stay in cash. Entering pays
    brokerage; leaving pays brokerage and the sell tax. Buy-and-hold of the same stocks over the same
    days is the benchmark.
    """
    rows = rows.sort_values(["code", "origin"])
    rows = rows.assign(
        signal=rows["valid"] & (rows["pred_close"] > rows["last_close"] * (1 + costs.round_trip)),
        ret=rows["actual_close"] / rows["last_close"] - 1,
    )
    per_code = []
    trades = 0
    for _, g in rows.groupby("code", sort=False):
        held = g["signal"].to_numpy()
        before = np.concatenate([[False], held[:-1]])
        after = np.concatenate([held[1:], [False]])
        entries, exits = held & ~before, held & ~after
        trades += int(entries.sum())
        # buy at the origin's close (brokerage), ride the next day's move, sell at that close (brokerage + tax)
        factor = (1 - entries * costs.brokerage) * (1 + g["ret"].to_numpy()) * (1 - exits * costs.exit)
        per_code.append(pd.Series(np.where(held, factor - 1, 0.0), index=g["target_date"].to_numpy()))
    strategy = pd.concat(per_code, axis=1).fillna(0.0).mean(axis=1).sort_index()
    hold = []
    for _, g in rows.groupby("code", sort=False):
        factor = 1 + g["ret"].to_numpy()
        factor[0] *= 1 - costs.brokerage
        factor[-1] *= 1 - costs.exit
        hold.append(pd.Series(factor - 1, index=g["target_date"].to_numpy()))
    buy_hold = pd.concat(hold, axis=1).fillna(0.0).mean(axis=1).sort_index()
    return {
        "strategy": performance(strategy) | {"trades": trades},
        "buy_and_hold": performance(buy_hold),
        "daily_returns": {"strategy": strategy, "buy_and_hold": buy_hold},
    }


def performance(daily: pd.Series) -> dict:
    """Total return, annualised Sharpe (252 trading days, zero risk-free rate), max drawdown."""
    equity = (1 + daily).cumprod()
    std = daily.std(ddof=1) if len(daily) > 1 else 0.0
    drawdown = equity / equity.cummax() - 1
    return {
        "total_return": _clean(equity.iloc[-1] - 1) if len(daily) else None,
        "sharpe": _clean(daily.mean() / std * math.sqrt(252)) if std and std > 0 else None,
        "max_drawdown": _clean(drawdown.min()) if len(daily) else None,
        "days": int(len(daily)),
    }
