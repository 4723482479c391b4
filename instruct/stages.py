"""Financial instruction tuning as pipeline stages: the events database and its instructions, the
teacher-built news-analysis dataset, LoRA on instruction files, and the base-vs-tuned comparison.

Each function takes the `Workspace` (companies, prices, news, where files go) and the settings it uses; the
data handling and scoring themselves are in `instructions.py` and `events.py`.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from config import manifest
from config.flags import as_text
from config.inference_args import InferenceConfig
from config.instruct_args import InstructConfig, InstructDataConfig
from config.model_args import LoraConfig, ModelConfig
from config.training_args import TrainConfig
from evaluation.answer_cache import AnswerCache
from llm import distributed, generation
from market import daily_reports, news
from market.exchanges import ExchangeClient
from market.workspace import Workspace
from utils import StockToolError, atomic_write_text, write_json, write_jsonl

log = logging.getLogger("stock.instruct")

TRAIN_QUESTIONS = "train_questions.txt"  # beside an instruction adapter: fingerprints of its training questions


def build_events(ws: Workspace, built_from: InstructDataConfig) -> dict:
    """The events database from stored news and prices, then news-impact and market-analysis instructions.

    Writes `<data-dir>/events.sqlite` (rebuilt whole, atomically) and
    `<data-dir>/instructions/events_instructions.jsonl`, ready for `--task instruct --dataset-file`.
    """
    from instruct import events_db

    weights, rows = dict(built_from.instruct_mix), built_from.instruct_rows
    companies = ws.companies()
    prices = ws.fetch_prices(companies)
    ws.collect_news(companies)
    start, end = ws.date_range()
    exchange = ws.client() if isinstance(ws.client(), ExchangeClient) else None  # None offline
    taiex = daily_reports.update_taiex(ws.cache.directory, start, end, exchange)
    if taiex is None:
        log.warning("no TAIEX closes (%s/TAIEX.csv, or online): market returns are left empty", ws.cache.directory)
    store = ws.news_store()
    items = []
    for company in companies:
        for article in store.articles(company.code, ("zh", "en")):
            items.append({**article, "code": company.code})
    if not items:
        raise StockToolError(
            f"no stored news for these companies in {store.directory}: collect it (NEWSAPI_KEY) or import "
            "headlines with --news-csv first"
        )
    db_path = ws.store_dir("events.sqlite")
    counts = events_db.build(db_path, items, prices, taiex)
    names = {c.code: c.name_zh for c in companies}
    mix = events_db.Mix(weights, rows, ws.seed)
    built = events_db.build_instructions(events_db.read_impacts(db_path), prices, taiex, names, mix)
    out = ws.store_dir("instructions") / "events_instructions.jsonl"
    write_jsonl(out, built)
    kinds = {k: sum(r["kind"] == k for r in built) for k in ("news_impact", "market_analysis")}
    print(
        f"events: {counts['events']:,} news items, {counts['impacts']:,} impacts (windows 1/5/20) → {db_path}; "
        f"instructions: {kinds['news_impact']:,} news-impact + {kinds['market_analysis']:,} market-analysis → {out}"
    )
    return {"db": db_path, "instructions": out, **counts, **kinds}


def build_forecaster(ws: Workspace, teacher, built_from: InstructDataConfig) -> dict:
    """News-driven analysis rows (FinGPT-Forecaster style): past weeks' moves and headlines → three sections.

    The teacher sees the real next-week movement, so every training answer's prediction is what happened;
    answers whose sections or prediction disagree are rejected and counted. Answers are cached as they come
    (a rerun resumes); the dataset files are written only when every sample has an answer.
    """
    import random

    weeks, samples = built_from.forecaster_weeks, built_from.forecaster_samples
    companies = ws.companies()
    prices = ws.fetch_prices(companies)
    ws.collect_news(companies)
    store = ws.news_store()
    candidates = [c for company in companies for c in _forecaster_weeks(company, prices[company.code], store, weeks)]
    if not candidates:
        raise StockToolError(f"too little history for {weeks} past weeks plus one; start earlier with --year/--month")
    chosen = random.Random(ws.seed).sample(candidates, min(samples, len(candidates)))
    chosen.sort(key=lambda c: (c["week_end"], c["code"]))
    directory = ws.store_dir("instructions")
    rows, rejected = _teacher_answers(teacher, chosen, directory / "forecaster_teacher_cache.jsonl")
    cut = sorted(r["week_end"] for r in rows)[int(len(rows) * (1 - ws.examples.val_fraction))] if rows else ""
    train = [r for r in rows if r["week_end"] < cut]
    test = [r for r in rows if r["week_end"] >= cut]
    write_jsonl(directory / "forecaster_train.jsonl", train)
    write_jsonl(directory / "forecaster_test.jsonl", test)
    print(
        f"forecaster: {len(chosen):,} samples ({sum(c['news'] > 0 for c in chosen):,} with headlines), "
        f"{teacher.calls} teacher call(s), {rejected} answer(s) rejected (format or prediction); "
        f"{len(train):,} train / {len(test):,} test (test weeks from {cut}) → {directory}"
    )
    return {"train": len(train), "test": len(test), "rejected": rejected, "calls": teacher.calls}


def _forecaster_weeks(company, frame, store, weeks: int) -> list[dict]:
    """One candidate per week with `weeks` weeks before it: the prompt (past moves and each week's headlines, as
    of its end), the next week's movement bin (the answer) and the last week's (persistence's)."""
    from instruct import instruction_data

    articles = store.articles(company.code, ("zh", "en"))
    by_week = [g for _, g in frame.groupby([frame.index.isocalendar().year, frame.index.isocalendar().week])]
    out = []
    for k in range(weeks, len(by_week)):
        past, nxt = by_week[k - weeks : k], by_week[k]
        described = []
        for week in past:
            start, end = week.index[0].date(), week.index[-1].date()
            heads = [a["title"] for a in news.articles_as_of(articles, end, since=start)][:5]
            closes = (float(week["Close"].iloc[0]), float(week["Close"].iloc[-1]))
            described.append({"start": f"{start}", "end": f"{end}", "headlines": heads, "open_close": closes})
        last_close = float(past[-1]["Close"].iloc[-1])
        before_last = float(past[-2]["Close"].iloc[-1]) if weeks > 1 else float(past[-1]["Close"].iloc[0])
        span = (f"{nxt.index[0]:%Y-%m-%d}", f"{nxt.index[-1]:%Y-%m-%d}")
        out.append(
            {
                "code": company.code,
                "week_end": span[1],
                "prompt": instruction_data.forecaster_prompt(company.name_zh, company.code, described, span),
                "movement": instruction_data.movement_bin(float(nxt["Close"].iloc[-1]) / last_close - 1),
                "last_movement": instruction_data.movement_bin(last_close / before_last - 1),
                "news": sum(len(d["headlines"]) for d in described),
            }
        )
    return out


FORECASTER_SYSTEM = (
    "You are a seasoned stock market analyst. Answer in exactly this format:\n"
    "[Positive Developments]:\n1. ...\n[Potential Concerns]:\n1. ...\n[Prediction & Analysis]:\n"
    "Prediction: Up/Down by X-Y% (or by more than 5%)\nAnalysis: ..."
)


def _teacher_answers(teacher, chosen: list[dict], cache_path: Path) -> tuple[list[dict], int]:
    """(rows whose answer has the three sections and predicts what happened, answers rejected). Every answer is
    cached as it comes; a failing teacher stops the run with nothing written, and a rerun resumes."""
    from instruct import instruction_data, scorers

    cache = AnswerCache(cache_path, f"teacher:{teacher.url}:{teacher.model}")
    rows, rejected = [], 0
    for c in chosen:
        hint = (
            f"{c['prompt']}\n\n(For the writer only, never mention it: next week the stock actually moved "
            f"{instruction_data.bin_words(c['movement'])}. Your prediction line must read 'Prediction: "
            f"{instruction_data.bin_words(c['movement'])}'.)"
        )
        key = cache.key([{"role": "system", "content": FORECASTER_SYSTEM}, {"role": "user", "content": hint}], 0)
        if key not in cache.answers:
            try:
                cache.add([key], [teacher.chat(FORECASTER_SYSTEM, hint)])
            except StockToolError as exc:  # the endpoint is down: stop, keep what is cached, report
                raise StockToolError(
                    f"the teacher failed ({exc}); {len(cache.answers):,} answers are cached in {cache.path} and no "
                    "dataset was written: rerun to resume"
                ) from exc
        answer = cache.answers[key]
        if scorers.sections_valid(answer) and scorers.parse_prediction(answer) == c["movement"]:
            rows.append(
                {k: c[k] for k in ("prompt", "movement", "last_movement", "code", "week_end")} | {"answer": answer}
            )
        else:
            rejected += 1
    return rows, rejected


def train_instruct(
    ws: Workspace, model_cfg: ModelConfig, lora: LoraConfig, settings: TrainConfig, cfg: InstructConfig
) -> dict:
    """LoRA on Alpaca / conversational / sentiment files mixed by weight; answer-only loss."""
    import model
    from instruct import instruction_data
    from llm import sft
    from llm.sft_data import TrainingData

    if not cfg.dataset_files:
        raise StockToolError("--task instruct --train 1 needs --dataset-file a.jsonl[,b.jsonl:weight ...]")
    model.check_quantization(model_cfg, model.cuda_available())
    files, sources = [], {}
    for path, weight in cfg.dataset_files:
        rows, skipped = instruction_data.read_rows(path, cfg.skip_bad_rows)
        files.append((rows, weight))
        sources[path] = {"rows": len(rows), "weight": weight, "bad_rows_skipped": skipped}
    mixed = instruction_data.mix(files, ws.seed)
    train, val = instruction_data.split(mixed, ws.examples.val_fraction, ws.seed)
    val = val[: ws.examples.max_val_examples]
    print(
        f"instructions: {len(mixed):,} rows from {len(files)} file(s) → {len(train):,} train / {len(val):,} "
        f"validation (split by question); template {cfg.template}; "
        + "; ".join(
            f"{p}: {v['rows']:,} rows × {v['weight']:g}, {v['bad_rows_skipped']} bad skipped"
            for p, v in sources.items()
        )
    )
    fingerprints = "".join(f"{f}\n" for f in sorted({instruction_data.fingerprint(r) for r in train}))
    data = TrainingData(
        tuple(instruction_data.to_example(r, cfg.template) for r in train),
        tuple(instruction_data.to_example(r, cfg.template) for r in val),
        {},
        {"task": "instruct", "instruct": as_text(cfg), "sources": sources},
    )
    figures = sft.train(sft.Job(model_cfg, lora, settings, data, {TRAIN_QUESTIONS: fingerprints}))
    print("training: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
    print(f"adapter saved to {model_cfg.model_dir}")
    return figures


def _compare_names(model_cfg: ModelConfig, cfg: InstructConfig) -> list[str]:
    return list(cfg.compare or (model_cfg.model_dir,))


COMPARE_BATCH = 64  # prompts generated together unless --generation-batch-size says otherwise (a GPU's)


def compare_factory(model_cfg: ModelConfig, cfg: InstructConfig, inference: InferenceConfig):
    """("compare", name) → a generator fn(prompts, max_new_tokens, regexes=None) -> answers of that model
    ("base" or an adapter folder), its loaded model as `.loaded`: what every process of a sharded comparison
    builds (`distributed.Pool`). "base" is the adapters' base model unless --model-name names one."""
    import model

    adapters = [n for n in _compare_names(model_cfg, cfg) if n != "base"]
    base_cfg = model_cfg
    if adapters and not model_cfg.model_name:
        base_cfg = replace(model_cfg, model_name=manifest.read(adapters[0]).base_model)

    how = generation.Sampling(batch_size=inference.batch_size or COMPARE_BATCH, seed=inference.seed)

    def build(key):
        name = key[1]
        loaded = model.load_untuned(base_cfg) if name == "base" else model.load_for_inference(name)

        def generate(prompts, max_new_tokens, regexes=None):
            return generation.generate(loaded, prompts, max_new_tokens, how)

        generate.loaded = loaded
        return generate

    return build


def compare(ws: Workspace, model_cfg: ModelConfig, cfg: InstructConfig, inference: InferenceConfig, pool=None):
    """Run each model of --compare over --eval-file: answers JSONL per model, scores with 95% intervals
    where gold answers exist, and a side-by-side Markdown comparison. Refuses rows an adapter trained on.
    `pool` (a `distributed.Pool` over `compare_factory`) spreads generation over a torchrun launch's processes."""
    import model
    from instruct import instruction_data, scorers

    if not cfg.eval_file:
        raise StockToolError("--task instruct --train 0 needs --eval-file (instructions to answer)")
    rows, skipped = instruction_data.read_rows(cfg.eval_file, cfg.skip_bad_rows)
    rows = rows[: cfg.limit] if cfg.limit else rows
    names = _compare_names(model_cfg, cfg)
    rows = _unseen_rows([n for n in names if n != "base"], rows)
    pool = pool or distributed.Pool(compare_factory(model_cfg, cfg, inference))
    out_dir = ws.output_dir / (cfg.run_name or f"compare_{Path(cfg.eval_file).stem}")
    results = {}
    for name in names:
        loaded = pool.local(("compare", name)).loaded
        template = loaded.config.instruct.template if loaded.config.instruct else cfg.template
        rows = _rows_that_fit(loaded, rows, template, cfg.max_new_tokens, first=not results)
        prompts = [instruction_data.to_example(r, template)["prompt"] for r in rows]
        # several processes (torchrun): each answers its share of the rows
        answers = pool.generator(("compare", name))(prompts, cfg.max_new_tokens)
        del loaded
        pool.release(("compare", name))
        model.free_memory()
        label = "base" if name == "base" else Path(name).name
        write_jsonl(
            out_dir / f"answers_{label}.jsonl",
            [
                {"origin": r.origin, "question": r.question, "gold": r.gold or r.output, "answer": a, "model": name}
                for r, a in zip(rows, answers, strict=True)
            ],
        )
        results[label] = {
            "model": name,
            "template": template,
            "scores": scorers.score(rows, answers, cfg.bootstrap),
            "answers": answers,
        }
    write_json(out_dir / "scores.json", {k: {**v, "answers": None} for k, v in results.items()})
    text = _comparison_markdown(cfg.eval_file, rows, results, skipped)
    atomic_write_text(out_dir / "comparison.md", text)
    print(text.split("\n## Side by side")[0])
    print(f"comparison: {out_dir / 'comparison.md'}")
    return results


def _unseen_rows(adapters: list[str], rows: list) -> list:
    """The eval `rows` that none of the `adapters` trained on (the overlap guard, before any model is loaded);
    refuses when every row was seen, and says how many it leaves out."""
    from instruct import instruction_data

    for adapter in adapters:  # the overlap guard, before any model is loaded
        seen_file = Path(adapter) / TRAIN_QUESTIONS
        if not seen_file.is_file():
            manifest.read(adapter)  # a clear "no trained adapter" error when it is not one
            raise StockToolError(f"{adapter} has no {TRAIN_QUESTIONS}: cannot prove the eval rows are unseen")
        seen = set(seen_file.read_text(encoding="utf-8").split())
        overlap = [r.origin for r in rows if instruction_data.fingerprint(r) in seen]
        if overlap and len(overlap) == len(rows):
            raise StockToolError(
                f"{len(overlap)} of {len(rows)} eval rows were in {adapter}'s training data (e.g. {overlap[:3]}); "
                "score on rows kept apart"
            )
        if overlap:  # every model is scored on the rows no adapter trained on
            rows = [r for r in rows if instruction_data.fingerprint(r) not in seen]
            print(
                f"compare: {len(overlap)} eval row(s) were in {adapter}'s training data (e.g. {overlap[:3]}) "
                f"and are left out; {len(rows)} remain"
            )
    return rows


def _rows_that_fit(loaded, rows: list, template: str, max_new_tokens: int, first: bool) -> list:
    """The rows whose prompt and answer fit in the first model's context; the others are left out and counted.
    Every later model is scored on the same rows, so one with a shorter context that cannot take them stops."""
    from instruct import instruction_data

    fits = [
        loaded.prompt_tokens(instruction_data.to_example(r, template)["prompt"]) + max_new_tokens <= loaded.context
        for r in rows
    ]
    if all(fits):
        return rows
    if not first:
        raise StockToolError(
            f"{sum(not f for f in fits)} eval row(s) fit the first model's context but not this one's "
            f"({loaded.context:,} tokens): compare models of one context, or lower --max-new-tokens"
        )
    kept = [r for r, ok in zip(rows, fits, strict=True) if ok]
    print(
        f"compare: {len(rows) - len(kept)} of {len(rows)} eval row(s) are longer than the model's context of "
        f"{loaded.context:,} tokens with --max-new-tokens {max_new_tokens} and are left out"
    )
    if not kept:
        raise StockToolError("no eval row fits in the model's context: lower --max-new-tokens or use shorter rows")
    return kept


def _score_cells(task: str, s: dict, ci) -> tuple[str, str]:
    """The score and notes columns of one task's row: each task type has its own headline figure."""
    if task == "free_text":
        return f"ROUGE-L {s['rouge_l']:.3f}{ci(s['rouge_l_ci95'])}", ""
    if task == "forecaster":

        def bins(value):
            return "n/a" if value is None else f"{value:.2f}"

        notes = (
            f"majority class {s['majority_class_accuracy']:.3f}; sections valid {s['section_validity']:.3f}; "
            f"mean bin error {bins(s['mean_bin_error'])} (persistence {bins(s['persistence_mean_bin_error'])})"
        )
        return f"direction accuracy {s['direction_accuracy']:.3f}{ci(s['direction_accuracy_ci95'])}", notes
    score = f"accuracy {s['accuracy']:.3f}{ci(s['accuracy_ci95'])}"
    if task == "sentiment":
        return score, (
            f"macro-F1 {s['macro_f1']:.3f}; majority class {s['majority_class_accuracy']:.3f}; "
            f"{s['unlabelled_answers']} answers name no label"
        )
    return score, "exact letters"


def _comparison_markdown(eval_file, rows, results: dict, skipped: int) -> str:
    def ci(pair):
        return f" [{pair[0]:.3f}, {pair[1]:.3f}]" if pair else ""

    lines = [
        f"# Comparison on {eval_file}",
        "",
        f"{len(rows):,} rows ({skipped} bad rows skipped).",
        "",
        "| model | task | n | score [95% CI] | notes |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    for label, result in results.items():
        for task, s in result["scores"].items():
            score, notes = _score_cells(task, s, ci)
            lines.append(f"| {label} | {task} | {s['n']:,} | {score} | {notes} |")
    lines += ["", "## Side by side", ""]
    for i, row in enumerate(rows[:5]):
        lines += [f"### {i + 1}. {row.question[:300]}", "", f"- gold: {(row.gold or row.output)[:300]}"]
        lines += [f"- {label}: {result['answers'][i][:300]!r}" for label, result in results.items()]
        lines.append("")
    return "\n".join(lines) + "\n"
