"""The tuned and the untuned LLM as forecasters of a walk-forward evaluation (`evaluation.interface.Forecaster`).

`fit` calibrates the bands on the adapter's held-out days when --bands calibrated (`evaluation.calibrate`);
`predict` prompts every test window with the as-of context the adapter was trained with, generates in
chunks (cached, so an interrupted evaluation resumes; spread over the processes of a torchrun launch) and
reads each answer strictly: a failure stays a failure.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from config import data_args, manifest
from config.inference_args import InferenceConfig
from evaluation import calibrate, forecast_windows
from evaluation.answer_cache import AnswerCache
from evaluation.interface import Forecaster, Forecasts, History
from forecasting.reading import read_samples
from llm import generation
from prompts import prompt_format

log = logging.getLogger("stock.evaluate")
FORECAST_BATCH = 1024  # sequences generated together unless --generation-batch-size says otherwise (a GPU's)


@dataclass(eq=False)
class Llm(Forecaster):
    """One LLM ("tuned" or "base"). `generate(prompts, max_new_tokens, regexes)` gives samples per prompt;
    `context(code)(as_of)` the prompt's context; `fields` and `answer_format` are those the adapter was trained
    with; `stride` spaces the calibration windows' origins; `release()` frees the model on every process."""

    name: str = field()  # (a field, not the interface's class attribute)
    generate: Callable
    cache: AnswerCache
    context: Callable
    fields: tuple[str, ...]
    answer_format: str
    decoding: InferenceConfig
    stride: int
    chunk: int = 256
    release: Callable = lambda: None
    supports_probabilistic_prediction = True

    def _fit(self, history: History) -> None:
        """With --bands calibrated: the point weight and the band from the model's errors on the adapter's
        held-out days before the test period (`calibration.held_out`); too few windows: none made."""
        if self.decoding.bands != "calibrated":
            return
        columns = [data_args.FIELDS[f][1] for f in history.fields]
        tests, empty = calibrate.held_out(history, self.stride, columns)
        if empty is not None:
            print(f"{self.name}: {empty.notes[0]}")
            self.calibration = empty
            return
        held = self._forecasts(f"{self.name} calibration", tests)
        cal = calibrate.fit(tests, held.points, self.decoding.identity(), self.decoding.point, held.answers)
        # the band's family is chosen with GARCH fitted before the held-out days, and used with GARCH fitted on
        # every training day, as the GARCH reference of the evaluation is
        before = calibrate.fit_garch_all(history.prices, min(w.origin for w in tests))
        calibrate.fit_corrections(cal, tests, held.samples or [None] * len(tests))
        calibrate.choose_families(cal, tests, held, before, self.decoding.band_family)
        cal.garch = calibrate.fit_garch_all(history.prices, history.last_day)
        print(f"{self.name}: band per window type {cal.families} (held-out CRPS %: {cal.family_crps})")
        self.calibration = cal

    def _predict(self, tests: list[forecast_windows.TestWindow]) -> Forecasts:
        out = self._forecasts(self.name, tests)
        cal = self.calibration
        if cal is not None:  # weighed toward the last close, its band from the held-out errors
            if cal.weights:
                out.raw, out.points = out.points, cal.weighted(tests, out.points)
            out.samples = cal.distributions(tests, out.points, out.samples)
        return out

    def close(self) -> None:
        import model

        self.generate = None
        self.release()
        model.free_memory()

    def _forecasts(self, label: str, tests: list[forecast_windows.TestWindow]) -> Forecasts:
        """Prompt (with the as-of context), generate (one window type at a time, cached chunk by chunk), parse
        strictly. Samples that do not parse or are not candles are left out and counted; a forecast with
        fewer than half of its samples usable fails."""
        points, samples, answers = [None] * len(tests), [None] * len(tests), []
        started, generated, reused = time.perf_counter(), 0, 0
        for window in sorted({w.window for w in tests}, key=lambda w: (w.future, w.past)):
            index = [i for i, w in enumerate(tests) if w.window == window]
            max_new = prompt_format.answer_token_budget(window.future, self.fields)
            prompts, regexes, kinds = self._prompts([tests[i] for i in index], window)
            keys = [self.cache.key(prompt, max_new) for prompt in prompts]
            missing = [j for j, k in enumerate(keys) if k not in self.cache.answers]
            reused += len(prompts) - len(missing)
            for c in range(0, len(missing), self.chunk):
                part = missing[c : c + self.chunk]
                answered = self.generate([prompts[j] for j in part], max_new, [regexes[j] for j in part])
                self.cache.add([keys[j] for j in part], answered)
                generated += len(part)
            for i, key, kind in zip(index, keys, kinds, strict=True):
                points[i], samples[i], record = self._read(tests[i], self.cache.answers[key])
                w = tests[i]
                where = {"model": label, "code": w.code, "window": window.name, "origin": f"{w.origin:%Y-%m-%d}"}
                answers.append(where | {"context": kind} | record)
            log.info("%s %s: %d forecasts", label, window.name, len(index))
        timing = _timing(label, time.perf_counter() - started, generated, reused, points, self.decoding)
        return Forecasts(points, samples, answers=answers, figures={"generation": timing})

    def _prompts(self, tests, window):
        """(chat prompts, answer regexes, context kinds) of test windows of one window type."""
        contexts = [self.context(w.code)(w.origin) for w in tests]
        prompts = [
            [
                {
                    "role": "user",
                    "content": prompt_format.user_prompt(
                        w.name,
                        w.past,
                        window.future,
                        self.fields,
                        c,
                        prompt_format.anchor_of(w.history, self.answer_format) or "absolute",
                    ),
                }
            ]
            for w, (c, _) in zip(tests, contexts, strict=True)
        ]
        # the answer's dates are the market's next trading days (its calendar is published a year ahead)
        regexes = [prompt_format.answer_regex(w.actual.index, self.fields, self.answer_format) for w in tests]
        return prompts, regexes, [kind for _, kind in contexts]

    def _read(self, w, raw):
        """(point forecast or None, sample closes or None, the answer's record) of one window's raw answer."""
        answers = [raw] if isinstance(raw, str) else raw
        anchor = prompt_format.anchor_of(w.history, self.answer_format)
        read = read_samples(answers, self.fields, w.window.future, w.origin, anchor)
        point = read.point[data_args.OHLC].to_numpy(dtype=float) if read.ok else None
        closes = read.closes if read.ok and len(answers) > 1 else None
        record = {
            "valid": read.ok,
            "usable_samples": read.usable,
            "impossible_samples": read.impossible,
            "problem": read.problem,
            "answer": answers[0] if len(answers) == 1 else answers,
        }
        return point, closes, record


