"""Command line: parse the spec's arguments, build the configs once, dispatch. Nothing else lives here.

python main.py --train 1 --company-list-file data/companies.json     # fetch, build, fine-tune
python main.py --train 0 --code 2330 --past 5 --future 5             # forecast + candlestick chart
python main.py --train 0 --evaluate 1 --test-start 2026-03-02         # walk-forward report vs baselines
python main.py --train 0 --trade 1 [--execute]                        # plan (and send) orders on the server
python main.py --train 1 --task instruct --dataset-file a.jsonl,b.jsonl    # financial instruction tuning
python main.py --train 0 --task instruct --eval-file t.jsonl --compare base,outputs/model   # side by side
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("stock")

# Trainer defaults. CUDA: the spec's total batch of 32 and 60 steps, as 16 x 2 rather than 8 x 4 because
# padding-free batches of 16 measured fastest on the H100 (README, "Measured"). CPU: a short, labelled
# demonstration (a full run there would take days: ~40 tokens/s for SmolLM2 LoRA on two cores).
GPU_DEFAULTS = {
    "batch_size": 16,
    "gradient_accumulation_steps": 2,
    "max_steps": 60,
    "max_seq_length": 4096,
    "windows": "1:1,5:5,20:5,60:20",
    "max_val_examples": 200,
    "learning_rate": 2e-4,
    "past": 5,
    "future": 5,
}
# The CPU demonstration trains next-day forecasts only, 16 steps of 4 at a higher learning rate: enough for
# SmolLM2 to write possible candles (measured: six of six stocks), so the main job ends with a chart.
CPU_DEMO_DEFAULTS = {
    "batch_size": 4,
    "gradient_accumulation_steps": 1,
    "max_steps": 16,
    "max_seq_length": 768,
    "windows": "1:1",
    "max_val_examples": 4,
    "learning_rate": 1e-3,
    "past": 1,
    "future": 1,
}


# Every numeric flag's valid range, checked before any work: (flag, attribute, test, what it must be).
_AT_LEAST_1 = ("at least 1", lambda v: v >= 1)
_AT_LEAST_0 = ("0 or more", lambda v: v >= 0)
_POSITIVE = ("a positive number", lambda v: v > 0 and v == v and v != float("inf"))
_SHARE = ("between 0 and 1 (exclusive)", lambda v: 0 < v < 1)
NUMERIC_RULES = {
    "rank": _AT_LEAST_1,
    "lora_alpha": _AT_LEAST_1,
    "lora_dropout": ("from 0 up to 1 (exclusive)", lambda v: 0 <= v < 1),
    "batch_size": _AT_LEAST_1,
    "gradient_accumulation_steps": _AT_LEAST_1,
    "num_epochs": _POSITIVE,
    "max_steps": ("0 (train --num-epochs) or more", lambda v: v >= 0),
    "learning_rate": _POSITIVE,
    "logging_steps": _AT_LEAST_1,
    "weight_decay": _AT_LEAST_0,
    "warmup_steps": _AT_LEAST_0,
    "save_steps": _AT_LEAST_1,
    "eval_steps": _AT_LEAST_0,
    "val_fraction": _SHARE,
    "max_val_examples": _AT_LEAST_1,
    "max_seq_length": ("at least 64 tokens", lambda v: v >= 64),
    "stride": _AT_LEAST_1,
    "month": ("1-12", lambda v: 1 <= v <= 12),
    "choose_stock": _AT_LEAST_0,
    "past": _AT_LEAST_1,
    "future": _AT_LEAST_1,
    "eval_stride": _AT_LEAST_1,
    "eval_batch_size": _AT_LEAST_1,
    "bootstrap": _AT_LEAST_0,
    "brokerage": _AT_LEAST_0,
    "sell_tax": _AT_LEAST_0,
    "lstm_epochs": _AT_LEAST_1,
    "news_max_articles": _AT_LEAST_0,
    "news_max_tokens": _AT_LEAST_0,
    "news_days": _AT_LEAST_1,
    "news_daily_limit": _AT_LEAST_0,
    "trade_threshold": _AT_LEAST_0,
    "max_lots": _AT_LEAST_1,
    "max_positions": _AT_LEAST_1,
    "max_new_tokens": _AT_LEAST_1,
    "eval_limit": _AT_LEAST_0,
    "instruct_rows": _AT_LEAST_1,
    "forecaster_weeks": _AT_LEAST_1,
    "forecaster_samples": _AT_LEAST_1,
}
DATE_FLAGS = ("end_date", "test_start", "test_end")


def check_arguments(args) -> None:
    """Refuse an out-of-range number or a malformed date before any work, naming the flag."""
    import datetime as dt

    from utils import StockToolError

    for name, (must, ok) in NUMERIC_RULES.items():
        value = getattr(args, name)
        if value is not None and not ok(value):
            raise StockToolError(f"--{name.replace('_', '-')} {value}: must be {must}")
    for name in DATE_FLAGS:
        value = getattr(args, name)
        if value is not None:
            try:
                dt.date.fromisoformat(value)
            except ValueError:
                raise StockToolError(f"--{name.replace('_', '-')} {value!r} is not a date YYYY-MM-DD") from None


def _flag01(text: str) -> bool:
    if text not in ("0", "1"):
        raise argparse.ArgumentTypeError("use 1 (on) or 0 (off)")
    return text == "1"


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Adds "(default: X)" only where the help does not already say it and there is a value to show."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    from export import EXPORT_DTYPES, GGUF_TYPES
    from forecast import BAND_SOURCES, POINT_SOURCES, DecodingConfig

    p = argparse.ArgumentParser(
        prog="main.py",
        description="Fine-tune an LLM with LoRA to forecast Taiwan stock prices (twstock data), and forecast with it.",
        formatter_class=_HelpFormatter,
        epilog="examples:\n" + "\n".join("  " + line for line in __doc__.splitlines()[2:9]),
    )
    mode = p.add_argument_group("mode")
    mode.add_argument("--train", type=int, choices=[0, 1], required=True, help="1: training mode, 0: inference mode")

    mode.add_argument(
        "--task",
        choices=["stock", "instruct"],
        default="stock",
        help="stock: price forecasting; instruct: financial instruction tuning (--dataset-file) and comparison",
    )

    data = p.add_argument_group("data")
    data.add_argument(
        "--data-dir",
        default="data",
        help="where prices (<data-dir>/prices/<code>.csv) and examples are kept; "
        "a folder of price CSVs works as the cache too",
    )
    data.add_argument(
        "--company-list-file",
        default=None,
        help="JSON list of companies to train on, by name_zh or code (default: the spec's 41, data/companies.json)",
    )
    data.add_argument("--year", type=int, default=2024, help="collect prices from this year ...")
    data.add_argument("--month", type=int, default=12, help="... and month, up to --end-date")
    data.add_argument(
        "--end-date", default=None, help="last day of prices to use, YYYY-MM-DD (default: today in Taipei)"
    )
    data.add_argument("--offline", action="store_true", help="never call the exchanges: use the price cache as it is")
    data.add_argument(
        "--choose-stock",
        type=int,
        default=0,
        help="instead of a company list, pick N listed stocks for each of twstock's four buy and four sell points",
    )
    data.add_argument(
        "--windows",
        default=None,
        help="window types past:future in trading days (GPU default 1:1,5:5,20:5,60:20; CPU demo 1:1,5:5)",
    )
    data.add_argument(
        "--fields",
        default="ohlcv",
        help="price fields in prompts: ohlcv, all, turnover, basic (the spec's column sets) or a comma list",
    )
    data.add_argument(
        "--answer-format",
        choices=["change", "absolute"],
        default="change",
        help="how prompts and answers write prices: change (%% from the last close, measured better: README) "
        "or absolute (the spec's NTD prices)",
    )
    data.add_argument("--stride", type=int, default=1, help="trading days between consecutive windows")
    data.add_argument(
        "--val-fraction", type=float, default=0.1, help="latest share of trading days held out for validation"
    )
    data.add_argument(
        "--max-val-examples",
        type=int,
        default=None,
        help="validation examples evaluated, spread over the held-out days (GPU 200, CPU demo 16)",
    )

    model = p.add_argument_group("load pretrained model")
    model.add_argument(
        "--model-name",
        default=None,
        help="Hub id (unsloth/Llama-3.2-3B-Instruct, unsloth/Meta-Llama-3.1-8B-bnb-4bit), HF folder or .gguf; "
        "default: the 3B model on CUDA, the bundled SmolLM2-135M on a CPU",
    )
    model.add_argument(
        "--max-seq-length", type=int, default=None, help="longest training example in tokens (GPU 4096, CPU demo 768)"
    )
    model.add_argument(
        "--load_in_4bit",
        "--load-in-4bit",
        dest="load_in_4bit",
        type=_flag01,
        nargs="?",
        const=True,
        default=None,
        help="load the model in 4 bit (CUDA only; default on with CUDA)",
    )
    model.add_argument(
        "--load_in_8bit",
        "--load-in-8bit",
        dest="load_in_8bit",
        type=_flag01,
        nargs="?",
        const=True,
        default=False,
        help="load the model in 8 bit (CUDA only)",
    )
    model.add_argument(
        "--model-dir", default="outputs/model", help="where the trained adapter is saved and loaded from"
    )

    lora = p.add_argument_group("LoRA")
    lora.add_argument("--rank", type=int, default=16, help="LoRA rank r")
    lora.add_argument("--lora-alpha", type=int, default=16, help="LoRA alpha")
    lora.add_argument("--lora-dropout", type=float, default=0.0, help="LoRA dropout")
    lora.add_argument("--random-state", type=int, default=3407, help="random seed")

    trainer = p.add_argument_group("trainer")
    trainer.add_argument("--batch-size", type=int, default=None, help="per-device batch size (GPU 16, CPU demo 2)")
    trainer.add_argument("--gradient-accumulation-steps", type=int, default=None, help="GPU 2, CPU demo 1")
    trainer.add_argument("--num-epochs", type=float, default=1.0, help="epochs (used when --max-steps is 0)")
    trainer.add_argument(
        "--max-steps", type=int, default=None, help="optimizer steps; 0: train --num-epochs (GPU 60, CPU demo 2)"
    )
    trainer.add_argument(
        "--learning-rate", type=float, default=None, help="peak learning rate (GPU 2e-4, CPU demo 1e-3)"
    )
    trainer.add_argument("--logging-steps", type=int, default=1, help="log the training loss every N steps")
    trainer.add_argument("--optim", default=None, help="optimizer (default adamw_8bit on CUDA, adamw_torch on a CPU)")
    trainer.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay")
    trainer.add_argument("--lr-scheduler-type", default="linear", help="linear, cosine, constant, ...")
    trainer.add_argument("--warmup-steps", type=int, default=5, help="learning-rate warm-up steps")
    trainer.add_argument(
        "--output-dir", default="outputs", help="checkpoints, TensorBoard runs (<output-dir>/runs), charts"
    )
    trainer.add_argument(
        "--report-to", default="tensorboard", help="tensorboard, none, or any transformers integration"
    )
    trainer.add_argument("--save-steps", type=int, default=50, help="checkpoint every N steps (for --resume)")
    trainer.add_argument("--eval-steps", type=int, default=0, help="validation loss every N steps (0: once at the end)")
    trainer.add_argument(
        "--padding-free", type=_flag01, default=None, help="1/0: padding-free batches (default on with CUDA)"
    )
    trainer.add_argument("--packing", type=_flag01, default=False, help="1/0: pack examples into full-length rows")
    trainer.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output-dir")

    infer = p.add_argument_group("inference (--train 0)")
    infer.add_argument(
        "--code",
        default=None,
        help="stock code(s) to forecast, e.g. 2330 or 2330,2454,6569 (inference: 2330; after training: 2330 when "
        "trained on, else the first company)",
    )
    infer.add_argument("--past", type=int, default=None, help="known trading days given to the model (GPU 5, CPU 1)")
    infer.add_argument("--future", type=int, default=None, help="trading days to forecast (GPU 5, CPU 1)")
    infer.add_argument(
        "--chart-style",
        choices=["international", "taiwan"],
        default="international",
        help="colours of the known candles: international (green up, red down) or taiwan (red up, green down)",
    )
    infer.add_argument("--context", default="", help="extra text (e.g. news) added to the prompt as is")
    decoding = DecodingConfig()  # the sampling defaults live there, once
    infer.add_argument(
        "--samples",
        type=int,
        default=decoding.samples,
        help="answers sampled per forecast; with more than 1 the point forecast is their per-field median and "
        "their quantiles the bands (1: greedy, the measured default; README)",
    )
    infer.add_argument(
        "--temperature", type=float, default=decoding.temperature, help="sampling temperature (with --samples > 1)"
    )
    infer.add_argument(
        "--decoding",
        choices=["constrained", "free"],
        default="constrained" if decoding.constrained else "free",
        help="constrained: answers generated under the answer format's grammar (dates fixed, numbers free); "
        "free: unconstrained, for comparison",
    )
    infer.add_argument(
        "--band", type=float, default=decoding.band, help="central band drawn on the chart (0 < band < 1)"
    )
    infer.add_argument(
        "--bands",
        choices=BAND_SOURCES,
        default=None,
        help="where bands come from: calibrated (the GPU default), the model's own errors on the held-out days of "
        "its training (an evaluation measures them and leaves calibration.json beside the adapter); samples (the "
        "CPU default), the quantiles of the --samples answers (measured far too narrow: README)",
    )
    infer.add_argument(
        "--point",
        choices=POINT_SOURCES,
        default=decoding.point,
        help="with calibrated bands, the point forecast: calibrated (default), the model's change from the last close "
        "weighted by what the held-out days support (0: persistence, 1: as generated; README); model: as generated",
    )

    ev = p.add_argument_group("evaluation (--evaluate 1)")
    ev.add_argument(
        "--evaluate",
        type=_flag01,
        default=False,
        help="1: walk-forward forecasts of --model-dir, its untuned base, an LSTM and naive baselines over the "
        "test period, with metrics, a backtest and <output-dir>/<run>/report.md (after training with --train 1)",
    )
    ev.add_argument(
        "--test-start", default=None, help="first target day, YYYY-MM-DD (default: the day after the adapter's data)"
    )
    ev.add_argument("--test-end", default=None, help="last target day, YYYY-MM-DD (default: --end-date or today)")
    ev.add_argument("--eval-stride", type=int, default=1, help="trading days between forecast origins")
    ev.add_argument(
        "--eval-models",
        default="tuned,base,lstm",
        help="models besides the always-run baselines (persistence, drift, moving average): tuned, base, lstm",
    )
    ev.add_argument(
        "--eval-batch-size",
        type=int,
        default=None,
        help=(
            "forecast evaluation: sequences (prompts x samples) generated together, GPU 1024 (a batch the GPU "
            "cannot hold is split in two), CPU 8; instruction comparison: prompts, GPU 64, CPU 8"
        ),
    )
    ev.add_argument("--bootstrap", type=int, default=1000, help="block-bootstrap resamples for 95%% intervals")
    ev.add_argument("--brokerage", type=float, default=0.001425, help="backtest brokerage per side (0.1425%%)")
    ev.add_argument("--sell-tax", type=float, default=0.003, help="backtest securities transaction tax on sells")
    ev.add_argument("--lstm-epochs", type=int, default=30, help="LSTM baseline epochs (early stopping on validation)")
    ev.add_argument("--eval-name", default=None, help="report folder under --output-dir (default eval_<start>_<end>)")

    tr = p.add_argument_group("trading server (--trade 1)")
    tr.add_argument(
        "--trade",
        type=_flag01,
        default=False,
        help="1: read the account's holdings, forecast them and the company list, plan buy/sell/hold "
        "(a dry run unless --execute)",
    )
    tr.add_argument("--execute", action="store_true", help="send the planned orders (otherwise nothing is sent)")
    tr.add_argument("--api-url", default=None, help="trading server base URL (default $STOCK_API_URL or the spec's)")
    tr.add_argument("--api-account", default=None, help="account (default $STOCK_API_ACCOUNT; prefer the variable)")
    tr.add_argument("--api-password", default=None, help="password (default $STOCK_API_PASSWORD; prefer the variable)")
    tr.add_argument("--trade-threshold", type=float, default=0.01, help="act when |expected return| exceeds this")
    tr.add_argument("--max-lots", type=int, default=1, help="lots (1,000 shares) per order at most")
    tr.add_argument("--max-positions", type=int, default=5, help="stocks held at most")
    ctx = p.add_argument_group("context in the prompts: twstock signals and news (as of each window's last day)")
    ctx.add_argument(
        "--signals",
        type=_flag01,
        default=False,
        help="1/0: twstock's best four points in the prompt (0 by default: measured better without them)",
    )
    ctx.add_argument(
        "--news",
        type=_flag01,
        default=True,
        help="1/0: stored news in the prompt; when training online with NEWSAPI_KEY, collect it first",
    )
    ctx.add_argument("--news-language", choices=["zh", "en", "both"], default="both", help="news languages used")
    ctx.add_argument("--news-max-articles", type=int, default=5, help="headlines per prompt at most")
    ctx.add_argument("--news-max-tokens", type=int, default=300, help="estimated tokens of news per prompt at most")
    ctx.add_argument("--news-days", type=int, default=30, help="collect articles of the last N days (free plan ~30)")
    ctx.add_argument("--news-daily-limit", type=int, default=100, help="newsapi requests a day (free plan 100)")
    ctx.add_argument("--news-csv", default=None, help="import headlines (code,date,title[,description,source,url])")
    ctx.add_argument("--newsapi-key", default=None, help="newsapi.org key (default $NEWSAPI_KEY; prefer the variable)")
    ctx.add_argument(
        "--market-csv", default=None, help="market-wide daily CSV (code + twstock columns) for --choose-stock offline"
    )
    data.add_argument(
        "--price-source",
        choices=["twstock", "server"],
        default="twstock",
        help="where missing prices come from: the exchanges (twstock) or the trading server (--api-url)",
    )

    ex = p.add_argument_group("export (--export merged)")
    ex.add_argument(
        "--export",
        choices=["merged", "gguf"],
        default=None,
        help="merged: the --model-dir adapter merged into its base model as a plain HF folder; gguf: the same as a "
        "llama.cpp GGUF file with an Ollama Modelfile (after training when --train 1)",
    )
    ex.add_argument(
        "--export-dir", default=None, help="where the export goes (default <output-dir>/<merged|gguf>); new or empty"
    )
    ex.add_argument("--gguf-type", choices=GGUF_TYPES, default=GGUF_TYPES[0], help="of the GGUF weights")
    ex.add_argument("--export-dtype", choices=EXPORT_DTYPES, default=EXPORT_DTYPES[0], help="of the merged weights")
    ins = p.add_argument_group("financial instructions (--task instruct)")
    ins.add_argument("--dataset-file", default=None, help="training files, JSON/JSONL: a.jsonl,b.jsonl:0.5 (weights)")
    ins.add_argument("--prompt-template", choices=["chat", "cornucopia"], default="chat", help="prompt template")
    ins.add_argument("--skip-bad-rows", action="store_true", help="skip (and count) malformed rows instead of stopping")
    ins.add_argument("--eval-file", default=None, help="instructions to answer and score (--train 0)")
    ins.add_argument("--compare", default=None, help="models to run over --eval-file: base,<adapter dir>,... ")
    ins.add_argument("--max-new-tokens", type=int, default=256, help="answer length limit")
    ins.add_argument("--eval-limit", type=int, default=0, help="only the first N rows of --eval-file (0: all)")
    ins.add_argument(
        "--build-events",
        type=_flag01,
        default=False,
        help="1: build <data-dir>/events.sqlite from stored news and prices, and instructions from it",
    )
    ins.add_argument(
        "--build-forecaster",
        type=_flag01,
        default=False,
        help="1: news-driven analysis rows (FinGPT-Forecaster style) with answers from --teacher-url",
    )
    ins.add_argument("--teacher-url", default=None, help="OpenAI-compatible base URL (key: $TEACHER_API_KEY)")
    ins.add_argument("--teacher-model", default=None, help="the teacher's model name")
    ins.add_argument("--forecaster-weeks", type=int, default=4, help="past weeks in each prompt")
    ins.add_argument("--forecaster-samples", type=int, default=200, help="samples (company-weeks) at most")
    ins.add_argument("--instruct-mix", default="news:0.6,market:0.4", help="shares of news-impact / market rows")
    ins.add_argument("--instruct-rows", type=int, default=2000, help="instructions built at most")

    p.add_argument("--verbose", action="store_true", help="debug logging")
    return p


def build_configs(args, cuda: bool):
    from configs import DataConfig, TradeConfig
    from forecast import DecodingConfig
    from instruct_tasks import InstructConfig
    from model import LoraSettings, ModelConfig, TrainSettings
    from walk_forward import EvalConfig

    defaults = GPU_DEFAULTS if cuda else CPU_DEMO_DEFAULTS
    chosen = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in defaults.items()}
    if args.task == "instruct" and args.learning_rate is None:
        chosen["learning_rate"] = GPU_DEFAULTS["learning_rate"]  # the demo's higher rate is for price forecasts
    decoding = DecodingConfig(
        samples=args.samples,
        temperature=args.temperature,
        constrained=args.decoding == "constrained",
        seed=args.random_state,
        band=args.band,
        bands=args.bands or ("calibrated" if cuda else "samples"),
        point=args.point,
    )
    if not cuda and args.bands is None and args.evaluate:
        print(
            "no CUDA GPU: bands from samples (--bands samples), since calibrating them would forecast the adapter's "
            "held-out days too, about doubling the evaluation's time on a CPU; --bands calibrated asks for it"
        )
    if not cuda and args.train == 1:
        implicit = [k for k in CPU_DEMO_DEFAULTS if getattr(args, k) is None]
        if args.task == "instruct":
            # price windows and forecasts play no part in instruction tuning
            implicit = [k for k in implicit if k not in ("windows", "learning_rate", "past", "future")]
        if implicit:
            print(
                "CPU DEMONSTRATION: no CUDA GPU, so these defaults are shrunk to finish in minutes: "
                + ", ".join(f"{k}={chosen[k]}" for k in implicit)
                + ". The forecasts of such a run are not meaningful; train on a GPU, or set the flags yourself."
            )
    data = DataConfig(
        data_dir=args.data_dir,
        company_list_file=args.company_list_file,
        year=args.year,
        month=args.month,
        end_date=args.end_date,
        offline=args.offline,
        choose_stock=args.choose_stock,
        windows=chosen["windows"],
        fields=args.fields,
        answer_format=args.answer_format,
        stride=args.stride,
        val_fraction=args.val_fraction,
        max_val_examples=chosen["max_val_examples"],
        price_source=args.price_source,
        signals=args.signals,
        news=args.news,
        news_languages=args.news_language,
        news_max_articles=args.news_max_articles,
        news_max_tokens=args.news_max_tokens,
        news_days=args.news_days,
        news_daily_limit=args.news_daily_limit,
        news_csv=args.news_csv,
        market_csv=args.market_csv,
    )
    model = ModelConfig(
        model_name=args.model_name,
        max_seq_length=chosen["max_seq_length"],
        load_in_4bit=cuda and not args.load_in_8bit if args.load_in_4bit is None else args.load_in_4bit,
        load_in_8bit=args.load_in_8bit,
        model_dir=args.model_dir,
    )
    lora = LoraSettings(
        rank=args.rank, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, random_state=args.random_state
    )
    train = TrainSettings(
        batch_size=chosen["batch_size"],
        gradient_accumulation_steps=chosen["gradient_accumulation_steps"],
        num_epochs=args.num_epochs,
        max_steps=chosen["max_steps"],
        learning_rate=chosen["learning_rate"],
        logging_steps=args.logging_steps,
        optim=args.optim,
        weight_decay=args.weight_decay,
        lr_scheduler_type=args.lr_scheduler_type,
        warmup_steps=args.warmup_steps,
        output_dir=args.output_dir,
        report_to=args.report_to,
        save_steps=args.save_steps,
        eval_steps=args.eval_steps,
        padding_free=args.padding_free,
        packing=args.packing,
        resume=args.resume,
    )
    evaluation = EvalConfig(
        test_start=args.test_start,
        test_end=args.test_end,
        stride=args.eval_stride,
        models=args.eval_models,
        windows=args.windows,
        batch_size=args.eval_batch_size or (1024 if cuda else 8),
        bootstrap=args.bootstrap,
        brokerage=args.brokerage,
        sell_tax=args.sell_tax,
        run_name=args.eval_name,
        lstm_epochs=args.lstm_epochs,
        seed=args.random_state,
        decoding=decoding,
    )
    trade = TradeConfig(
        execute=args.execute,
        api_url=args.api_url,
        threshold=args.trade_threshold,
        max_lots=args.max_lots,
        max_positions=args.max_positions,
        past=chosen["past"],
        future=chosen["future"],
        journal_dir=str(Path(args.output_dir) / "trades"),
    )
    instruct = InstructConfig(
        dataset_files=args.dataset_file,
        template=args.prompt_template,
        skip_bad_rows=args.skip_bad_rows,
        eval_file=args.eval_file,
        compare=args.compare,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.eval_batch_size or (64 if cuda else 8),
        limit=args.eval_limit,
        bootstrap=args.bootstrap,
        run_name=args.eval_name,
    )
    return data, model, lora, train, evaluation, trade, instruct


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import distributed
    from utils import StockToolError, is_writable_dir, setup_logging

    setup_logging(args.verbose)
    try:
        check_arguments(args)
        import model
        from stock_predictor import StockPredictor

        cuda = model.cuda_available()
        if not is_writable_dir(args.output_dir):
            raise StockToolError(f"--output-dir {args.output_dir} is not writable: choose another folder")
        here = distributed.setup(cuda)  # one of several processes under torchrun / accelerate launch
        data, model_cfg, lora, train, evaluation, trade, instruct = build_configs(args, cuda)
        model.check_quantization(model_cfg, cuda)  # in every mode: inference ignored the flags on a CPU
        if args.execute and not args.trade:
            raise StockToolError("--execute only applies to --trade 1")
        newsapi_key = args.newsapi_key or os.environ.get("NEWSAPI_KEY") or None
        predictor = StockPredictor(data, model_cfg, lora, train, newsapi_key=newsapi_key, decoding=evaluation.decoding)
        predictor.chart_style = args.chart_style
        pool = predictor.generation_pool(evaluation, instruct)
        if not here.main:
            return serve(args, predictor, instruct, pool)
        code = dispatch(args, predictor, evaluation, trade, instruct, pool)
        pool.stop()
        distributed.finish()
        return code
    except distributed.MainFailed:
        return 2  # rank 0 has said why
    except StockToolError as exc:
        rank = os.environ.get("RANK", "0")  # a process other than rank 0 under torchrun says which it is
        print(f"error: {exc}" if rank in ("", "0") else f"error (rank {rank}): {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = "; rerun with --resume to continue training from the last checkpoint" if args.train == 1 else ""
        if args.trade:
            hint = "; today's journal shows what was sent: a rerun never resends an order marked sending or sent"
        print("interrupted" + hint, file=sys.stderr)
        return 130


def serve(args, predictor, instruct, pool) -> int:
    """A process other than rank 0 under torchrun: train beside rank 0, then generate its share of what
    rank 0's evaluation or comparison asks for, until rank 0 is done. Rank 0 does everything else."""
    import distributed

    if args.train == 1 and args.task == "instruct":
        predictor.train_instruct(instruct)
    elif args.train == 1:
        predictor.train()
    pool.serve()
    distributed.finish()
    return 0


