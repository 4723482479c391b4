"""Walk-forward evaluation as a pipeline stage: test windows for every company and window type, forecasts
by the tuned and untuned LLMs (batched, cached), the LSTM and the naive baselines, then metrics, a
backtest and the report. The arithmetic is in `evaluation.py`; the report in `report.py`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

import calibration
import dataset
import distributed
import evaluation as ev
import generation
import lstm
import manifest
import market_data
from configs import DataConfig, DecodingConfig, EvalConfig, parse_flag
from forecast import read_samples
from market_data import Company
from utils import StockToolError, append_jsonl

log = logging.getLogger("stock.evaluate")

EVAL_MODELS = ("tuned", "base", "lstm")


def _sampler(fn):
    """An injected fn(prompts, max_new_tokens) -> answers (str or list of samples each) as the samplers below."""

    def sample(prompts, max_new_tokens, regexes):
        return [answer if isinstance(answer, list) else [answer] for answer in fn(prompts, max_new_tokens)]

    return sample


@dataclass
class _Plan:
    """What an evaluation forecasts: the adapter's settings, the period, the companies' prices and test windows."""

    wanted: list[str]
    adapter: manifest.Manifest | None
    train_data: DataConfig
    test_start: dt.date
    test_end: dt.date
    seen_end: dt.date | None
    companies: list[Company]
    windows: list
    fields: list[str]
    prices: dict
    tests: list


def evaluate(predictor, cfg: EvalConfig, generators: dict | None = None, pool=None) -> dict:
    """Walk-forward forecasts over the test period by the tuned and untuned LLMs, the LSTM and the naive
    baselines, on the same windows; metrics with bootstrap intervals, a backtest and a report.

    `generators` maps "tuned"/"base" to `fn(prompts, max_new_tokens) -> answers`, replacing the
    real models (tests use it); by default the models are loaded from --model-dir. `pool` (a
    `distributed.Pool` over `generator_factory`) spreads generation over the processes of a torchrun launch.
    """
    pool = pool or distributed.Pool(generator_factory(predictor, cfg))
    plan = _plan(predictor, cfg)
    print(
        f"evaluation: {len(plan.tests):,} test windows ({', '.join(w.name for w in plan.windows)}) over "
        f"{plan.test_start} → {plan.test_end}, {len(plan.companies)} companies; models: baselines + "
        f"{', '.join(plan.wanted)}"
    )
    predictions, distributions, reference, rw_last_day, lstm_figures = _reference_forecasts(predictor, cfg, plan)
    run_dir = Path(predictor.train_settings.output_dir) / (cfg.run_name or f"eval_{plan.test_start}_{plan.test_end}")
    cache_dir = run_dir.with_name(run_dir.name + ".answers")
    answers, timings, answer_format, calibrations = _llm_runs(
        predictor, cfg, plan, generators, pool, cache_dir, predictions, distributions
    )
    predictor.release()
    extra = {
        "answer_format": answer_format,
        "bands": cfg.decoding.bands,
        "calibration": {name: cal.summary() for name, cal in calibrations.items()},
        "random_walk_last_day": f"{rw_last_day:%Y-%m-%d}",
        "generation": timings,
        "lstm": lstm_figures,
    }
    result = _score_and_report(predictor, cfg, plan, run_dir, predictions, distributions, reference, answers, extra)
    adapter_dir = None if "tuned" in (generators or {}) else Path(predictor.model_cfg.model_dir)  # not a fake's errors
    calibration.save_all(calibrations, run_dir, adapter_dir)
    shutil.rmtree(cache_dir, ignore_errors=True)  # the answers are in the report's answers.jsonl now
    return result


def _plan(predictor, cfg: EvalConfig) -> _Plan:
    """The adapter's settings (or the command line's), the test period, prices up to its end, the test windows."""
    wanted = _parse_models(cfg.models)
    adapter = _adapter_config(predictor, required=bool({"tuned", "base"} & set(wanted)))
    train_data = (adapter.data if adapter else None) or predictor.data
    test_start, test_end, seen_end = _test_period(predictor, cfg, adapter)
    companies = _eval_companies(predictor, adapter)
    window_text = cfg.windows or (adapter.windows if adapter else None) or predictor.data.windows
    windows = parse_flag(dataset.parse_windows, window_text, "--windows")
    fields = (adapter.fields if adapter else None) or predictor.fields
    first_day = dt.date(train_data.year, train_data.month, 1)
    prices = {
        c.code: market_data.update_prices(c, predictor.cache, first_day, test_end, predictor.client())
        for c in companies
    }
    columns = [dataset.FIELDS[f][1] for f in fields]
    tests = _test_windows(predictor, companies, prices, windows, test_start, test_end, cfg.stride, columns)
    return _Plan(wanted, adapter, train_data, test_start, test_end, seen_end, companies, windows, fields, prices, tests)


def _reference_forecasts(predictor, cfg: EvalConfig, plan: _Plan):
    """The naive baselines, the probabilistic random walk and (when asked) the LSTM, on the plan's windows."""
    predictions = {name: [baseline(w) for w in plan.tests] for name, baseline in ev.BASELINES.items()}
    # the probabilistic random walk: persistence, spread by each stock's past returns over training days only
    last_seen = pd.Timestamp(plan.seen_end or plan.test_start - dt.timedelta(days=1))
    rw_returns = ev.random_walk_returns(plan.prices, plan.windows, last_seen)
    reference = [ev.random_walk_samples(w, rw_returns) for w in plan.tests]
    predictions["random_walk"] = predictions["persistence"]
    distributions = {"random_walk": reference}
    lstm_figures = {}
    if "lstm" in plan.wanted:
        cutoff = pd.Timestamp(plan.adapter.cutoff) if plan.adapter and plan.adapter.cutoff else None
        pool_prices = {code: f[f.index <= last_seen] for code, f in plan.prices.items()}
        predictions["lstm"], lstm_figures = _lstm_forecasts(
            predictor, plan.tests, plan.windows, pool_prices, plan.fields, plan.train_data, cutoff, cfg
        )
    return predictions, distributions, reference, last_seen, lstm_figures


