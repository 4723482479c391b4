"""The forecaster interface: every model an evaluation scores is fitted on the training period and
predicts the test windows, and `walk_forward.evaluate` is a loop over them; the stages take a `Workspace`."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from config.data_args import DataConfig, ExamplesConfig, WindowType
from config.evaluation_args import EvalConfig
from config.inference_args import InferenceConfig
from conftest import candles as frame_of
from conftest import write_price_csv
from evaluation import baselines, forecast_windows, interface, reference_forecasters, walk_forward
from llm import sft_data
from market.company_list import Company
from market.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent


def _history(frames: dict, last_day: str, windows=(WindowType(5, 1),), cutoff=None) -> interface.History:
    last = pd.Timestamp(last_day)
    prices = {code: f[f.index <= last] for code, f in frames.items()}
    companies = [Company(code, code, "twse") for code in frames]
    return interface.History(prices, companies, list(windows), ["open", "high", "low", "close"], 1, 0.2, cutoff, last)


def _tests(frames: dict, window: WindowType, start: str, end: str) -> list:
    return [
        w
        for code, f in frames.items()
        for w in forecast_windows.test_windows(f, (code, code), window, (pd.Timestamp(start), pd.Timestamp(end)))
    ]


def test_baselines_and_the_random_walk_fit_on_training_days_only_and_predict_every_window():
    rng = np.random.default_rng(1)
    frame = frame_of(np.round(100 * np.exp(np.cumsum(rng.normal(0, 0.02, 80))), 2), start="2026-01-02")
    window = WindowType(5, 2)
    tests = _tests({"1": frame}, window, "2026-04-01", "2026-04-23")
    persistence = reference_forecasters.Baseline("persistence")
    persistence.fit(_history({"1": frame}, "2026-03-31", [window]))
    out = persistence.predict(tests)
    assert len(out.points) == len(tests) and out.samples is None
    assert all((p[:, 3] == w.last_close).all() for p, w in zip(out.points, tests, strict=True))

    walk = reference_forecasters.RandomWalk()
    walk.fit(_history({"1": frame}, "2026-03-31", [window]))
    shocked = frame.copy()
    shocked.loc[shocked.index > pd.Timestamp("2026-03-31"), ["Open", "High", "Low", "Close"]] *= 3
    again = reference_forecasters.RandomWalk()
    again.fit(_history({"1": shocked}, "2026-03-31", [window]))  # what follows the training days is never seen
    first, second = walk.predict(tests), again.predict(tests)
    assert [p.tolist() for p in first.points] == [baselines.persistence(w).tolist() for w in tests]
    assert all(np.array_equal(a, b) for a, b in zip(first.samples, second.samples, strict=True))
    assert first.samples[0].shape[1] == window.future


def test_the_lstm_trains_one_network_per_window_type_and_fails_where_it_has_none():
    frames = {"1": frame_of(np.linspace(50, 80, 70)), "2": frame_of(np.linspace(90, 60, 70))}
    short, long = WindowType(5, 1), WindowType(40, 20)  # the long one has no training window before the end
    net = reference_forecasters.Lstm(epochs=1, seed=0)
    net.fit(_history(frames, f"{frames['1'].index[59]:%Y-%m-%d}", [short, long]))
    assert list(net.fitted) == [short]
    tests = _tests(frames, short, f"{frames['1'].index[60]:%Y-%m-%d}", f"{frames['1'].index[-1]:%Y-%m-%d}")
    tests += [forecast_windows.TestWindow("1", "1", long, frames["1"].iloc[:50], frames["1"].iloc[50:70])]
    out = net.predict(tests)
    assert all(p is not None and p.shape == (1, 4) for p in out.points[:-1]) and out.points[-1] is None
    assert list(out.figures) == ["5:1"]


def test_evaluate_is_a_loop_over_forecasters_each_fitted_before_the_test_period(tmp_path, monkeypatch):
    prices = tmp_path / "prices"
    prices.mkdir()
    rng = np.random.default_rng(0)
    for code in ("2330", "2317"):
        write_price_csv(
            prices, code, frame_of(np.round(100 * np.exp(np.cumsum(rng.normal(0, 0.02, 80))), 1), "2026-01-02")
        )
    (tmp_path / "companies.json").write_text(json.dumps([{"code": "2330"}, {"code": "2317"}]))
    seen = {}

    class UpOnePercent(interface.Forecaster):  # a new model drops into the loop and is scored beside the others
        name = "up_one_percent"

        def _fit(self, history):
            seen["last"] = max(f.index[-1] for f in history.prices.values())

        def _predict(self, tests):
            return interface.Forecasts([baselines.persistence(w) * 1.01 for w in tests])

    original = walk_forward._forecasters
    monkeypatch.setattr(walk_forward, "_forecasters", lambda *a: original(*a) + [UpOnePercent()])
    data = DataConfig(
        data_dir=str(prices),
        output_dir=str(tmp_path / "out"),
        company_list_file=str(tmp_path / "companies.json"),
        offline=True,
        year=2026,
        month=1,
        end_date="2026-04-30",
    )
    cfg = EvalConfig(models="", test_start="2026-04-01", test_end="2026-04-24", bootstrap=20)
    ws = Workspace(data, ExamplesConfig(windows="5:1"))
    result = walk_forward.evaluate(ws, str(tmp_path / "no-adapter"), cfg, InferenceConfig())
    table = result["table"]
    assert list(table) == ["persistence", "drift", "moving_average", "random_walk", "ewma", "garch", "up_one_percent"]
    assert seen["last"] == pd.Timestamp("2026-03-31")  # nothing from the test period
    assert table["up_one_percent"]["5:1"]["all"]["mean_forecast_return"] == pytest.approx(1.0)
    assert (tmp_path / "out" / "eval_2026-04-01_2026-04-24" / "report.md").is_file()


def test_the_stages_take_a_workspace_not_the_facade(tmp_path):
    """No stage function has a `predictor` parameter, and the training data is built from a Workspace alone."""
    folders = ("llm", "forecasting", "evaluation", "instruct", "trading")
    stages = [p for folder in folders for p in (ROOT / folder).glob("*.py")]
    assert len(stages) > 30
    for path in stages:
        name = path.stem
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                assert "predictor" not in [a.arg for a in node.args.args], f"{name}.{node.name}"
    write_price_csv(tmp_path, "1111", frame_of(np.linspace(50, 80, 40)))
    data = DataConfig(data_dir=str(tmp_path), output_dir=str(tmp_path / "out"))
    ws = Workspace(data, ExamplesConfig(windows="5:5", val_fraction=0.2))
    train, val, manifest = sft_data.build(ws, [Company("1111", "n", "twse")], {"1111": ws.cache.load("1111")})
    assert (
        train and manifest["train_examples"] == len(train) and (tmp_path / "out" / "examples" / "train.jsonl").is_file()
    )
