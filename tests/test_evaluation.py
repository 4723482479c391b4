"""Walk-forward evaluation: test windows (no leakage), baselines, metrics, bootstrap, backtest, report."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

import main as cli
from config import data_args
from config.data_args import WindowType
from config.evaluation_args import EvalConfig
from config.inference_args import InferenceConfig
from conftest import argv, fake_pool, write_price_csv
from conftest import candles as frame_of
from evaluation import backtest, baselines, forecast_windows
from evaluation import metrics as metrics_
from evaluation.reference_forecasters import training_windows
from prompts import prompt_format
from stock_predictor import DataConfig, ExamplesConfig, Settings, StockPredictor

# --------------------------------------------------------------------------- windows and leakage


def test_test_windows_keep_every_target_inside_the_period_and_history_before_it():
    frame = frame_of(range(100, 120))  # 2026-03-02 .. 2026-03-27
    start, end = pd.Timestamp("2026-03-16"), pd.Timestamp("2026-03-25")
    windows = forecast_windows.test_windows(frame, ("1", "A"), WindowType(3, 2), (start, end))
    assert [f"{w.origin:%m-%d}" for w in windows] == ["03-13", "03-16", "03-17", "03-18", "03-19", "03-20", "03-23"]
    for w in windows:
        assert w.history.index[-1] == w.origin < w.actual.index[0]  # nothing after the origin is known
        assert start <= w.actual.index[0] and w.actual.index[-1] <= end
        assert len(w.actual) == 2 and len(w.past) == 3
        assert w.past.index[-1] == w.origin and w.last_close == frame.loc[w.origin, "Close"]
    strided = forecast_windows.test_windows(frame, ("1", "A"), WindowType(3, 2), (start, end), stride=3)
    assert [w.origin for w in strided] == [windows[0].origin, windows[3].origin, windows[6].origin]


def test_a_window_longer_than_the_history_or_period_yields_nothing():
    frame = frame_of(range(100, 110))
    assert forecast_windows.test_windows(frame, ("1", "A"), WindowType(20, 1), (frame.index[5], frame.index[-1])) == []
    assert forecast_windows.test_windows(frame, ("1", "A"), WindowType(1, 5), (frame.index[7], frame.index[-1])) == []


def test_lstm_trains_on_exactly_the_llms_training_windows(tmp_path):
    """Same spans, same cutoff: the LSTM's pool is the LLM's train/validation split, window for window."""
    frames = {"1111": frame_of(np.linspace(50, 80, 60)), "2222": frame_of(np.linspace(90, 60, 60))}
    for code, frame in frames.items():
        write_price_csv(tmp_path, code, frame)
    from market.company_list import Company

    data = DataConfig(data_dir=str(tmp_path), output_dir=str(tmp_path / "out"))
    predictor = StockPredictor(Settings(data=data, examples=ExamplesConfig(windows="5:5", val_fraction=0.2)))
    companies = [Company(code, "n", "twse") for code in frames]
    train, val, manifest = predictor.build_dataset(companies, frames)
    pool_train, pool_val = training_windows(
        frames, WindowType(5, 5), predictor.fields, 1, pd.Timestamp(manifest["cutoff"])
    )

    def keys(examples):
        return {(e["meta"]["code"], e["meta"]["input_start"], e["meta"]["target_end"]) for e in examples}

    def pool_keys(pool):
        return {(code, f"{past.index[0]:%Y-%m-%d}", f"{future.index[-1]:%Y-%m-%d}") for code, past, future in pool}

    assert pool_keys(pool_train) == keys(train) and pool_keys(pool_val) >= keys(val)
    assert max(future.index[-1] for _, _, future in pool_train) < pd.Timestamp(manifest["cutoff"])


# --------------------------------------------------------------------------- baselines


def test_naive_baselines_on_literal_candles():
    frame = frame_of([10, 11, 12, 13, 20])
    w = forecast_windows.TestWindow(
        "1", "A", WindowType(2, 3), frame.iloc[:4], frame_of([20, 21, 22], start="2026-03-06")
    )
    last = [12.0, 14.0, 11.0, 13.0]  # open, high, low, close of the origin day
    assert baselines.persistence(w).tolist() == [last] * 3
    assert baselines.drift(w, lookback=3).tolist() == [[o + k for o in last] for k in (1, 2, 3)]  # closes 10→13: +1/day
    assert baselines.drift(w, lookback=1).tolist() == [[o + k for o in last] for k in (1, 2, 3)]
    assert baselines.moving_average(w, lookback=2).tolist() == [[11.5, 13.5, 10.5, 12.5]] * 3


def test_lstm_targets_round_trip_and_make_proper_candles():
    past = frame_of([10, 11, 12])
    features = baselines.window_features(past)
    assert features.shape == (3, 5) and features[-1, 3] == 0.0  # close over itself
    future = frame_of([12, 13], start="2026-03-05")
    back = baselines.targets_to_candles(baselines.window_targets(future, 12.0), 12.0)
    assert np.allclose(back, future[data_args.OHLC].to_numpy())
    messy = baselines.targets_to_candles(np.log(np.array([[1.0, 0.9, 1.1, 1.05]])), 100.0)  # high < low from a net
    assert messy[0, 1] == pytest.approx(110.0) and messy[0, 2] == pytest.approx(90.0)


# --------------------------------------------------------------------------- metrics


def literal_rows():
    """Two origins × 1 step. Model: right direction once, one failure."""
    frame = frame_of([100, 110, 100])
    w1 = forecast_windows.TestWindow("1", "A", WindowType(1, 1), frame.iloc[:1], frame.iloc[1:2])  # 100 → 110 (up)
    w2 = forecast_windows.TestWindow("1", "A", WindowType(1, 1), frame.iloc[:2], frame.iloc[2:3])  # 110 → 100 (down)
    good = np.array([[100.0, 106.0, 99.0, 105.0]])  # close 105 vs actual 110: error 5, says up (right)
    rows = pd.concat(
        [
            metrics_.forecast_rows("m", [w1, w2], [good, None]),
            metrics_.forecast_rows("persistence", [w1, w2], [baselines.persistence(w1), baselines.persistence(w2)]),
        ]
    )
    return metrics_.add_errors(rows)


def test_metrics_count_failures_and_match_persistence_on_the_same_windows():
    rows = literal_rows()
    m = metrics_.summarize(rows[rows["model"] == "m"], n_boot=0)
    assert m["validity"] == 0.5 and m["windows"] == 2
    assert m["mae_close"] == 5.0 and m["rmse_close"] == 5.0
    assert m["mape_close"] == pytest.approx(100 * 5 / 110)
    # persistence on the one usable window: |100 - 110| = 10 → skill 1 - 5/10
    assert m["skill_mae"] == pytest.approx(0.5) and m["skill_mape"] == pytest.approx(0.5)
    assert m["directional_accuracy"] == 0.5  # right once; the failure counts as wrong
    assert m["majority_rate"] == 0.5
    p = metrics_.summarize(rows[rows["model"] == "persistence"], n_boot=0)
    assert p["skill_mape"] == 0.0 and p["mae_close"] == 10.0 and p["directional_accuracy"] == 0.5


def test_a_model_with_no_usable_forecast_reports_zero_validity_not_an_error():
    frame = frame_of([100, 110, 100])
    w = forecast_windows.TestWindow("1", "A", WindowType(1, 1), frame.iloc[:1], frame.iloc[1:2])
    summary = metrics_.summarize(metrics_.add_errors(metrics_.forecast_rows("m", [w], [None])), n_boot=0)
    assert summary["validity"] == 0.0 and summary["mape_close"] is None and summary["directional_accuracy"] == 0.0
    assert metrics_.verdict(summary) == "no usable forecasts"


def test_block_bootstrap_uses_circular_blocks_of_consecutive_dates():
    idx = metrics_.block_bootstrap_indices(n_dates=7, n_boot=50, block=3, seed=1)
    assert idx.shape == (50, 7)
    for row in idx:
        for b in range(0, 6, 3):
            assert (row[b + 1] - row[b]) % 7 == 1 and (row[b + 2] - row[b + 1]) % 7 == 1
    assert (metrics_.block_bootstrap_indices(7, 50, 3, seed=1) == idx).all()


def test_bootstrap_interval_is_tight_for_identical_days_and_brackets_the_point():
    frame = frame_of([100 + (i % 2) * 10 for i in range(30)])
    windows = forecast_windows.test_windows(frame, ("1", "A"), WindowType(1, 1), (frame.index[1], frame.index[-1]))
    const = [np.array([[w.last_close] * 3 + [w.actual["Close"].iloc[0] * 1.01]]) for w in windows]
    rows = metrics_.add_errors(metrics_.forecast_rows("m", windows, const))
    s = metrics_.summarize(rows, n_boot=200)
    assert s["mape_close_ci95"][0] == pytest.approx(s["mape_close"], rel=1e-6)
    assert s["mape_close_ci95"][1] == pytest.approx(s["mape_close"], rel=1e-6)
    noisy = [
        np.array([[w.last_close] * 3 + [w.actual["Close"].iloc[0] * (1 + 0.01 * (i % 5))]])
        for i, w in enumerate(windows)
    ]
    s = metrics_.summarize(metrics_.add_errors(metrics_.forecast_rows("m", windows, noisy)), n_boot=200)
    assert s["mape_close_ci95"][0] < s["mape_close"] < s["mape_close_ci95"][1]


def test_verdict_needs_the_interval_to_exclude_zero():
    assert metrics_.verdict({"validity": 1, "skill_mape_ci95": [0.01, 0.2]}) == "beats persistence"
    assert metrics_.verdict({"validity": 1, "skill_mape_ci95": [-0.2, -0.01]}) == "loses to persistence"
    assert metrics_.verdict({"validity": 1, "skill_mape_ci95": [-0.1, 0.1]}).startswith("no detectable")


# --------------------------------------------------------------------------- backtest


def test_backtest_with_taiwan_costs_on_literal_days():
    frame = frame_of([100, 110, 99, 99])
    windows = forecast_windows.test_windows(frame, ("1", "A"), WindowType(1, 1), (frame.index[1], frame.index[-1]))
    # says up, up, up: hold all three days → one entry, one exit
    up = [np.array([[0, 0, 0, w.last_close * 1.1]]) for w in windows]
    rows = metrics_.add_errors(metrics_.forecast_rows("m", windows, up))
    costs = backtest.Costs(brokerage=0.001, sell_tax=0.003)
    result = backtest.backtest(rows, costs)
    daily = result["daily_returns"]["strategy"].tolist()
    assert daily[0] == pytest.approx((1 - 0.001) * 1.1 - 1)
    assert daily[1] == pytest.approx(99 / 110 - 1)
    assert daily[2] == pytest.approx(1 * (1 - 0.004) - 1)
    assert result["strategy"]["trades"] == 1
    assert result["strategy"]["total_return"] == pytest.approx(0.999 * 1.1 * (99 / 110) * 0.996 - 1, abs=1e-6)
    assert result["buy_and_hold"]["total_return"] == pytest.approx(result["strategy"]["total_return"], abs=1e-6)
    assert result["strategy"]["max_drawdown"] == pytest.approx(0.9 * 0.996 - 1, abs=1e-6)
    # a forecast gain below the round-trip costs, or a failed forecast, keeps the money in cash
    small = [np.array([[0, 0, 0, w.last_close * 1.004]]) for w in windows[:2]] + [None]
    flat = backtest.backtest(metrics_.add_errors(metrics_.forecast_rows("m", windows, small)), costs)
    assert flat["strategy"]["trades"] == 0 and flat["strategy"]["total_return"] == 0.0


def test_performance_figures():
    perf = backtest.performance(pd.Series([0.1, -0.5, 0.2]))
    assert perf["total_return"] == pytest.approx(1.1 * 0.5 * 1.2 - 1)
    assert perf["max_drawdown"] == pytest.approx(-0.5)
    daily = np.array([0.1, -0.5, 0.2])
    assert perf["sharpe"] == pytest.approx(daily.mean() / daily.std(ddof=1) * math.sqrt(252), rel=1e-5)


# --------------------------------------------------------------------------- the evaluation run


@pytest.fixture
def price_dir(tmp_path):
    """Three synthetic companies' prices in the cache format (2026-01 .. 2026-04)."""
    directory = tmp_path / "prices"
    directory.mkdir()
    rng = np.random.default_rng(0)
    for code in ("2330", "2317", "6569"):
        closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, 80)))
        write_price_csv(directory, code, frame_of(np.round(closes, 1), start="2026-01-02"))
    companies = [{"code": "2330"}, {"code": "2317"}, {"code": "6569"}]
    (tmp_path / "companies.json").write_text(json.dumps(companies))
    return tmp_path


