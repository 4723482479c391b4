"""Every setting of the pipeline, each with its one default, and the flag that sets it.

`main.py` generates the command line from these dataclasses (`options.py`); a field's metadata holds its
help text, group, range check and, where a CPU demonstration shrinks it, the CPU's default (the field's
own default is the GPU's). The stages import their settings from here, never from the `StockPredictor`
facade; the adapter's saved settings are read back in `manifest.py`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import trading_calendar
from options import AT_LEAST_0, AT_LEAST_1, SHARE, between, existing_file, folder, option, shared
from utils import StockToolError, taipei_today

SEED = 3407  # the spec's random_state: LoRA, sampling, the LSTM and every shuffle
BROKERAGE = 0.001425  # Taiwan cash equities: brokerage on each side of a trade (0.1425%)
SELL_TAX = 0.003  # and the securities transaction tax on sells (0.3%)
INSTRUCT_MIX, INSTRUCT_ROWS = "news:0.6,market:0.4", 2000  # --build-events: the instruction mix, rows at most
FORECASTER_WEEKS, FORECASTER_SAMPLES = 4, 200  # --build-forecaster: past weeks per prompt, company-weeks at most
BOOTSTRAP = 1000  # block-bootstrap resamples for the 95% intervals
BAND_SOURCES = ("calibrated", "samples")
POINT_SOURCES = ("calibrated", "model")
DEFAULT_WINDOWS = "1:1,5:5,20:5,60:20"  # the spec's four window types, past:future (dataset.py)
# transformers' optimizer and scheduler names (`transformers.training_args.OptimizerNames`,
# `transformers.trainer_utils.SchedulerType`), written out so that the command line needs no transformers;
# tests/test_options.py compares them with the installed transformers.
OPTIMIZERS = (
    "adamw_torch", "adamw_torch_fused", "adamw_torch_xla", "adamw_torch_npu_fused", "adafactor",
    "adamw_anyprecision", "adamw_torch_4bit", "adamw_torch_8bit", "ademamix", "sgd", "adagrad", "adamw_bnb_8bit",
    "adamw_8bit", "ademamix_8bit", "lion_8bit", "lion_32bit", "paged_adamw_32bit", "paged_adamw_8bit",
    "paged_ademamix_32bit", "paged_ademamix_8bit", "paged_lion_32bit", "paged_lion_8bit", "rmsprop", "rmsprop_bnb",
    "rmsprop_bnb_8bit", "rmsprop_bnb_32bit", "galore_adamw", "galore_adamw_8bit", "galore_adafactor",
    "galore_adamw_layerwise", "galore_adamw_8bit_layerwise", "galore_adafactor_layerwise", "lomo", "adalomo",
    "grokadamw", "schedule_free_radam", "schedule_free_adamw", "schedule_free_sgd", "apollo_adamw",
    "apollo_adamw_layerwise", "stable_adamw",
)  # fmt: skip
SCHEDULERS = (
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "inverse_sqrt",
    "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr", "warmup_stable_decay", "greedy",
)  # fmt: skip
FIRST_YEAR = 1962  # the Taiwan Stock Exchange opened in February 1962
SEED_RANGE = between(0, 2**32 - 1, "from 0 to 4294967295 (numpy's seeds)")
LORA_RANK = between(1, 4096)
A_SHARE = ("from 0 up to 1 (exclusive)", lambda v: 0 <= v < 1)


def _model_name(flag: str, value: str) -> None:
    from model_source import check_model_name  # no torch: it reads a .gguf's first bytes, or a folder's files

    check_model_name(value)


def _dataset_files(flag: str, value: str) -> None:
    """--dataset-file a.jsonl,b.jsonl:0.5: every file named is there."""
    from utils import parse_file_weights

    for path, _ in parse_file_weights(value):
        existing_file(flag, path)


def _compare(flag: str, value: str) -> None:
    """--compare base,<adapter folder>,...: every adapter named is a folder."""
    for name in (n.strip() for n in value.split(",") if n.strip()):
        if name != "base" and not Path(name).is_dir():
            raise StockToolError(f"{flag}: {name} is not an adapter folder (nor base)")


@dataclass(frozen=True)
class DataConfig:
    data_dir: str = option(
        "data",
        "where prices (<data-dir>/prices/<code>.csv) and examples are kept; a folder of price CSVs works as the "
        "cache too",
        group="data",
        check=folder,
    )
    company_list_file: str | None = option(
        None,
        "JSON list of companies to train on, by name_zh or code (default: the spec's 41, data/companies.json)",
        group="data",
        check=existing_file,
    )
    year: int = option(
        2024,
        "collect prices from this year ...",
        group="data",
        check=between(
            FIRST_YEAR,
            taipei_today().year,
            f"a year from {FIRST_YEAR} (the exchange opened) to {taipei_today().year}, not in the future",
        ),
    )
    month: int = option(12, "... and month, up to --end-date", group="data", check=("1-12", lambda v: 1 <= v <= 12))
    end_date: str | None = option(
        None, "last day of prices to use, YYYY-MM-DD (default: today in Taipei)", group="data", check="date"
    )
    offline: bool = option(False, "never call the exchanges: use the price cache as it is", group="data", switch=True)
    calendar: str = option(
        trading_calendar.DEFAULT,
        "the exchange's trading calendar (exchange-calendars' name) that dates live forecasts: XTAI, the Taiwan "
        "Stock Exchange; e.g. XNYS for New York prices",
        group="data",
        check=(trading_calendar.NAME_RULE, trading_calendar.is_calendar_name),
    )
    choose_stock: int = option(
        0,
        "instead of a company list, pick N listed stocks for each of twstock's four buy and four sell points",
        group="data",
        check=AT_LEAST_0,
    )
    windows: str = option(DEFAULT_WINDOWS, "window types past:future in trading days", group="data", cpu="1:1")
    fields: str = option(
        "ohlcv",
        "price fields in prompts: ohlcv, all, turnover, basic (the spec's column sets) or a comma list",
        group="data",
    )
    answer_format: str = option(
        "change",
        "how prompts and answers write prices: change (%% from the last close, measured better: README), "
        "candle (close and open as %% changes, then unsigned wicks: every answer a possible candle) "
        "or absolute (the spec's NTD prices)",
        group="data",
        choices=["change", "candle", "absolute"],
    )
    stride: int = option(1, "trading days between consecutive windows", group="data", check=AT_LEAST_1)
    val_fraction: float = option(0.1, "latest share of trading days held out for validation", group="data", check=SHARE)
    max_val_examples: int = option(
        200,
        "validation examples evaluated, spread over the held-out days",
        group="data",
        cpu=4,
        check=AT_LEAST_1,
    )
    price_source: str = option(
        "twstock",
        "where missing prices come from: the exchanges (twstock) or the trading server (--api-url)",
        group="data",
        choices=["twstock", "server"],
    )
    signals: bool = option(
        False,
        "1/0: twstock's best four points in the prompt (0 by default: measured better without them)",
        group="context",
    )
    news: bool = option(
        True, "1/0: stored news in the prompt; when training online with NEWSAPI_KEY, collect it first", group="context"
    )
    news_languages: str = option(
        "both", "news languages used", group="context", flag="--news-language", choices=["zh", "en", "both"]
    )
    news_max_articles: int = option(5, "headlines per prompt at most", group="context", check=AT_LEAST_0)
    # estimated: one token per CJK character, one per four other characters
    news_max_tokens: int = option(300, "estimated tokens of news per prompt at most", group="context", check=AT_LEAST_0)
    news_days: int = option(
        30, "collect articles of the last N days (free plan ~30)", group="context", check=between(1, 3650)
    )
    news_daily_limit: int = option(100, "newsapi requests a day (free plan 100)", group="context", check=AT_LEAST_0)
    news_csv: str | None = option(
        None,
        "import headlines (code,date,title[,description,source,url]); UTF-8, UTF-16 or Big5",
        group="context",
        check=existing_file,
    )
    market_csv: str | None = option(
        None,
        "market-wide daily CSV (code + twstock columns) for --choose-stock offline",
        group="context",
        check=existing_file,
    )


@dataclass(frozen=True)
class ModelConfig:
    model_name: str | None = option(
        None,
        "Hub id (unsloth/Llama-3.2-3B-Instruct, unsloth/Meta-Llama-3.1-8B-bnb-4bit), HF folder or .gguf; "
        "default: the 3B model on CUDA, the bundled SmolLM2-135M on a CPU",
        group="model",
        check=_model_name,
    )
    max_seq_length: int = option(
        4096,
        "longest training example in tokens",
        group="model",
        cpu=768,
        check=between(64, 2**20, "from 64 to 1048576 tokens"),
    )
    # unset: on with CUDA unless --load_in_8bit (main.build_configs)
    load_in_4bit: bool = option(
        False,
        "load the model in 4 bit (CUDA only; default on with CUDA)",
        group="model",
        flag="--load_in_4bit",
        aliases=["--load-in-4bit"],
        bare=True,
        auto=True,
    )
    load_in_8bit: bool = option(
        False,
        "load the model in 8 bit (CUDA only)",
        group="model",
        flag="--load_in_8bit",
        aliases=["--load-in-8bit"],
        bare=True,
    )
    model_dir: str = option(
        "outputs/model", "where the trained adapter is saved and loaded from", group="model", check=folder
    )


@dataclass(frozen=True)
class LoraSettings:
    rank: int = option(16, "LoRA rank r", group="lora", check=LORA_RANK)
    lora_alpha: int = option(16, "LoRA alpha", group="lora", check=between(1, 2**16))
    lora_dropout: float = option(
        0.0, "LoRA dropout", group="lora", check=("from 0 up to 1 (exclusive)", lambda v: 0 <= v < 1)
    )
    random_state: int = option(SEED, "random seed", group="lora", aliases=["--seed"], check=SEED_RANGE)


# Trainer defaults. CUDA: the spec's total batch of 32 and 60 steps, as 16 x 2 rather than 8 x 4 because
# padding-free batches of 16 measured fastest on the H100 (README, "Measured"). CPU: a short, labelled
# demonstration of next-day forecasts (a full run there would take days: ~40 tokens/s for SmolLM2 LoRA on two
# cores), 16 steps of 4 at a higher learning rate: enough for SmolLM2 to write possible candles (measured: six
# of six stocks), so the main job ends with a chart.
@dataclass(frozen=True)
class TrainSettings:
    batch_size: int = option(16, "per-device batch size", group="trainer", cpu=4, check=AT_LEAST_1)
    gradient_accumulation_steps: int = option(2, "batches per optimizer step", group="trainer", cpu=1, check=AT_LEAST_1)
    num_epochs: float = option(
        1.0,
        "epochs (used when --max-steps is 0)",
        group="trainer",
        check=("more than 0, at most 1000", lambda v: 0 < v <= 1000),
    )
    max_steps: int = option(
        60,
        "optimizer steps; 0: train --num-epochs",
        group="trainer",
        cpu=16,
        check=("0 (train --num-epochs) or more", lambda v: v >= 0),
    )
    learning_rate: float = option(
        2e-4, "peak learning rate", group="trainer", cpu=1e-3, check=("more than 0, at most 1", lambda v: 0 < v <= 1)
    )
    logging_steps: int = option(1, "log the training loss every N steps", group="trainer", check=AT_LEAST_1)
    optim: str | None = option(
        None,
        "optimizer: one of transformers' OptimizerNames, e.g. adamw_torch, adafactor, sgd "
        "(default adamw_8bit on CUDA, adamw_torch on a CPU)",
        group="trainer",
        choices=list(OPTIMIZERS),
        metavar="NAME",
    )
    weight_decay: float = option(0.01, "AdamW weight decay", group="trainer", check=between(0, 1))
    lr_scheduler_type: str = option(
        "linear",
        f"learning-rate schedule: {', '.join(SCHEDULERS)}",
        group="trainer",
        choices=list(SCHEDULERS),
        metavar="NAME",
    )
    warmup_steps: int = option(5, "learning-rate warm-up steps", group="trainer", check=AT_LEAST_0)
    output_dir: str = option(
        "outputs", "checkpoints, TensorBoard runs (<output-dir>/runs), charts", group="trainer", check=folder
    )
    report_to: str = option("tensorboard", "tensorboard, none, or any transformers integration", group="trainer")
    save_steps: int = option(50, "checkpoint every N steps (for --resume)", group="trainer", check=AT_LEAST_1)
    eval_steps: int = option(0, "validation loss every N steps (0: once at the end)", group="trainer", check=AT_LEAST_0)
    padding_free: bool | None = option(None, "1/0: padding-free batches (default on with CUDA)", group="trainer")
    packing: bool = option(False, "1/0: pack examples into full-length rows", group="trainer")
    resume: bool = option(False, "continue from the last checkpoint in --output-dir", group="trainer", switch=True)
    run_name: str | None = None
    torch_compile: bool = False  # TrainingArguments.torch_compile: measured no faster for the default (README)


@dataclass(frozen=True)
class DecodingConfig:
    # answers per prompt; 1: greedy decoding (measured: README), more: median and bands
    samples: int = option(
        1,
        "answers sampled per forecast; with more than 1 the point forecast is their per-field median and "
        "their quantiles the bands (1: greedy, the measured default; README)",
        group="inference",
        check=between(1, 1000),
    )
    # at 0.7, 51 of 64 five-day forecasts of a tuned SmolLM2 were usable, at 1.0 only 29 (the median candle was
    # impossible more often): README, "Sampled forecasts"
    temperature: float = option(
        0.7,
        "sampling temperature (with --samples > 1)",
        group="inference",
        check=("more than 0, at most 10", lambda v: 0 < v <= 10),
    )
    constrained: bool = option(
        True,
        "constrained: answers generated under the answer format's grammar (dates fixed, numbers free); "
        "free: unconstrained, for comparison",
        group="inference",
        flag="--decoding",
        choices={"constrained": True, "free": False},
    )
    jump_forward: bool = option(
        True,
        "1/0: under the grammar, tokens it forces (dates, fixed text) are appended without a decode step, a run "
        "of them fed in one forward; greedy answers are the same token for token (README)",
        group="inference",
    )
    engine: str = option(
        "auto",
        "under the grammar, what runs the model: static (a static key/value cache, one-token steps replayed as a "
        "CUDA graph, rows in lockstep: measured fastest, README), transformers (the loaded model's own forward, the "
        "path before it), auto (static wherever the model allows it)",
        group="inference",
        flag="--decode-engine",
        choices=["auto", "static", "transformers"],
    )
    canonical: bool = option(
        True,
        "1/0: the grammar spells its fixed text (labels, dates) in the tokenizer's own tokens, so it is forced and "
        "costs no decode step; 0 allows every spelling (the grammar before; the same greedy answers, measured)",
        group="inference",
        flag="--canonical-spelling",
    )
    seed: int = shared(SEED, "random_state")
    band: float = option(0.8, "central band drawn on the chart (0 < band < 1)", group="inference", check=SHARE)
    bands: str = option(
        "calibrated",
        "where bands come from: calibrated, the model's own errors on the held-out days of its training (an "
        "evaluation measures them and leaves calibration.json beside the adapter); samples, the quantiles of "
        "the --samples answers (measured far too narrow: README)",
        group="inference",
        choices=list(BAND_SOURCES),
        cpu="samples",
    )
    band_family: str = option(
        "auto",
        "with calibrated bands, what the band is, per window type: auto (the lowest CRPS on the held-out days), "
        "conformal (the model's own errors, scaled by volatility), ewma or garch (that random walk around the "
        "point forecast)",
        group="inference",
        choices=["auto", "conformal", "ewma", "garch"],
    )
    point: str = option(
        "calibrated",
        "with calibrated bands, the point forecast: calibrated (default), the model's change from the last close "
        "weighted by what the held-out days support (0: persistence, 1: as generated; README); model: as generated",
        group="inference",
        choices=list(POINT_SOURCES),
    )

    def __post_init__(self):
        if self.bands not in BAND_SOURCES:
            raise StockToolError(f"--bands {self.bands!r}: one of {', '.join(BAND_SOURCES)}")
        if self.point not in POINT_SOURCES:
            raise StockToolError(f"--point {self.point!r}: one of {', '.join(POINT_SOURCES)}")
        if not 0 < self.band < 1:
            raise StockToolError(f"--band {self.band}: a central band is a share between 0 and 1, e.g. 0.8")
        if self.samples < 1:
            raise StockToolError(f"--samples {self.samples}: at least 1 answer per forecast (1 = greedy)")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise StockToolError(f"--temperature {self.temperature}: must be a positive number")

    def identity(self) -> str:
        """What cached answers depend on besides the model and the prompt."""
        return f"k{self.samples}:t{self.temperature}:{'grammar' if self.constrained else 'free'}:s{self.seed}"

    def describe(self) -> str:
        how = "greedy" if self.samples == 1 else f"median of {self.samples} samples at temperature {self.temperature:g}"
        return how + (", constrained to the answer format" if self.constrained else ", unconstrained")


@dataclass(frozen=True)
class EvalConfig:
    test_start: str | None = option(
        None,
        "first target day, YYYY-MM-DD (default: the day after the adapter's data)",
        group="evaluation",
        check="date",
    )
    test_end: str | None = option(
        None, "last target day, YYYY-MM-DD (default: --end-date or today)", group="evaluation", check="date"
    )
    stride: int = option(
        1, "trading days between forecast origins", group="evaluation", flag="--eval-stride", check=AT_LEAST_1
    )
    models: str = option(
        "tuned,base,lstm",
        "models besides the always-run baselines (persistence, drift, moving average): tuned, base, lstm",
        group="evaluation",
        flag="--eval-models",
    )
    windows: str | None = shared(None, "windows")  # None: the adapter's window types
    batch_size: int = option(
        1024,
        "forecast evaluation: sequences (prompts x samples) generated together (a batch the GPU cannot hold is "
        "split in two); instruction comparison: prompts, GPU 64, CPU 8",
        group="evaluation",
        flag="--eval-batch-size",
        cpu=8,
        check=AT_LEAST_1,
    )
    bootstrap: int = option(
        BOOTSTRAP, "block-bootstrap resamples for 95%% intervals", group="evaluation", check=AT_LEAST_0
    )
    brokerage: float = option(BROKERAGE, "backtest brokerage per side (0.1425%%)", group="evaluation", check=A_SHARE)
    sell_tax: float = option(
        SELL_TAX, "backtest securities transaction tax on sells", group="evaluation", check=A_SHARE
    )
    run_name: str | None = option(
        None, "report folder under --output-dir (default eval_<start>_<end>)", group="evaluation", flag="--eval-name"
    )
    lstm_epochs: int = option(
        30, "LSTM baseline epochs (early stopping on validation)", group="evaluation", check=AT_LEAST_1
    )
    seed: int = shared(SEED, "random_state")
    decoding: DecodingConfig = DecodingConfig()


@dataclass(frozen=True)
class TradeConfig:
    execute: bool = option(False, "send the planned orders (otherwise nothing is sent)", group="trading", switch=True)
    api_url: str | None = option(
        None, "trading server base URL (default $STOCK_API_URL or the spec's)", group="trading"
    )
    threshold: float = option(
        0.01, "act when |expected return| exceeds this", group="trading", flag="--trade-threshold", check=A_SHARE
    )
    max_lots: int = option(1, "lots (1,000 shares) per order at most", group="trading", check=AT_LEAST_1)
    max_positions: int = option(5, "stocks held at most", group="trading", check=AT_LEAST_1)
    # bounded so that the calendar days they span stay dates (about 20 years of trading days, and 4 of forecasts)
    past: int = option(5, "known trading days given to the model", group="inference", cpu=1, check=between(1, 5000))
    future: int = option(5, "trading days to forecast", group="inference", cpu=1, check=between(1, 1000))
    journal_dir: str = shared("outputs/trades", "output_dir", convert=lambda out: str(Path(out) / "trades"))


@dataclass(frozen=True)
class InstructConfig:
    dataset_files: str | None = option(
        None,
        "training files, JSON/JSONL: a.jsonl,b.jsonl:0.5 (weights)",
        group="instruct",
        flag="--dataset-file",
        check=_dataset_files,
    )
    template: str = option(
        "chat", "prompt template", group="instruct", flag="--prompt-template", choices=["chat", "cornucopia"]
    )
    skip_bad_rows: bool = option(
        False, "skip (and count) malformed rows instead of stopping", group="instruct", switch=True
    )
    eval_file: str | None = option(
        None, "instructions to answer and score (--train 0)", group="instruct", check=existing_file
    )
    compare: str | None = option(
        None,
        "models to run over --eval-file: base,<adapter dir>,... (default: --model-dir)",
        group="instruct",
        check=_compare,
    )
    max_new_tokens: int = option(256, "answer length limit", group="instruct", check=AT_LEAST_1)
    batch_size: int = shared(64, "eval_batch_size", cpu=8)
    limit: int = option(
        0, "only the first N rows of --eval-file (0: all)", group="instruct", flag="--eval-limit", check=AT_LEAST_0
    )
    bootstrap: int = shared(BOOTSTRAP, "bootstrap")
    run_name: str | None = shared(None, "eval_name")  # None: compare_<eval file stem> under --output-dir


def parse_flag(parser, text: str, flag: str):
    """A flag's text through its parser; a ValueError becomes one error line naming the flag."""
    try:
        return parser(text)
    except ValueError as exc:
        raise StockToolError(f"{flag}: {exc}") from exc
