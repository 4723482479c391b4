"""Calibrated bands: the model's errors on held-out days, the band they make, and where they come from."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from test_evaluation import fake_adapter_dir, predictor_for, price_dir, repeat_last_row  # noqa: F401

from config.data_args import WindowType
from config.evaluation_args import EvalConfig
from config.inference_args import InferenceConfig
from conftest import candles, fake_pool
from evaluation import calibrate, forecast_windows
from evaluation.interface import Forecasts
from forecasting import calibrated, latest, risk_models
from forecasting.calibrated import GRID, volatility
from forecasting.forecast_files import write_forecast_files
from forecasting.reading import Forecast, Question, read_forecast
from prompts import prompt_format
from utils import StockToolError


def _windows(window: WindowType, outcomes: list[list[float]]) -> list[forecast_windows.TestWindow]:
    """One test window per row of `outcomes` (the actual closes of its steps), each after a close of 100."""
    tests = []
    for i, closes in enumerate(outcomes):
        frame = candles([100.0] * window.past + list(closes), start=f"2026-0{1 + i % 3}-05")
        history, actual = frame.iloc[: window.past], frame.iloc[window.past :]
        tests.append(forecast_windows.TestWindow("2330", "台積電", window, history, actual))
    return tests


def _point(closes) -> np.ndarray:
    """A future × OHLC point forecast whose closes are `closes`."""
    closes = np.asarray(closes, dtype=float)
    return np.stack([closes, closes + 1, closes - 1, closes], axis=1)


def test_errors_are_actual_over_forecast_per_window_and_step_and_failures_add_none():
    two = WindowType(1, 2)
    tests = _windows(two, [[110.0, 90.0], [100.0, 100.0], [50.0, 50.0]])
    cal = calibrate.fit(tests, [_point([100, 100]), _point([125, 80]), None], decoding="k1", scaled=False)
    assert cal.errors == {"1:2": [[pytest.approx(0.1), pytest.approx(-0.2)], [pytest.approx(-0.1), 0.25]]}
    assert (cal.windows, cal.usable, cal.decoding) == (3, 2, "k1")
    assert cal.start <= cal.end


def test_the_band_is_the_point_spread_by_the_errors_and_needs_enough_of_them():
    window = WindowType(1, 1)
    errors = list(np.linspace(-0.1, 0.1, 41))  # 41 errors, evenly from −10% to +10%
    cal = calibrated.Calibration({"1:1": [errors]})
    closes = cal.ensemble("1:1", [200.0])
    assert closes.shape == (41, 1) and closes.min() == pytest.approx(180) and closes.max() == pytest.approx(220)
    low, median, high = cal.quantiles("1:1", [200.0], [0.1, 0.5, 0.9], None)[:, 0]
    assert (low, median, high) == (pytest.approx(184), pytest.approx(200), pytest.approx(216))
    # a window type of its own too few errors takes every window type's errors of the same step
    assert cal.step_errors("5:5", 1) is not None and cal.ensemble("5:5", [100.0, 100.0]) is None  # no step 2
    few = calibrated.Calibration({"1:1": [errors[: calibrated.MIN_ERRORS - 1]]})
    assert few.ensemble("1:1", [200.0]) is None and few.quantiles("1:1", [200.0], [0.5]) is None
    assert window.name == "1:1"


def test_a_calibration_survives_saving_and_a_broken_file_reads_as_none(tmp_path):
    cal = calibrated.Calibration({"1:1": [[0.01, -0.02]]}, start="2026-02-02", end="2026-02-27", windows=3, usable=2)
    path = cal.save(tmp_path / calibrated.FILE)
    assert calibrated.load(path) == cal
    path.write_text("{not json")
    assert calibrated.load(path) is None and calibrated.load(tmp_path / "absent.json") is None


def test_an_evaluation_calibrates_on_the_held_out_days_before_the_test_period(price_dir, tmp_path):  # noqa: F811
    fake_adapter_dir(tmp_path / "out" / "adapter")  # cutoff 2026-03-10, trained on days up to 2026-03-31
    seen: list[str] = []

    def persistence(prompts, max_new_tokens):
        seen.extend(
            [line for line in p[0]["content"].splitlines() if line.startswith("Date: ")][-1][6:16] for p in prompts
        )
        return repeat_last_row(prompts, max_new_tokens)

    cfg = EvalConfig(test_end="2026-04-24", bootstrap=20, models="tuned", windows="1:1")
    result = predictor_for(price_dir, tmp_path / "out", cfg).evaluate(fake_pool(tuned=persistence))
    summary = result["context"]["calibration"]["tuned"]
    # every calibration target on or after the cutoff and before the test period: nothing from the test days
    assert "2026-03-10" <= summary["start"] <= summary["end"] < "2026-04-01"
    assert summary["windows"] == summary["usable"] == 2 * 16  # 2 companies × 16 trading days, 03-10 to 03-31
    calibration_origins = [d for d in seen if d < "2026-03-31"]  # the test's first origin is 03-31
    assert len(calibration_origins) == 32 and len(seen) == 32 + 2 * 17  # then the test windows: 04-01 to 04-23
    tuned = result["table"]["tuned"]["1:1"]["all"]
    assert 0 <= tuned["coverage80"] <= 1 and tuned["crps"] > 0  # the band is scored like the random walk's
    run = result["paths"]["dir"]
    assert (
        "its own close errors on 32 held-out forecasts with targets 2026-03-10 → 2026-03-31"
        in (run / "report.md").read_text()
    )
    saved = calibrated.load(run / "calibration-tuned.json")
    assert saved.usable == 32 and saved.decoding == InferenceConfig().identity()
    assert calibrated.load(tmp_path / "out" / "adapter" / calibrated.FILE) == saved  # where forecasts find it

    plain = EvalConfig(test_end="2026-04-24", bootstrap=20, models="tuned", windows="1:1", run_name="plain")
    predictor = predictor_for(price_dir, tmp_path / "out", plain, InferenceConfig(bands="samples"))
    samples_only = predictor.evaluate(fake_pool(tuned=persistence))
    assert samples_only["context"]["calibration"] == {}
    assert samples_only["table"]["tuned"]["1:1"]["all"].get("coverage80") is None  # greedy: no distribution


def test_too_short_a_held_out_period_draws_no_band_and_generates_nothing_for_it(price_dir, tmp_path):  # noqa: F811
    adapter = fake_adapter_dir(tmp_path / "out" / "adapter")
    config = json.loads((adapter / "stock_config.json").read_text())
    config["dataset"]["cutoff"] = "2026-03-27"  # three trading days before its last day
    (adapter / "stock_config.json").write_text(json.dumps(config, ensure_ascii=False))
    calls = []

    def counting(prompts, max_new_tokens):
        calls.append(len(prompts))
        return repeat_last_row(prompts, max_new_tokens)

    cfg = EvalConfig(test_end="2026-04-24", bootstrap=0, models="tuned", windows="1:1")
    result = predictor_for(price_dir, tmp_path / "out", cfg).evaluate(fake_pool(tuned=counting))
    assert calls == [2 * 17]  # the test windows alone
    assert "fewer than the 30 a band needs" in result["context"]["calibration"]["tuned"]["notes"][0]


def test_a_forecast_takes_its_band_from_the_calibration_and_writes_where_it_came_from(tmp_path):
    history = candles([100.0, 101.0, 102.0, 103.0, 104.0])
    day = history.index[-1] + pd.offsets.BDay()
    answer = prompt_format.answer_lines(
        [f"Date: {day:%Y-%m-%d}, Open: 104.00, High: 106.00, Low: 103.00, Close: 105.00"]
    )
    cal = calibrated.Calibration(
        {"5:1": [list(np.linspace(-0.05, 0.05, 41))]}, start="2026-01-05", end="2026-02-27", usable=41
    )
    fields = ["open", "high", "low", "close"]
    result = read_forecast(Question("2330", "台積電", history, tuple(fields), 1), [answer], calibration=cal)
    assert result.ok and result.band_source.startswith("errors of 41 held-out forecasts")
    assert result.bands["q0.1"].iloc[0] == pytest.approx(105 * 0.96) and result.bands["q0.9"].iloc[0] == pytest.approx(
        105 * 1.04
    )
    files = write_forecast_files(result, tmp_path / "f")
    record = json.loads(files[1].read_text())
    assert record["band_source"] == result.band_source and "Close_q0.1" in record["forecast"][0]
    plain = read_forecast(Question("2330", "台積電", history, tuple(fields), 1), [answer])
    assert plain.bands is None and isinstance(plain, Forecast)


def test_the_weight_is_the_one_with_the_lowest_close_mape_on_literal_forecasts():
    last = [100.0] * 4
    # the model forecasts twice the change that happens: half its change is exact
    weight, mape = calibrate.best_weight(last, [110, 90, 110, 90], [105, 95, 105, 95])
    assert weight == 0.5 and mape["weighted"] == pytest.approx(0)
    assert mape["persistence"] == pytest.approx(100 * np.mean([5 / 105, 5 / 95] * 2), abs=1e-4)
    assert mape["model"] == pytest.approx(100 * np.mean([5 / 105, 5 / 95] * 2), abs=1e-4)
    assert calibrate.best_weight(last, [110, 90, 110, 90], [95, 105, 95, 105])[0] == 0.0  # always wrong: none
    assert calibrate.best_weight(last, [103, 98, 101, 97], [103, 98, 101, 97])[0] == 1.0  # always right: all
    assert calibrate.best_weight(last, [100, 100, 100, 100], [103, 98, 101, 97])[0] == 0.0  # a tie: the smaller


def test_a_calibration_weighs_each_window_and_keeps_the_weighted_forecasts_errors(tmp_path):
    one = WindowType(1, 1)
    moves = [(-1) ** i * (1 + i % 4) for i in range(40)]  # the actual changes from a close of 100
    tests = _windows(one, [[100.0 + m] for m in moves])
    doubled = [_point([100.0 + 2 * m]) for m in moves]  # a model that forecasts twice each change
    cal = calibrate.fit(tests, doubled, decoding="k1")
    assert cal.point == "calibrated" and cal.weights == {"1:1": 0.5} and cal.weight("1:1") == 0.5
    assert cal.errors["1:1"][0] == pytest.approx([0.0] * 40)  # the weighted forecasts are exact
    assert cal.weighing["1:1"]["weighted"] == pytest.approx(0) and cal.weighing["1:1"]["model"] > 1
    weighted = cal.weighted(tests, doubled)
    assert weighted[0] == pytest.approx(100 + 0.5 * (doubled[0] - 100))  # every price field, toward the last close
    assert cal.summary()["weights"] == {"1:1": 0.5}
    as_generated = calibrate.fit(tests, doubled, decoding="k1", point="model")
    assert as_generated.weights == {} and as_generated.weight("1:1") == 1.0
    # a history of one unchanged close has the floor's volatility: errors in units of it
    expected = [((100 + m) / (100 + 2 * m) - 1) / prompt_format.MIN_VOL for m in moves]
    assert as_generated.errors["1:1"][0] == pytest.approx(expected)
    assert calibrated.load(cal.save(tmp_path / calibrated.FILE)) == cal


def test_a_forecast_is_weighted_toward_the_last_close_and_says_so(tmp_path):
    history = candles([100.0, 101.0, 102.0, 103.0, 104.0])
    day = history.index[-1] + pd.offsets.BDay()
    row = f"Date: {day:%Y-%m-%d}, Open: 104.00, High: 106.00, Low: 103.00, Close: 105.00, Capacity: 5000"
    errors = {"5:1": [list(np.linspace(-0.05, 0.05, 41))]}
    cal = calibrated.Calibration(
        errors, start="2026-01-05", end="2026-02-27", usable=41, point="calibrated", weights={"5:1": 0.5}
    )
    fields = ["open", "high", "low", "close", "capacity"]
    result = read_forecast(
        Question("2330", "台積電", history, tuple(fields), 1), [prompt_format.answer_lines([row])], calibration=cal
    )
    first = result.forecast.iloc[0]
    assert (first["Open"], first["High"], first["Low"], first["Close"]) == (104.0, 105.0, 103.5, 104.5)
    assert first["Volume"] == 5000  # not a price: as the model said
    assert result.weight == 0.5 and any("× 0.5" in note for note in result.notes)
    assert result.bands["q0.1"].iloc[0] == pytest.approx(104.5 * 0.96)  # around the weighted close
    record = json.loads(write_forecast_files(result, tmp_path / "f")[1].read_text())
    assert record["weight"] == 0.5 and record["forecast"][0]["Close"] == 104.5
    as_generated = calibrated.Calibration(errors, usable=41, point="model", weights={"5:1": 0.5})
    answer = prompt_format.answer_lines([row])
    unweighted = read_forecast(
        Question("2330", "台積電", history, tuple(fields), 1), [answer], calibration=as_generated
    )
    assert unweighted.forecast.iloc[0]["Close"] == 105.0 and unweighted.weight == 1.0


def test_an_evaluation_reports_the_weighted_forecast_and_the_one_as_generated(price_dir, tmp_path):  # noqa: F811
    fake_adapter_dir(tmp_path / "out" / "adapter")

    def falling(prompts, max_new_tokens):  # persistence's candle, 20% lower: always far off
        answers = []
        for answer in repeat_last_row(prompts, max_new_tokens):
            head, *rows = answer.strip().splitlines()
            answers.append(prompt_format.answer_lines([_scaled(row, 0.8) for row in rows]))
        return answers

    cfg = EvalConfig(test_end="2026-04-24", bootstrap=20, models="tuned", windows="1:1")
    result = predictor_for(price_dir, tmp_path / "out", cfg).evaluate(fake_pool(tuned=falling))
    weights = result["context"]["calibration"]["tuned"]["weights"]
    assert weights == {"1:1": 0.0}  # held-out days said the model's change only hurt
    table = result["table"]
    tuned, raw = table["tuned"]["1:1"]["all"], table["tuned_raw"]["1:1"]["all"]
    assert tuned["mape_close"] == pytest.approx(table["persistence"]["1:1"]["all"]["mape_close"])
    assert raw["mape_close"] > 15 > tuned["mape_close"]
    text = (result["paths"]["dir"] / "report.md").read_text()
    assert "LLM + LoRA as generated (weight 1)" in text and "1:1: point forecast = last close + 0 ×" in text
    held_out = (result["paths"]["dir"] / "calibration-answers-tuned.jsonl").read_text().splitlines()
    assert len(held_out) == 32 and json.loads(held_out[0])["model"] == "tuned calibration"


def _scaled(row: str, factor: float) -> str:
    """An answer row with its prices × factor."""
    parts = []
    for part in row.split(", "):
        key, value = part.split(": ")
        if key in ("Open", "High", "Low", "Close"):
            value = f"{float(value) * factor:.2f}"
        parts.append(f"{key}: {value}")
    return ", ".join(parts)


def test_a_forecast_uses_the_adapters_calibration_only_when_made_for_its_point_and_decoding(tmp_path):

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    made = InferenceConfig()
    calibrated.Calibration({"1:1": [[0.01] * 40]}, decoding=made.identity(), point=made.point).save(
        adapter / calibrated.FILE
    )

    def loaded(decoding):
        return latest.band_calibration(str(adapter), decoding)

    assert loaded(made) is not None
    assert loaded(InferenceConfig(point="model")) is None  # its errors are the weighted forecasts'
    assert loaded(InferenceConfig(samples=8)) is None  # other answers than those calibrated
    assert loaded(InferenceConfig(bands="samples")) is None


def test_errors_are_kept_in_units_of_the_origins_volatility_and_bands_scale_with_it():
    calm, wild = [100.0, 101.0] * 11, [100.0, 110.0] * 11  # 21 daily returns of ±1% and of ±10%
    assert calibrated.volatility(candles(calm)) == pytest.approx(np.std(np.diff(np.log(calm[-21:]))))
    assert calibrated.volatility(candles([50.0] * 30)) == prompt_format.MIN_VOL  # a stock that has not moved
    assert calibrated.volatility(candles([50.0])) == prompt_format.MIN_VOL  # no return yet
    window = WindowType(22, 1)
    tests = []
    for i, closes in enumerate([calm, wild] * 20):  # every forecast 2% too low, after a calm or a wild month
        frame = candles(closes + [closes[-1] * 1.02], start=f"2025-0{1 + i % 9}-01")
        tests.append(forecast_windows.TestWindow("2330", "台積電", window, frame.iloc[:22], frame.iloc[22:]))
    points = [_point([w.last_close]) for w in tests]
    cal = calibrate.fit(tests, points, point="model")
    vol_calm, vol_wild = (calibrated.volatility(tests[i].history) for i in (0, 1))
    assert cal.scaled and cal.errors["22:1"][0][:2] == pytest.approx([0.02 / vol_calm, 0.02 / vol_wild])
    # a forecast after a wild month gets the wider band: the same errors, times its own volatility
    narrow = cal.quantiles("22:1", [100.0], [0.1, 0.9], tests[0].history)[:, 0]
    wide = cal.quantiles("22:1", [100.0], [0.1, 0.9], tests[1].history)[:, 0]
    assert wide[1] - wide[0] > 5 * (narrow[1] - narrow[0]) > 0
    spread = cal.distributions(tests[:2], points[:2])
    errors = np.sort(cal.step_errors("22:1", 1))
    assert spread[0][:, 0] == pytest.approx(tests[0].last_close * (1 + vol_calm * errors))


def test_adaptive_conformal_levels_on_a_literal_miss_sequence():
    origins = pd.to_datetime(["2026-01-05", "2026-01-06", "2026-01-07", "2026-01-08"])
    targets = pd.to_datetime(["2026-01-06", "2026-01-07", "2026-01-08", "2026-01-09"])
    misses = [True, True, False, False]
    levels = calibrate.adaptive_levels(origins, targets, lambda i, a: not misses[i], alpha=0.2, gamma=0.1)
    # a ← a + 0.1 × (0.2 − miss) for each outcome known by the origin: 0.2, 0.2 − 0.08, 0.12 − 0.08, 0.04 + 0.02
    assert levels == pytest.approx([0.2, 0.12, 0.04, 0.06])
    # five-day targets: nothing is known before the sixth origin, so the level waits
    late = calibrate.adaptive_levels(origins, targets + pd.Timedelta(days=7), lambda i, a: False, 0.2, 0.1)
    assert late == pytest.approx([0.2] * 4)


def test_adaptive_bands_widen_after_misses_and_use_only_known_outcomes():
    window = WindowType(1, 1)
    tests, dists = [], []
    for day in range(40):  # every outcome +5%, far outside a ±1% distribution: the band keeps widening
        frame = candles([100.0, 105.0], start=(pd.Timestamp("2026-01-05") + pd.offsets.BDay(day)).strftime("%Y-%m-%d"))
        tests.append(forecast_windows.TestWindow("2330", "台積電", window, frame.iloc[:1], frame.iloc[1:]))
        dists.append(100.0 * (1 + np.linspace(-0.01, 0.01, 101))[:, None])
    bands = calibrate.adaptive_bands(tests, dists, alpha=0.2, gamma=0.05)
    widths = [b[0, 1] - b[0, 0] for b in bands]
    assert widths[0] == pytest.approx(1.6) and widths[-1] == pytest.approx(2.0)  # 10–90%, then the whole range
    assert all(later >= earlier - 1e-12 for earlier, later in zip(widths, widths[1:], strict=False))
    assert calibrate.adaptive_bands(tests[:1], [None], 0.2) == [None]


def test_the_band_family_is_chosen_on_held_out_days_by_crps():
    """Forecasts whose errors are tiny next to the stock's daily moves: the model's own (conformal) errors make
    a far sharper band than a random walk of those moves, so it is chosen; asking for garch gets garch."""
    rng = np.random.default_rng(0)
    window = WindowType(1, 1)
    tests, points = [], []
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.03, 400)))
    frame = candles(list(closes), start="2024-01-01")
    for i in range(300, 399):
        tests.append(
            forecast_windows.TestWindow("2330", "台積電", window, frame.iloc[: i + 1], frame.iloc[i + 1 : i + 2])
        )
        points.append(_point([closes[i + 1] * (1 + rng.normal(0, 0.001))]))
    cal = calibrate.fit(tests, points, point="model")
    garch = calibrate.fit_garch_all({"2330": frame}, frame.index[299])
    calibrate.choose_families(cal, tests, Forecasts(points), garch)
    assert cal.families == {"1:1": "conformal"}
    crps = cal.family_crps["1:1"]
    assert set(crps) == {"conformal", "ewma", "garch"} and crps["conformal"] < 0.5 * min(crps["ewma"], crps["garch"])
    calibrate.choose_families(cal, tests, Forecasts(points), garch, wanted="garch")
    assert cal.families == {"1:1": "garch"} and "GARCH(1,1)-t random walk around the point (as asked)" in cal.describe(
        "1:1"
    )
    cal.garch = garch
    band = cal.band_closes("1:1", [100.0], tests[0].history, "2330")
    model = risk_models.Garch(*garch["2330"])
    sd = math.sqrt(model.step_variances(100 * risk_models.log_returns(tests[0].history["Close"]), 1)[0]) / 100
    assert np.std(np.log(band[:, 0] / 100)) == pytest.approx(sd, rel=0.05)


def test_conformal_quantiles_take_the_finite_sample_rank():
    scores = np.array([[0.5, 3.0], [0.1, 1.0], [0.3, 2.0], [0.2, 4.0]])
    # n = 4: coverage 0.5 → ⌈2.5⌉ = 3rd smallest; coverage 0.9 → ⌈4.5⌉ = 5 > n → the largest
    assert calibrate.conformal_quantiles(scores, [0.5, 0.9]).tolist() == [0.3, 4.0]


def _sampled_windows(spread: float, n: int = 60):
    """1:1 windows of a stock moving ±2% a day whose K = 20 samples spread ±`spread` around the last close."""
    rng = np.random.default_rng(1)
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, n + 40)))
    frame = candles(list(closes), start="2024-01-01")
    tests, samples = [], []
    for i in range(39, 39 + n):
        tests.append(
            forecast_windows.TestWindow(
                "2330", "台積電", WindowType(1, 1), frame.iloc[: i + 1], frame.iloc[i + 1 : i + 2]
            )
        )
        samples.append(closes[i] * (1 + np.linspace(-spread, spread, 20))[:, None])
    return tests, samples


def test_conformalized_sample_quantiles_widen_a_narrow_band_to_cover():
    """Samples ±0.1% around the last close while the stock moves ±2% a day: the raw 80% band of the samples
    covers almost nothing; conformalized on the held-out days, its 80% band covers about 80% of them."""
    tests, samples = _sampled_windows(0.001)
    cal = calibrate.fit(tests, [_point([s[:, 0].mean()]) for s in samples], point="model")
    calibrate.fit_corrections(cal, tests, samples)
    assert len(cal.corrections["1:1"]) == 1 and len(cal.corrections["1:1"][0]) == len(GRID) // 2
    inside_raw = inside_fit = 0
    for w, s in zip(tests, samples, strict=True):
        actual = float(w.actual["Close"].iloc[0])
        low, high = np.quantile(s[:, 0], [0.1, 0.9])
        inside_raw += low <= actual <= high
        q = cal.conformalized("1:1", s, w.last_close, volatility(w.history))
        assert q.shape == (len(GRID), 1) and np.all(np.diff(q[:, 0]) >= 0)
        low, high = q[list(GRID).index(0.1), 0], q[list(GRID).index(0.9), 0]
        inside_fit += low <= actual <= high
    assert inside_raw <= 6 and 46 <= inside_fit <= 54  # split conformal: ≥ 80% on its own days, ⌈0.8 × 61⌉ = 49
    # a greedy forecast has no samples: the conformal band stands in, and says so
    cal.families = {"1:1": "quantiles"}
    assert cal.family("1:1", sampled=False) == "conformal" and "no samples" in cal.describe("1:1", sampled=False)
    band = cal.band_closes("1:1", [100.0], tests[0].history, "2330", samples[0])
    assert band.shape == (len(GRID), 1)


def test_sampled_quantiles_compete_for_the_band_when_there_are_samples():
    tests, samples = _sampled_windows(0.03, n=70)
    points = [_point([s[:, 0].mean()]) for s in samples]
    cal = calibrate.fit(tests, points, point="model")
    garch = calibrate.fit_garch_all({"2330": tests[-1].history}, tests[0].origin)
    calibrate.choose_families(cal, tests, Forecasts(points, samples), garch)
    assert set(cal.family_crps["1:1"]) == {"conformal", "ewma", "garch", "quantiles"}
    calibrate.choose_families(cal, tests, Forecasts(points), garch)
    assert "quantiles" not in cal.family_crps["1:1"]  # greedy: nothing to conformalize


def test_the_quantiles_family_needs_samples():
    with pytest.raises(StockToolError, match="--samples 2 or more"):
        InferenceConfig(band_family="quantiles")
    assert InferenceConfig(band_family="quantiles", samples=8).samples == 8


def test_an_evaluation_with_sampled_quantiles_says_which_band_each_row_used(price_dir, tmp_path):  # noqa: F811
    fake_adapter_dir(tmp_path / "out" / "adapter")

    def four_samples(prompts, max_new_tokens):
        return [[answer] * 4 for answer in repeat_last_row(prompts, max_new_tokens)]

    cfg = EvalConfig(test_end="2026-04-24", bootstrap=20, models="tuned", windows="1:1")
    inference = InferenceConfig(samples=4, band_family="quantiles")
    result = predictor_for(price_dir, tmp_path / "out", cfg, inference).evaluate(fake_pool(tuned=four_samples))
    summary = result["context"]["calibration"]["tuned"]
    assert summary["families"] == {"1:1": "quantiles"}
    saved = calibrated.load(result["paths"]["dir"] / "calibration-tuned.json")
    assert len(saved.corrections["1:1"][0]) == len(GRID) // 2 and max(saved.corrections["1:1"][0]) > 0
    rows = pd.read_csv(result["paths"]["dir"] / "forecasts.csv")
    used = rows.groupby("model")["band"].first().to_dict()
    assert used["tuned"] == "sample quantiles, conformalized, ACI" and used["ewma"] == "EWMA"
    report = (result["paths"]["dir"] / "report.md").read_text()
    assert "| 1:1 | LLM + LoRA (tuned) | sample quantiles, conformalized, ACI |" in report
