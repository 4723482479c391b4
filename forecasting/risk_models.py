"""The strongest simple references for a forecast's distribution: zero-drift random walks whose volatility is
RiskMetrics' EWMA or a GARCH(1,1) with Student-t innovations (the `arch` package fits it).

The mean of daily returns is nearly unforecastable; the forecastable part is the volatility, and these two are
the classic ways to forecast it. A tool whose bands lose to them on CRPS should not draw its own.

Both give, at a forecast's origin, the distribution of the log return to each of the next `h` trading days,
using only closes up to the origin. Their distributions are written as `QUANTILE_DRAWS` evenly spaced quantiles
(a deterministic "sample" that every ensemble score reads like draws). Pure numpy, except `fit_garch`.
"""

from __future__ import annotations

import functools
import logging
import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

log = logging.getLogger("stock.risk")

LAMBDA = 0.94  # RiskMetrics' decay for daily returns (J.P. Morgan/Reuters, 1996)
EWMA_START = 30  # returns whose mean square starts the EWMA recursion
GARCH_MIN_RETURNS = 250  # a stock with fewer daily returns up to the fit day gets the EWMA instead
QUANTILE_DRAWS = 200  # quantiles that stand for a distribution
BACKCAST_DAYS, BACKCAST_DECAY = 75, 0.94  # arch's own start of the GARCH recursion (`GARCH.backcast`)


def log_returns(closes) -> np.ndarray:
    """Daily log returns of positive, finite closes (a missing or bad close is skipped)."""
    values = np.asarray(closes, dtype=float)
    values = values[np.isfinite(values) & (values > 0)]
    return np.diff(np.log(values))


def ewma_variance(returns, lam: float = LAMBDA, start: int = EWMA_START) -> float:
    """RiskMetrics' variance of the next day's log return after `returns`: s2 = lam * s2 + (1 - lam) * r^2 over
    every return, started at the mean square of the first `start` returns. NaN without a return."""
    r = np.asarray(returns, dtype=float)
    if not len(r):
        return math.nan
    s2 = float(np.mean(r[:start] ** 2))
    for value in r:
        s2 = lam * s2 + (1 - lam) * value * value
    return s2


def ewma_step_variances(returns, horizon: int, lam: float = LAMBDA) -> np.ndarray:
    """Variances of the cumulative log return to each of the next `horizon` days: h × the next day's."""
    return ewma_variance(returns, lam) * np.arange(1, horizon + 1)


@dataclass(frozen=True)
class Garch:
    """A fitted GARCH(1,1) of daily log returns in percent, zero mean, Student-t innovations with `nu` degrees
    of freedom: s2[t+1] = omega + alpha * r[t]^2 + beta * s2[t]."""

    omega: float
    alpha: float
    beta: float
    nu: float
    backcast: float  # the recursion's start (arch's backcast of the fit's returns)

    def next_variance(self, returns_pct) -> float:
        """The variance (percent²) of the day after `returns_pct`, filtered with the fitted parameters."""
        s2 = r2 = self.backcast
        for value in np.asarray(returns_pct, dtype=float):
            s2 = self.omega + self.alpha * r2 + self.beta * s2
            r2 = value * value
        return self.omega + self.alpha * r2 + self.beta * s2

    def step_variances(self, returns_pct, horizon: int) -> np.ndarray:
        """Variances (percent²) of the cumulative return to each of the next `horizon` days: the sums of the
        one-day variances E[s2[t+k]] = omega + (alpha + beta) E[s2[t+k-1]]."""
        one_day = [self.next_variance(returns_pct)]
        for _ in range(horizon - 1):
            one_day.append(self.omega + (self.alpha + self.beta) * one_day[-1])
        return np.cumsum(one_day)


def backcast(returns_pct) -> float:
    """arch's start of the GARCH recursion: an exponentially weighted mean square of the first 75 returns."""
    r = np.asarray(returns_pct, dtype=float)[:BACKCAST_DAYS]
    w = BACKCAST_DECAY ** np.arange(len(r))
    return float(np.sum(r * r * w / w.sum()))


def fit_garch(returns, minimum: int = GARCH_MIN_RETURNS) -> Garch | None:
    """GARCH(1,1), zero mean, Student-t, fitted by `arch` on daily log returns (scaled to percent, as arch
    advises); None with fewer than `minimum` returns or when the optimizer does not converge."""
    from arch import arch_model

    r = 100 * np.asarray(returns, dtype=float)
    if len(r) < minimum:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = arch_model(r, mean="Zero", vol="GARCH", p=1, q=1, dist="t", rescale=False).fit(disp="off")
    if result.convergence_flag != 0:
        log.info("GARCH did not converge (flag %s)", result.convergence_flag)
        return None
    p = result.params
    return Garch(float(p["omega"]), float(p["alpha[1]"]), float(p["beta[1]"]), float(p["nu"]), backcast(r))


@functools.lru_cache(maxsize=64)
def standard_quantiles(n: int = QUANTILE_DRAWS, nu: float | None = None) -> np.ndarray:
    """n evenly spaced quantiles ((i + 0.5) / n) of a unit-variance normal, or of a Student-t with `nu` degrees
    of freedom scaled to unit variance."""
    levels = (np.arange(n) + 0.5) / n
    if nu is None or not math.isfinite(nu):
        return stats.norm.ppf(levels)
    return stats.t.ppf(levels, nu) * math.sqrt((nu - 2) / nu)


def closes_from_variances(center, variances, unit: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """n × h closes: `center` (a close, or one per step) × exp(sqrt(variance_h) × each of `unit`'s quantiles).
    `variances` are of log returns; `scale` widens (> 1) or narrows the spread."""
    sd = np.sqrt(np.asarray(variances, dtype=float))[None, :]
    return np.asarray(center, dtype=float) * np.exp(scale * sd * unit[:, None])