def fake_adapter_dir(path, last_date="2026-03-31"):
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text("{}")
    config = {
        "base_model": "fake",
        "data": {"year": 2026, "month": 1, "end_date": last_date, "stride": 1, "val_fraction": 0.2},
        "dataset": {
            "fields": data_args.FIELD_SETS["ohlcv"],
            "windows": ["1:1", "5:5"],
            "cutoff": "2026-03-10",
            "last_date": last_date,
        },
        "companies": [
            {"code": "2330", "name_zh": "台積電", "market": "twse"},
            {"code": "2317", "name_zh": "鴻海", "market": "twse"},
        ],
    }
    (path / "stock_config.json").write_text(json.dumps(config, ensure_ascii=False))
    return path


def repeat_last_row(prompts, max_new_tokens):
    """A fake 'tuned' model that answers persistence in the exact answer format."""
    answers = []
    for prompt in prompts:
        text = prompt[0]["content"]
        last = [line for line in text.splitlines() if line.startswith("Date: ")][-1]
        future = int(text.split("Predict the next ")[1].split(" ")[0]) if "next date" not in text else 1
        day = pd.Timestamp(last[6:16])
        rows = []
        for _ in range(future):
            day = day + pd.offsets.BDay()
            rows.append(f"Date: {day:%Y-%m-%d}" + last[16:])
        answers.append(prompt_format.answer_lines(rows))
    return answers