def dispatch(args, predictor, evaluation, trade, instruct, pool=None) -> int:
    """Run the stages the flags ask for, in pipeline order."""
    from stock_predictor import print_forecast
    from utils import StockToolError

    target = None
    if args.export:
        import export

        target = Path(args.export_dir or Path(args.output_dir) / args.export)
        export.check_target(target)  # before any work: a run must not end in a refusal
    built = False
    if args.build_forecaster:
        import teacher

        if not args.teacher_url or not args.teacher_model:
            raise StockToolError("--build-forecaster 1 needs --teacher-url and --teacher-model")
        predictor.build_forecaster(teacher.TeacherClient(args.teacher_url, args.teacher_model),
                                   args.forecaster_weeks, args.forecaster_samples)  # fmt: skip
        built = True
    if args.build_events:
        predictor.build_events(args.instruct_mix, args.instruct_rows)
        built = True
    if args.task == "instruct":
        if args.train == 1:
            predictor.train_instruct(instruct)
        if target is not None:
            print(export.describe(export.export(args, predictor.model_cfg.model_dir, target)))
            if not args.eval_file:
                return 0
        if args.eval_file or (args.train == 0 and not built):
            predictor.compare(instruct, pool)
        return 0
    if built and args.train == 0:
        return 0
    if args.train == 1:
        predictor.train()
    if target is not None:
        print(export.describe(export.export(args, predictor.model_cfg.model_dir, target)))
        if not (args.evaluate or args.trade):
            return 0
    if args.evaluate:
        predictor.evaluate(evaluation, pool=pool)
    if args.trade:
        import stock_api

        predictor.trade(trade, stock_api.Credentials.from_env(args.api_account, args.api_password))
    if args.evaluate or args.trade:
        return 0
    if args.train == 1:
        return _forecast_after_training(args, predictor, trade)
    codes = [c.strip() for c in (args.code or "2330").split(",") if c.strip()]
    if not codes:
        raise StockToolError("--code: give at least one stock code, e.g. 2330 or 2330,2454")
    results = predictor.forecast_many(codes, trade.past, trade.future, args.context)
    for result in results:
        print_forecast(result)
    return 0 if all(r.ok for r in results) else 3


def _forecast_after_training(args, predictor, trade) -> int:
    """The main job ends with the new adapter's forecast and chart (of --code; by default 2330 when it was
    trained on, else the first company). Training has succeeded by then: a forecast that cannot be made is
    reported, and the exit code stays 0."""
    from stock_predictor import print_forecast
    from utils import StockToolError

    trained = [c.code for c in predictor.companies()]
    default = "2330" if "2330" in trained else trained[0]
    codes = [c.strip() for c in (args.code or default).split(",") if c.strip()]
    print(f"forecast with the new adapter ({trade.past} known → {trade.future} forecast trading days):")
    try:
        for result in predictor.forecast_many(codes, trade.past, trade.future, args.context):
            print_forecast(result)
    except StockToolError as exc:
        print(f"no forecast after training: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