def _llm_runs(predictor, cfg, plan: _Plan, generators, pool, cache_dir, predictions, distributions):
    """The tuned and untuned LLMs' forecasts, one model at a time (each freed before the next loads), into
    `predictions` and `distributions`. Returns (answers, timings, the answer format, calibrations)."""
    answers, timings, calibrations = [], {}, {}
    context = predictor.context_builder(plan.train_data, plan.prices)  # as trained: same signals and news
    answer_format = plan.adapter.answer_format if plan.adapter else predictor.data.answer_format
    for name in ("tuned", "base"):
        if name not in plan.wanted:
            continue
        injected = (generators or {}).get(name)
        # several processes (torchrun): each generates its share of every chunk
        generate = _sampler(injected) if injected else pool.generator(("eval", name))
        identity = _model_identity(predictor, name, plan.adapter, generators) + f":{cfg.decoding.identity()}"
        cache = AnswerCache(cache_dir / f"{name}.jsonl", identity)
        # a chunk (cached as a whole) fills one batch on every process
        chunk = max(256, pool.processes * cfg.batch_size // cfg.decoding.samples)
        predictions[name], distributions[name], model_answers, timings[name] = _llm_forecasts(
            name, plan.tests, plan.fields, generate, cache, context, answer_format, cfg.decoding, chunk
        )
        answers += model_answers
        if cfg.decoding.bands == "calibrated":  # the weight and the band from the model's errors on held-out days
            calibrations[name] = _calibrate(cfg, plan, name, generate, cache, context, answer_format, chunk)
            calibrations[name].apply(name, plan.tests, predictions, distributions)
        del generate
        pool.release(("eval", name))  # frees the model before the next one loads
    return answers, timings, answer_format, calibrations


def _calibrate(cfg, plan: _Plan, name, generate, cache, context, answer_format, chunk) -> calibration.Calibration:
    """The model's errors on its adapter's held-out days (`calibration.held_out`); too few windows: none made."""
    cutoff = plan.adapter.cutoff if plan.adapter else None
    end = min(pd.Timestamp(plan.seen_end or plan.test_start), pd.Timestamp(plan.test_start) - pd.Timedelta(days=1))
    columns = [dataset.FIELDS[f][1] for f in plan.fields]
    tests, empty = calibration.held_out(plan.prices, plan.companies, plan.windows, cutoff, end, cfg.stride, columns)
    if empty is not None:
        print(f"{name}: {empty.notes[0]}")
        return empty
    predictions, _, answers, _ = _llm_forecasts(
        f"{name} calibration", tests, plan.fields, generate, cache, context, answer_format, cfg.decoding, chunk
    )
    return calibration.fit(tests, predictions, cfg.decoding.identity(), cfg.decoding.point, answers)


def _score_and_report(predictor, cfg, plan: _Plan, run_dir, predictions, distributions, reference, answers, extra):
    """Metrics with intervals, the next-day backtest, the report files and TensorBoard; printed headlines."""
    import model
    import report

    frames = [ev.forecast_rows(m, plan.tests, pred, distributions.get(m), reference) for m, pred in predictions.items()]
    rows = ev.add_errors(pd.concat(frames, ignore_index=True))
    table = ev.metrics_table(rows, n_boot=cfg.bootstrap, seed=cfg.seed)
    costs = ev.Costs(cfg.brokerage, cfg.sell_tax)
    one_step = min(plan.windows, key=lambda w: (w.future, w.past)).name
    backtests = {
        m: ev.backtest(rows[(rows["model"] == m) & (rows["window"] == one_step) & (rows["step"] == 1)], costs)
        for m in predictions
    }
    context = {
        "test_start": str(plan.test_start),
        "test_end": str(plan.test_end),
        "adapter": predictor.model_cfg.model_dir if plan.adapter else None,
        "base_model": plan.adapter.base_model if plan.adapter else None,
        "adapter_data_last_date": str(plan.seen_end) if plan.seen_end else None,
        "adapter_training": asdict(plan.adapter.dataset) if plan.adapter and plan.adapter.dataset else None,
        "companies": [c.code for c in plan.companies],
        "windows": [w.name for w in plan.windows],
        "fields": plan.fields,
        "backtest_window": one_step,
        "costs": asdict(costs),
        "config": asdict(cfg),
        **extra,
    }
    paths = report.write_report(run_dir, context, rows, table, backtests, answers)
    board = Path(predictor.train_settings.output_dir) / "runs" / run_dir.name
    model.write_tensorboard(board, report.tensorboard_scalars(table), sorted(run_dir.glob("*.png")))
    print(report.headline_text(table, backtests, context))
    print(f"report: {paths['report']} (metrics {paths['metrics']}); TensorBoard: {board}")
    return {"table": table, "backtests": backtests, "paths": paths, "context": context}


def _adapter_config(predictor, required: bool) -> manifest.Manifest | None:
    """The adapter's saved configuration when an LLM is evaluated; an LSTM-and-baselines run uses none, so an
    adapter left in --model-dir neither changes nor blocks it."""
    return manifest.read(str(predictor.model_cfg.model_dir)) if required else None


def _test_period(predictor, cfg: EvalConfig, adapter: manifest.Manifest | None):
    """(test_start, test_end, last day the adapter saw). Refuses a period the adapter was trained on."""
    seen = None
    if adapter:
        seen = adapter.last_seen
        if not seen:
            raise StockToolError(
                f"{predictor.model_cfg.model_dir} does not record the last day it was trained on; "
                "retrain it with --end-date so that an evaluation can keep to later days"
            )
        seen = dt.date.fromisoformat(seen)
    if cfg.test_start:
        start = _date(cfg.test_start, "--test-start")
    elif seen:
        start = seen + dt.timedelta(days=1)
    else:
        raise StockToolError("--test-start is required when no trained adapter is evaluated")
    end = _date(cfg.test_end, "--test-end") if cfg.test_end else predictor.date_range()[1]
    if end < start:
        raise StockToolError(f"--test-end {end} is before --test-start {start}")
    if seen and seen >= start:
        raise StockToolError(
            f"the adapter in {predictor.model_cfg.model_dir} was trained on prices up to {seen}, which overlaps the "
            f"test period from {start}: that would score it on days it has seen. Use --test-start after {seen} "
            "or retrain with an earlier --end-date"
        )
    return start, end, seen


def _eval_companies(predictor, adapter: manifest.Manifest | None) -> list[Company]:
    if predictor.data.company_list_file or not adapter or not adapter.companies:
        return predictor.companies()
    return [Company.from_saved(c) for c in adapter.companies]


def _test_windows(predictor, companies, prices, windows, test_start, test_end, stride, columns):
    if stride < 1:
        raise StockToolError("--eval-stride must be at least 1")
    tests = []
    start, end = pd.Timestamp(test_start), pd.Timestamp(test_end)
    for window in windows:
        found = []
        for c in companies:
            found += ev.test_windows(prices[c.code], c.code, c.name_zh, window, start, end, stride, columns)
        if not found:
            log.warning("no %s test window fits in %s → %s", window.name, test_start, test_end)
        tests += found
    if not tests:
        days = max((int(((f.index >= start) & (f.index <= end)).sum()) for f in prices.values()), default=0)
        raise StockToolError(
            f"no test window fits in {test_start} → {test_end}: the price data has {days} trading day(s) there "
            f"and the shortest window needs {min(w.future for w in windows)} (check --test-start/--test-end, "
            "--end-date and that prices reach the test period)"
        )
    return tests


def _lstm_forecasts(predictor, tests, windows, prices, fields, train_data, cutoff, cfg):
    """Train one LSTM per window type on the LLM's training windows, then forecast the test windows."""
    predictions: list = [None] * len(tests)
    figures = {}
    if cutoff is None:  # no adapter: the same rule as `build_dataset`, on the days before the test period
        all_dates = [d for f in prices.values() for d in f.index]
        cutoff = dataset.split_cutoff(all_dates, train_data.val_fraction) if len(set(all_dates)) > 1 else None
    for window in windows:
        train, val = training_windows(prices, window, fields, train_data.stride, cutoff)
        train_x = [ev.window_features(past) for _, past, _ in train]
        train_y = [ev.window_targets(future, float(past["Close"].iloc[-1])) for _, past, future in train]
        val_x = [ev.window_features(past) for _, past, _ in val]
        val_y = [ev.window_targets(future, float(past["Close"].iloc[-1])) for _, past, future in val]
        index = [i for i, w in enumerate(tests) if w.window == window]
        if not index:
            continue
        if not train_x:
            log.warning("LSTM %s: no training window; its forecasts count as failures", window.name)
            continue
        fitted = lstm.fit_lstm(train_x, train_y, val_x, val_y, lstm.LstmSettings(epochs=cfg.lstm_epochs, seed=cfg.seed))
        figures[window.name] = fitted["figures"]
        out = lstm.predict_lstm(fitted, [ev.window_features(tests[i].past) for i in index])
        for i, pred in zip(index, out, strict=True):
            predictions[i] = ev.targets_to_candles(pred, tests[i].last_close)
        log.info("LSTM %s: %s", window.name, fitted["figures"])
    return predictions, figures


def generator_factory(predictor, cfg: EvalConfig):
    """("eval", name) → the generator of the tuned or base model: what every process of a sharded evaluation
    builds (`distributed.Pool`)."""
    return lambda key: _generator(predictor, key[1], cfg.batch_size, cfg.decoding)


def _generator(predictor, name: str, batch_size: int, decoding: DecodingConfig):
    """fn(prompts, max_new_tokens, regexes) -> samples per prompt for the tuned or the untuned model, loaded
    on first use; the regexes are used when decoding is constrained."""
    import model

    predictor.release()
    state: dict = {}

    def generate(prompts, max_new_tokens, regexes):
        if "loaded" not in state:
            state["loaded"] = model.load_for_inference(predictor.model_cfg.model_dir, adapter=name == "tuned")
        return generation.generate_samples(
            state["loaded"],
            prompts,
            max_new_tokens,
            batch_size,
            decoding.samples,
            decoding.temperature,
            regexes if decoding.constrained else None,
            seed=decoding.seed,
        )

    return generate


def _model_identity(predictor, name: str, adapter: manifest.Manifest | None, generators: dict | None) -> str:
    """What the cached answers depend on: the adapter's (or an export's) weights file (tuned) or the base model's
    name."""
    if generators and name in generators:
        return f"{name}:injected"
    if name == "tuned":
        weights = manifest.weights_file(predictor.model_cfg.model_dir, adapter)
        stat = weights.stat() if weights.is_file() else None
        return f"tuned:{weights.resolve()}:{stat.st_size if stat else 0}:{stat.st_mtime_ns if stat else 0}"
    return f"base:{adapter.base_model if adapter else None}"


def training_windows(prices: dict, window, fields, stride: int, cutoff: pd.Timestamp | None):
    """([(code, past, future)] train, [...] validation): exactly the windows `build_dataset` gives the LLM
    (same spans, same cutoff rule), as frames for the LSTM."""
    train, val = [], []
    split_at = cutoff if cutoff is not None else pd.Timestamp.max
    for code, frame in prices.items():
        spans, _ = dataset.window_spans(frame, window, fields, stride)
        for start, mid, end in spans:
            past, future = frame.iloc[start:mid], frame.iloc[mid:end]
            if future.index[-1] < split_at:
                train.append((code, past, future))
            elif past.index[0] >= split_at:
                val.append((code, past, future))
    return train, val


class AnswerCache:
    """Generated answers, appended as each chunk finishes, so an interrupted evaluation resumes where it
    stopped instead of generating everything again. Keys cover the model's identity, the prompt and the
    token budget; a torn last line (a crash mid-write) is ignored."""

    def __init__(self, path: Path, identity: str):
        self.path, self.identity = path, identity
        self.answers: dict[str, list[str]] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                self.answers[row["key"]] = row["answer"]

    def key(self, prompt: list[dict], max_new_tokens: int) -> str:
        text = json.dumps([self.identity, max_new_tokens, prompt], ensure_ascii=False)
        return hashlib.sha1(text.encode("utf-8")).hexdigest()

    def add(self, keys: list[str], answers: list) -> None:
        append_jsonl(self.path, [{"key": k, "answer": a} for k, a in zip(keys, answers, strict=True)])
        self.answers.update(zip(keys, answers, strict=True))


def _llm_forecasts(name, tests, fields, generate, cache, context, answer_format, decoding, chunk=256):
    """Prompt (with the as-of context), generate (batched, one window type at a time, cached chunk by
    chunk), parse strictly. Returns point forecasts, sample distributions (closes), answers and timing.
    A failure stays a failure: samples that do not parse or are not candles are left out and counted, and
    a forecast with fewer than half of its samples usable fails."""
    import time

    predictions, distributions, answers = [None] * len(tests), [None] * len(tests), []
    started, generated, reused = time.perf_counter(), 0, 0
    for window in sorted({w.window for w in tests}, key=lambda w: (w.future, w.past)):
        index = [i for i, w in enumerate(tests) if w.window == window]
        max_new = dataset.answer_token_budget(window.future, fields)
        prompts, regexes, kinds = _window_prompts([tests[i] for i in index], window, fields, context, answer_format)
        keys = [cache.key(prompt, max_new) for prompt in prompts]
        missing = [j for j, k in enumerate(keys) if k not in cache.answers]
        reused += len(prompts) - len(missing)
        for c in range(0, len(missing), chunk):
            part = missing[c : c + chunk]
            cache.add(
                [keys[j] for j in part], generate([prompts[j] for j in part], max_new, [regexes[j] for j in part])
            )
            generated += len(part)
        for i, key, kind in zip(index, keys, kinds, strict=True):
            predictions[i], distributions[i], record = _read_answer(tests[i], cache.answers[key], fields, answer_format)
            w = tests[i]
            where = {"model": name, "code": w.code, "window": window.name, "origin": f"{w.origin:%Y-%m-%d}"}
            answers.append(where | {"context": kind} | record)
        log.info("%s %s: %d forecasts", name, window.name, len(index))
    seconds = time.perf_counter() - started
    valid = sum(pred is not None for pred in predictions)
    rate = generated / seconds if generated and seconds > 0 else None
    print(
        f"{name}: {generated:,} forecasts generated in {seconds:.1f} s"
        + (f" ({rate:.1f}/s, {decoding.describe()})" if rate else "")
        + (f", {reused:,} reused from an interrupted run" if reused else "")
        + f"; {valid:,} of {len(tests):,} usable"
    )
    timing = {"forecasts": generated, "reused": reused, "seconds": round(seconds, 2), "valid": valid}
    return predictions, distributions, answers, timing | {"forecasts_per_s": round(rate, 2) if rate else None}


def _window_prompts(tests, window, fields, context, answer_format):
    """(chat prompts, answer regexes, context kinds) of test windows of one window type."""
    contexts = [context(w.code)(w.origin) for w in tests]
    prompts = [
        [{"role": "user", "content": dataset.user_prompt(w.name, w.past, window.future, fields, c, answer_format)}]
        for w, (c, _) in zip(tests, contexts, strict=True)
    ]
    # the answer's dates are the market's next trading days (its calendar is published a year ahead)
    regexes = [dataset.answer_regex(w.actual.index, fields, answer_format) for w in tests]
    return prompts, regexes, [kind for _, kind in contexts]


def _read_answer(w, raw, fields, answer_format):
    """(point forecast or None, sample closes or None, the answer's record) of one test window's raw answer."""
    samples = [raw] if isinstance(raw, str) else raw
    read = read_samples(samples, fields, w.window.future, w.origin, dataset.anchor_of(w.history, answer_format))
    point = read.point[ev.OHLC].to_numpy(dtype=float) if read.ok else None
    closes = read.closes if read.ok and len(samples) > 1 else None
    record = {
        "valid": read.ok,
        "usable_samples": read.usable,
        "impossible_samples": read.impossible,
        "problem": read.problem,
        "answer": samples[0] if len(samples) == 1 else samples,
    }
    return point, closes, record


def _parse_models(text: str) -> list[str]:
    models = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in models if m not in EVAL_MODELS]
    if unknown:
        raise StockToolError(f"--eval-models: unknown {unknown}; choose from {', '.join(EVAL_MODELS)}")
    return models


def _date(text: str, flag: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise StockToolError(f"{flag} {text!r} is not a date YYYY-MM-DD") from exc