def _timing(label, seconds, generated, reused, points, decoding: InferenceConfig) -> dict:
    """Prints and returns how many forecasts were generated, how fast, and how many were usable."""
    valid = sum(point is not None for point in points)
    rate = generated / seconds if generated and seconds > 0 else None
    print(
        f"{label}: {generated:,} forecasts generated in {seconds:.1f} s"
        + (f" ({rate:.1f}/s, {decoding.describe()})" if rate else "")
        + (f", {reused:,} reused from an interrupted run" if reused else "")
        + f"; {valid:,} of {len(points):,} usable"
    )
    timing = {"forecasts": generated, "reused": reused, "seconds": round(seconds, 2), "valid": valid}
    return timing | {"forecasts_per_s": round(rate, 2) if rate else None}


def generator_factory(model_dir: str, inference: InferenceConfig):
    """("eval", name) → the generator of the tuned or base model: what every process of a sharded evaluation
    builds (`distributed.Pool`)."""
    return lambda key: _generator(model_dir, key[1], inference)


def _generator(model_dir: str, name: str, inference: InferenceConfig):
    """fn(prompts, max_new_tokens, regexes) -> samples per prompt for the tuned or the untuned model, loaded
    on first use; the regexes are used when decoding is constrained. Its `identity`: what its answers depend on
    besides the prompt (the adapter's weights file, or the base model's name)."""
    import model

    state: dict = {}
    how = generation.Sampling.of(inference, inference.batch_size or FORECAST_BATCH)

    def generate(prompts, max_new_tokens, regexes):
        if "loaded" not in state:
            state["loaded"] = model.load_for_inference(model_dir, adapter=name == "tuned")
        rules = regexes if inference.constrained else None
        return generation.generate_samples(state["loaded"], prompts, max_new_tokens, how, rules)

    generate.identity = model_identity(model_dir, name, manifest.read(model_dir))
    return generate


def model_identity(model_dir: str, name: str, adapter: manifest.Manifest | None) -> str:
    """What the cached answers depend on: the adapter's (or an export's) weights file (tuned) or the base model's
    name."""
    if name == "tuned":
        weights = manifest.weights_file(model_dir, adapter)
        stat = weights.stat() if weights.is_file() else None
        return f"tuned:{weights.resolve()}:{stat.st_size if stat else 0}:{stat.st_mtime_ns if stat else 0}"
    return f"base:{adapter.base_model if adapter else None}"