def predictor_for(price_dir, out, cfg: EvalConfig, inference: InferenceConfig = InferenceConfig(), **data):
    from config.model_args import ModelConfig

    data = DataConfig(
        data_dir=str(price_dir / "prices"), output_dir=str(out), offline=True, end_date="2026-04-30", **data
    )
    settings = Settings(
        data=data, model=ModelConfig(model_dir=str(out / "adapter")), evaluation=cfg, inference=inference
    )
    return StockPredictor(settings)


def test_evaluation_run_scores_llms_lstm_and_baselines_and_writes_a_report(price_dir, tmp_path):
    fake_adapter_dir(tmp_path / "out" / "adapter")
    cfg = EvalConfig(test_end="2026-04-24", bootstrap=50, lstm_epochs=2, stride=2)
    predictor = predictor_for(price_dir, tmp_path / "out", cfg)
    result = predictor.evaluate(fake_pool(tuned=repeat_last_row, base=lambda prompts, n: ["no idea"] * len(prompts)))
    table = result["table"]
    assert set(table) == {
        "tuned",
        "base",
        "lstm",
        "persistence",
        "drift",
        "moving_average",
        "random_walk",
        "ewma",
        "garch",
    }
    assert result["context"]["test_start"] == "2026-04-01" and result["context"]["companies"] == ["2330", "2317"]
    tuned = table["tuned"]["5:5"]["all"]
    assert tuned["validity"] == 1.0 and tuned["skill_mape"] == 0.0  # it *is* persistence, in words
    assert tuned["mape_close"] == pytest.approx(table["persistence"]["5:5"]["all"]["mape_close"])
    assert table["base"]["1:1"]["all"]["validity"] == 0.0  # evaluated to the end and reported, not dropped
    assert set(table["tuned"]["5:5"]["steps"]) == {1, 2, 3, 4, 5}
    best = min(("random_walk", "ewma", "garch"), key=lambda m: table[m]["5:5"]["all"]["crps"])
    assert table["ewma"]["5:5"]["all"]["best_reference"] == best
    assert 0 <= table["garch"]["1:1"]["all"]["coverage80"] <= 1
    run = tmp_path / "out" / "eval_2026-04-01_2026-04-24"
    assert result["paths"]["dir"] == run and not run.with_name(run.name + ".partial").exists()
    report = (run / "report.md").read_text()
    assert "| 5:5 | LLM + LoRA (tuned) | 100.0% |" in report and "LLM untuned** — 1:1: no usable forecasts" in report
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["metrics"]["lstm"]["1:1"]["all"]["validity"] == 1.0
    assert metrics["backtest"]["tuned"]["strategy"]["trades"] == 0  # persistence never clears the costs
    for name in ("error_by_step.png", "predicted_vs_actual.png", "equity.png"):
        assert (run / name).read_bytes()[:4] == b"\x89PNG"
    answers = [json.loads(line) for line in (run / "answers.jsonl").read_text().splitlines()]
    assert {a["model"] for a in answers} == {"tuned", "base"}
    assert all(a["problem"].startswith("unparseable") for a in answers if a["model"] == "base")
    forecasts = pd.read_csv(run / "forecasts.csv", parse_dates=["origin", "target_date"])
    assert (forecasts["target_date"] >= "2026-04-01").all() and (forecasts["origin"] < forecasts["target_date"]).all()


