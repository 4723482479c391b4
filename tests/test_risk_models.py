"""The strong references: RiskMetrics' EWMA and GARCH(1,1)-t random walks, on literal numbers and against
`arch`'s own fit and forecast."""

import math

import numpy as np
import pandas as pd
import pytest

from config.data_args import WindowType
from evaluation import forecast_windows
from evaluation.interface import History
from evaluation.reference_forecasters import EwmaRandomWalk, GarchRandomWalk
from forecasting import risk_models
from utils import StockToolError


def test_ewma_variance_by_hand():
    r = [0.01, -0.02, 0.03]
    s2 = np.mean(np.square(r))  # started at the mean square of the first (here all) returns
    for value in r:
        s2 = 0.94 * s2 + 0.06 * value**2
    assert risk_models.ewma_variance(r) == pytest.approx(s2)
    # literal: 0.00046667 → 0.000444667 → 0.000441987 → 0.000469468
    assert risk_models.ewma_variance(r) == pytest.approx(0.000469468, rel=1e-5)
    assert risk_models.ewma_step_variances(r, 3) == pytest.approx([s2, 2 * s2, 3 * s2])
    assert math.isnan(risk_models.ewma_variance([]))


def test_log_returns_skip_bad_closes():
    assert risk_models.log_returns([100, np.nan, 110, 0, 121]) == pytest.approx([math.log(1.1), math.log(1.1)])


def test_garch_recursion_by_hand():
    g = risk_models.Garch(omega=0.1, alpha=0.1, beta=0.8, nu=8.0, backcast=2.0)
    r = [1.0, -2.0]
    s0 = 0.1 + 0.1 * 2.0 + 0.8 * 2.0  # 1.9
    s1 = 0.1 + 0.1 * 1.0 + 0.8 * s0  # 1.72
    s2 = 0.1 + 0.1 * 4.0 + 0.8 * s1  # 1.876
    assert g.next_variance(r) == pytest.approx(s2)
    assert g.step_variances(r, 3) == pytest.approx(
        [s2, s2 + 0.1 + 0.9 * s2, s2 + 0.1 + 0.9 * s2 + 0.1 + 0.9 * (0.1 + 0.9 * s2)]
    )


def test_garch_matches_arch_fit_and_forecast():
    from arch import arch_model

    rng = np.random.default_rng(0)
    sigma, r = 1.0, []
    for _ in range(600):  # a GARCH(1,1) path in percent
        value = math.sqrt(sigma) * rng.standard_t(6) * math.sqrt(4 / 6)
        r.append(value)
        sigma = 0.05 + 0.08 * value**2 + 0.9 * sigma
    r = np.array(r)
    g = risk_models.fit_garch(r / 100)
    result = arch_model(r, mean="Zero", vol="GARCH", p=1, q=1, dist="t", rescale=False).fit(disp="off")
    assert g.alpha == pytest.approx(result.params["alpha[1]"], rel=1e-3)
    assert g.nu == pytest.approx(result.params["nu"], rel=1e-3)
    p = result.params  # the same parameters, to compare the recursions exactly
    g = risk_models.Garch(p["omega"], p["alpha[1]"], p["beta[1]"], p["nu"], risk_models.backcast(r))
    # our filter reproduces arch's in-sample conditional variance and its 5-day forecast
    assert g.next_variance(r[:-1]) == pytest.approx(result.conditional_volatility[-1] ** 2, rel=1e-8)
    forecast = result.forecast(horizon=5, reindex=False).variance.to_numpy()[0]
    assert g.step_variances(r, 5) == pytest.approx(np.cumsum(forecast), rel=1e-8)
    assert risk_models.fit_garch(r[:100] / 100) is None  # too short a history


def test_standard_quantiles_have_unit_variance():
    for nu in (None, 5.0):
        q = risk_models.standard_quantiles(4000, nu)
        assert np.mean(q) == pytest.approx(0, abs=1e-9)
        assert np.var(q) == pytest.approx(1, rel=0.05)


def _frame(closes, start="2024-01-01"):
    index = pd.bdate_range(start, periods=len(closes), name="Date")
    c = np.asarray(closes, dtype=float)
    return pd.DataFrame({"Open": c, "High": c, "Low": c, "Close": c, "Volume": 1000.0}, index=index)


def test_reference_forecasters_on_a_window():
    rng = np.random.default_rng(1)
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.015, 400)))
    frame = _frame(closes)
    window = WindowType(5, 5)
    w = forecast_windows.TestWindow("2330", "台積電", window, frame.iloc[:395], frame.iloc[395:400])
    history = History({"2330": frame.iloc[:395]}, [], [window], ["open"], 1, 0.1, None, frame.index[394])

    ewma = EwmaRandomWalk()
    out = ewma.fit(history).predict([w])  # RiskMetrics fits nothing: its fit is the interface's
    assert np.allclose(out.points[0][:, 3], w.last_close)  # persistence is its point
    samples = out.samples[0]
    assert samples.shape == (risk_models.QUANTILE_DRAWS, 5)
    s2 = risk_models.ewma_variance(risk_models.log_returns(closes[:395]))
    spread = np.std(np.log(samples / w.last_close), axis=0)
    assert spread == pytest.approx(np.sqrt(s2 * np.arange(1, 6)), rel=0.02)

    garch = GarchRandomWalk()
    garch.fit(history)
    out = garch.predict([w])
    fitted = garch.fitted["2330"]
    assert fitted is not None and out.figures == {"fitted": 1, "ewma_instead": 0}
    v = fitted.step_variances(100 * risk_models.log_returns(closes[:395]), 5) / 1e4
    assert np.median(out.samples[0], axis=0) == pytest.approx(w.last_close, rel=1e-3)
    assert np.std(np.log(out.samples[0] / w.last_close), axis=0) == pytest.approx(np.sqrt(v), rel=0.03)


def test_garch_falls_back_to_ewma_on_short_history():
    frame = _frame(100 + np.arange(60) % 3)
    window = WindowType(1, 1)
    w = forecast_windows.TestWindow("9999", "x", window, frame.iloc[:59], frame.iloc[59:60])
    garch = GarchRandomWalk()
    history = History({"9999": frame.iloc[:59]}, (), (window,), ("open",), 1, 0.1, None, frame.index[58])
    out = garch.fit(history).predict([w])
    assert out.figures == {"fitted": 0, "ewma_instead": 1}
    assert np.allclose(out.samples[0], EwmaRandomWalk().fit(history).predict([w]).samples[0])
    with pytest.raises(StockToolError, match="the garch forecaster predicts only after fit"):
        GarchRandomWalk().predict([w])