def test_evaluation_refuses_a_test_period_the_adapter_has_seen(price_dir, tmp_path, capsys):
    fake_adapter_dir(tmp_path / "out" / "adapter", last_date="2026-03-31")
    args = argv(
        "--train 0 --evaluate 1 --data-dir {price_dir}/prices --offline --output-dir {tmp_path}/out "
        "--model-dir {tmp_path}/out/adapter",
        price_dir=price_dir,
        tmp_path=tmp_path,
    )
    assert cli.main([*args, "--test-start", "2026-03-20"]) == 2
    assert "trained on prices up to 2026-03-31" in capsys.readouterr().err
    assert cli.main([*args, "--test-start", "2026-04-01", "--test-end", "2026-03-01"]) == 2
    assert "before --test-start" in capsys.readouterr().err
    assert cli.main([*args, "--test-start", "2026-06-01", "--test-end", "2026-06-30"]) == 2
    assert "no test window fits" in capsys.readouterr().err
    assert not list((tmp_path / "out").glob("eval_*"))


def test_evaluation_without_an_adapter(price_dir, tmp_path, capsys):
    args = argv(
        "--train 0 --evaluate 1 --data-dir {price_dir}/prices --offline --output-dir {tmp_path}/out "
        "--model-dir {tmp_path}/none --year 2026 --month 1 --end-date 2026-04-30 "
        "--company-list-file {price_dir}/companies.json --windows 1:1 --bootstrap 20 --lstm-epochs "
        "1",
        price_dir=price_dir,
        tmp_path=tmp_path,
    )
    assert cli.main(args) == 2
    assert "no trained adapter in" in capsys.readouterr().err
    assert cli.main([*args, "--eval-models", "lstm"]) == 2
    assert "--test-start is required" in capsys.readouterr().err
    assert cli.main([*args, "--eval-models", "lstm", "--test-start", "2026-04-01"]) == 0
    out = capsys.readouterr().out
    assert "| 1:1 | LSTM |" in out and "buy and hold" in out
    metrics = json.loads((tmp_path / "out" / "eval_2026-04-01_2026-04-30" / "metrics.json").read_text())
    assert metrics["context"]["companies"] == ["2330", "2317", "6569"]
    assert metrics["context"]["lstm"]["1:1"]["train_windows"] > 0
    assert cli.main([*args, "--eval-models", "gpt", "--test-start", "2026-04-01"]) == 2
    assert "unknown ['gpt']" in capsys.readouterr().err


def test_an_interrupted_evaluation_resumes_from_the_answers_it_had(price_dir, tmp_path):
    fake_adapter_dir(tmp_path / "out" / "adapter")
    # bands from the samples: no calibration forecasts, so the calls counted are the test windows' alone
    cfg = EvalConfig(test_end="2026-04-24", bootstrap=0, models="tuned")
    predictor = predictor_for(price_dir, tmp_path / "out", cfg, InferenceConfig(bands="samples"))
    calls = []

    def crashes_on_the_second_window_type(prompts, max_new_tokens):
        calls.append(len(prompts))
        if len(calls) == 2:
            raise RuntimeError("CUDA error: the machine went away")
        return repeat_last_row(prompts, max_new_tokens)

    with pytest.raises(RuntimeError):
        predictor.evaluate(fake_pool(tuned=crashes_on_the_second_window_type))
    run = tmp_path / "out" / "eval_2026-04-01_2026-04-24"
    assert not run.exists() and (run.with_name(run.name + ".answers") / "tuned.jsonl").is_file()
    first = calls[0]  # the 1:1 prompts, answered before the crash

    calls.clear()

    def counting(prompts, max_new_tokens):
        calls.append(len(prompts))
        return repeat_last_row(prompts, max_new_tokens)

    result = predictor.evaluate(fake_pool(tuned=counting))
    assert len(calls) == 1  # only the 5:5 prompts were generated again
    assert result["context"]["generation"]["tuned"]["reused"] == first
    assert result["table"]["tuned"]["1:1"]["all"]["validity"] == 1.0
    assert run.is_dir() and not run.with_name(run.name + ".answers").exists()


def test_an_evaluation_shows_in_tensorboard_beside_training(price_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    fake_adapter_dir(tmp_path / "out" / "adapter")
    cfg = EvalConfig(test_end="2026-04-24", bootstrap=0, stride=2, models="tuned")
    result = predictor_for(price_dir, tmp_path / "out", cfg).evaluate(fake_pool(tuned=repeat_last_row))
    board = tmp_path / "out" / "runs" / result["paths"]["dir"].name
    events = EventAccumulator(str(board), size_guidance={"images": 0, "scalars": 0}).Reload()
    tags = events.Tags()
    assert "eval/skill_mape/5:5/tuned" in tags["scalars"] and "eval/coverage80/5:5/random_walk" in tags["scalars"]
    assert events.Scalars("eval/mape_close/1:1/tuned")[0].value == pytest.approx(
        result["table"]["tuned"]["1:1"]["all"]["mape_close"]
    )
    assert [e.step for e in events.Scalars("eval_by_step/mape_close/5:5/persistence")] == [1, 2, 3, 4, 5]
    assert {"plots/error_by_step", "plots/equity", "plots/predicted_vs_actual"} <= set(tags["images"])


# --------------------------------------------------------------------------- paired comparison of two runs


def _run_folder(folder, frame, code, origins, offset, answer_format="change"):
    """An evaluation folder as `--evaluate 1` writes it: 1:1 answers whose close misses the actual by `offset`."""
    fields = data_args.parse_fields("ohlcv")
    folder.mkdir()
    lines = []
    for origin in origins:
        at = frame.index.get_loc(origin)
        future = frame.iloc[at + 1 : at + 2].copy()
        future["Close"] += offset
        future["High"] = future[["High", "Close"]].max(axis=1)
        future["Low"] = future[["Low", "Close"]].min(axis=1)
        answer = prompt_format.answer_text(future, fields, prompt_format.anchor_of(frame.iloc[: at + 1], answer_format))
        lines.append(json.dumps({"code": code, "window": "1:1", "origin": f"{origin:%Y-%m-%d}", "answer": answer}))
    (folder / "answers.jsonl").write_text("\n".join(lines) + "\n")
    training = {"fields": fields, "answer_format": answer_format}
    (folder / "metrics.json").write_text(json.dumps({"context": {"adapter_training": training}}))


def test_paired_comparison_scores_both_runs_on_the_same_steps_and_finds_the_better(tmp_path):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("paired", Path(__file__).parent.parent / "benchmarks" / "paired.py")
    paired = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(paired)
    frame = frame_of([100 + 3 * (i % 2) for i in range(40)])  # persistence misses by 3 every day
    write_price_csv(tmp_path, "1234", frame)
    origins = list(frame.index[5:35])
    _run_folder(tmp_path / "a", frame, "1234", origins, offset=2.0)  # misses by 2: skill ≈ 1/3
    _run_folder(tmp_path / "b", frame, "1234", origins, offset=0.0, answer_format="absolute")  # exact
    a = paired.close_errors(tmp_path / "a", tmp_path, {})
    b = paired.close_errors(tmp_path / "b", tmp_path, {})
    assert len(a) == len(b) == 30
    (row,) = paired.compare(a, b, n_boot=200)
    assert row["steps"] == 30 and row["mape_b"] == pytest.approx(0, abs=0.02)
    assert row["skill_a"] == pytest.approx(1 / 3, abs=0.01) and row["skill_b"] == pytest.approx(1, abs=0.01)
    assert row["skill_b_minus_a"] == pytest.approx(2 / 3, abs=0.01)
    assert 0 < row["ci95"][0] <= row["skill_b_minus_a"] <= row["ci95"][1]
    # a step only one run got right is left out of both
    b_short = b[b["key"] != a["key"].iloc[0]]
    assert paired.compare(a, b_short, n_boot=50)[0]["steps"] == 29


def test_diebold_mariano_on_a_literal_pair():
    from scipy import stats

    d = [1.0, -1.0, 2.0, 0.0, 3.0]  # mean 1; demeaned 0, -2, 1, -1, 2; variance 2
    stat, worse, two_sided = metrics_.diebold_mariano(d, horizon=1)
    assert stat == pytest.approx(1 / math.sqrt(2 / 5) * math.sqrt(0.8))  # HLN: sqrt((n + 1 − 2h + h(h − 1)/n) / n)
    assert worse == pytest.approx(stats.t.sf(stat, 4)) and two_sided == pytest.approx(2 * worse)
    # two-step forecasts: one Newey–West lag, autocovariance −1 at weight 1/2 → variance 1
    stat2, _, _ = metrics_.diebold_mariano(d, horizon=2)
    assert stat2 == pytest.approx(1 / math.sqrt(1 / 5) * math.sqrt(0.48))
    assert all(math.isnan(v) for v in metrics_.diebold_mariano([0.5, 0.5, 0.5]))  # no variation: no test
    assert metrics_.diebold_mariano([-1.0, -2.0, -1.5, -0.5])[1] > 0.9  # always better: "worse" is implausible


def test_best_reference_and_skill_against_it():
    table = {
        m: {
            "1:1": {
                "all": {
                    "crps": c,
                    "ewma_crps": 2.0,
                    "garch_crps": 1.8,
                    "random_walk_crps": 2.2,
                    "crps_skill_garch": 1 - c / 1.8,
                    "crps_skill_garch_ci95": [0.0, 0.1],
                },
                "steps": {},
            }
        }
        for m, c in (("random_walk", 2.2), ("ewma", 2.0), ("garch", 1.8), ("tuned", 1.7))
    }
    assert metrics_.best_reference(table, "1:1") == "garch"
    metrics_._skill_against(table["tuned"]["1:1"]["all"], "garch")
    s = table["tuned"]["1:1"]["all"]
    assert s["best_reference_crps"] == 1.8 and s["crps_skill_best"] == pytest.approx(1 - 1.7 / 1.8)
    assert s["crps_skill_best_ci95"] == [0.0, 0.1]
