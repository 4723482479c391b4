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
from dataclasses import dataclass, replace
from pathlib import Path

from config import flags
from config.data_args import DataConfig
from config.defaults import FORECASTER_SAMPLES, FORECASTER_WEEKS, INSTRUCT_MIX, INSTRUCT_ROWS
from config.evaluation_args import EvalConfig
from config.flags import AT_LEAST_1, option
from config.instruct_args import InstructConfig
from config.model_args import LoraSettings, ModelConfig
from config.trading_args import TradeConfig
from config.training_args import TrainSettings
from llm.export import EXPORT_DTYPES
from llm.gguf import GGUF_TYPES

log = logging.getLogger("stock")

# The settings of the pipeline, in the order build_configs returns them; their flags are generated from them.
CONFIGS = (DataConfig, ModelConfig, LoraSettings, TrainSettings, EvalConfig, TradeConfig, InstructConfig)
# The help's sections, in order: group key → title.
GROUPS = {
    "mode": "mode",
    "data": "data",
    "model": "load pretrained model",
    "lora": "LoRA",
    "trainer": "trainer",
    "inference": "inference (--train 0)",
    "evaluation": "evaluation (--evaluate 1)",
    "trading": "trading server (--trade 1)",
    "context": "context in the prompts: twstock signals and news (as of each window's last day)",
    "export": "export (--export merged)",
    "instruct": "financial instructions (--task instruct)",
}


@dataclass(frozen=True)
class RunConfig:
    """What a run does: the mode flags, which no stage's settings hold."""

    train: int = option(help="1: training mode, 0: inference mode", group="mode", choices=[0, 1])
    task: str = option(
        "stock",
        "stock: price forecasting; instruct: financial instruction tuning (--dataset-file) and comparison",
        group="mode",
        choices=["stock", "instruct"],
    )
    code: str | None = option(
        None,
        "stock code(s) to forecast, e.g. 2330 or 2330,2454,6569 (inference: 2330; after training: 2330 when "
        "trained on, else the first company)",
        group="inference",
    )
    chart_style: str = option(
        "international",
        "colours of the known candles: international (green up, red down) or taiwan (red up, green down)",
        group="inference",
        choices=["international", "taiwan"],
    )
    context: str = option("", "extra text (e.g. news) added to the prompt as is", group="inference")
    evaluate: bool = option(
        False,
        "1: walk-forward forecasts of --model-dir, its untuned base, an LSTM and naive baselines over the "
        "test period, with metrics, a backtest and <output-dir>/<run>/report.md (after training with --train 1)",
        group="evaluation",
    )
    trade: bool = option(
        False,
        "1: read the account's holdings, forecast them and the company list, plan buy/sell/hold "
        "(a dry run unless --execute)",
        group="trading",
    )
    api_account: str | None = option(None, "account (default $STOCK_API_ACCOUNT; prefer the variable)", group="trading")
    api_password: str | None = option(
        None, "password (default $STOCK_API_PASSWORD; prefer the variable)", group="trading"
    )
    newsapi_key: str | None = option(
        None, "newsapi.org key (default $NEWSAPI_KEY; prefer the variable)", group="context"
    )
    export: str | None = option(
        None,
        "merged: the --model-dir adapter merged into its base model as a plain HF folder; gguf: the same as a "
        "llama.cpp GGUF file with an Ollama Modelfile (after training when --train 1)",
        group="export",
        choices=["merged", "gguf"],
    )
    export_dir: str | None = option(
        None, "where the export goes (default <output-dir>/<merged|gguf>); new or empty", group="export"
    )
    gguf_type: str = option(GGUF_TYPES[0], "of the GGUF weights", group="export", choices=list(GGUF_TYPES))
    export_dtype: str = option(EXPORT_DTYPES[0], "of the merged weights", group="export", choices=list(EXPORT_DTYPES))
    build_events: bool = option(
        False,
        "1: build <data-dir>/events.sqlite from stored news and prices, and instructions from it",
        group="instruct",
    )
    build_forecaster: bool = option(
        False,
        "1: news-driven analysis rows (FinGPT-Forecaster style) with answers from --teacher-url",
        group="instruct",
    )
    teacher_url: str | None = option(None, "OpenAI-compatible base URL (key: $TEACHER_API_KEY)", group="instruct")
    teacher_model: str | None = option(None, "the teacher's model name", group="instruct")
    forecaster_weeks: int = option(FORECASTER_WEEKS, "past weeks in each prompt", group="instruct", check=AT_LEAST_1)
    forecaster_samples: int = option(
        FORECASTER_SAMPLES, "samples (company-weeks) at most", group="instruct", check=AT_LEAST_1
    )
    instruct_mix: str = option(INSTRUCT_MIX, "shares of news-impact / market rows", group="instruct")
    instruct_rows: int = option(INSTRUCT_ROWS, "instructions built at most", group="instruct", check=AT_LEAST_1)
    verbose: bool = option(False, "debug logging", group=None, switch=True)


def check_arguments(args) -> None:
    """Refuse an out-of-range number, a malformed date, a path of the wrong kind or flags that do not go together
    before any work, naming the flag; nothing heavy (torch, transformers, ...) is imported for it."""
    from utils import StockToolError, is_writable_dir

    flags.check((RunConfig, *CONFIGS), args)
    if not is_writable_dir(args.output_dir):
        raise StockToolError(f"--output-dir {args.output_dir} is not writable: choose another folder")
    if args.execute and not args.trade:
        raise StockToolError("--execute only applies to --trade 1")
    if args.export and args.export_dir is not None:
        from llm import export

        flags.folder("--export-dir", args.export_dir)
        export.check_target(Path(args.export_dir))


class _Parser(argparse.ArgumentParser):
    """argparse's refusals as one line, like every other refusal of the tool (exit code 2)."""

    def error(self, message):
        self.exit(2, f"error: {message} (python3 main.py --help lists the flags)\n")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Adds "(default: X)" only where the help does not already say it and there is a value to show."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    """Every flag, generated from `RunConfig` and the stage configs (`configs.py`)."""
    p = _Parser(
        prog="main.py",
        description="Fine-tune an LLM with LoRA to forecast Taiwan stock prices (twstock data), and forecast with it.",
        formatter_class=_HelpFormatter,
        epilog="examples:\n" + "\n".join("  " + line for line in __doc__.splitlines()[2:9]),
    )
    groups = {key: p.add_argument_group(title) for key, title in GROUPS.items()}
    flags.add_arguments(p, groups, (RunConfig, *CONFIGS))
    return p


def build_configs(args, cuda: bool):
    """The stage configs from the parsed flags. The defaults that depend on the hardware are settled here, in
    one place, and said: a flag left unset takes its field's GPU default with CUDA, and its CPU-demonstration
    default otherwise (each field's metadata in `configs.py`)."""
    if args.task == "instruct" and args.learning_rate is None:
        # the demonstration's higher rate is for price forecasts
        args = argparse.Namespace(**vars(args) | {"learning_rate": TrainSettings.learning_rate})
    data, model, lora, train, evaluation, trade, instruct = (flags.build(cls, args, cuda) for cls in CONFIGS)
    if args.load_in_4bit is None:
        model = replace(model, load_in_4bit=cuda and not model.load_in_8bit)
    _say_device_defaults(args, cuda, (data, model, train, trade))
    return data, model, lora, train, evaluation, trade, instruct


def _say_device_defaults(args, cuda: bool, configs) -> None:
    """Print what the hardware chose: on a GPU its defaults and calibrated bands; on a CPU the demonstration's shrunk
    defaults, and bands from samples."""
    implicit = {
        name: getattr(config, name) for config in configs for name in flags.unset_device_fields(type(config), args)
    }
    if args.task == "instruct":  # price windows and forecasts play no part in instruction tuning
        implicit = {k: v for k, v in implicit.items() if k not in ("windows", "learning_rate", "past", "future")}
    if cuda:
        from llm import distributed

        if distributed.world().main and args.train == 1 and implicit:  # once, not once per torchrun process
            print("CUDA GPU: the GPU defaults apply: " + ", ".join(f"{k}={v}" for k, v in implicit.items()))
        if distributed.world().main and args.bands is None and args.evaluate:
            print("CUDA GPU: bands calibrated on the adapter's held-out days (--bands samples draws them instead)")
        return
    if args.bands is None and args.evaluate:
        print(
            "no CUDA GPU: bands from samples (--bands samples), since calibrating them would forecast the adapter's "
            "held-out days too, about doubling the evaluation's time on a CPU; --bands calibrated asks for it"
        )
    if args.train == 1 and implicit:
        print(
            "CPU DEMONSTRATION: no CUDA GPU, so these defaults are shrunk to finish in minutes: "
            + ", ".join(f"{k}={v}" for k, v in implicit.items())
            + ". The forecasts of such a run are not meaningful; train on a GPU, or set the flags yourself."
        )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from llm import distributed
    from utils import StockToolError, setup_logging

    setup_logging(args.verbose)
    try:
        check_arguments(args)  # before the heavy imports: a refusal comes at once
        import model
        from stock_predictor import StockPredictor

        cuda = model.cuda_available()
        here = distributed.setup(cuda)  # one of several processes under torchrun / accelerate launch
        data, model_cfg, lora, train, evaluation, trade, instruct = build_configs(args, cuda)
        model.check_quantization(model_cfg, cuda)  # in every mode: inference ignored the flags on a CPU
        if args.train == 1:
            from llm import sft

            sft.check_train_flags(train, cuda)  # what needs CUDA, before any data work
        newsapi_key = args.newsapi_key or os.environ.get("NEWSAPI_KEY") or None
        predictor = StockPredictor(data, model_cfg, lora, train, newsapi_key=newsapi_key, decoding=evaluation.decoding)
        predictor.chart_style = args.chart_style
        pool = predictor.generation_pool(evaluation, instruct)
        run = flags.build(RunConfig, args, cuda)
        if not here.main:
            return serve(run, predictor, instruct, pool)
        code = dispatch(run, predictor, evaluation, trade, instruct, pool)
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


def serve(run, predictor, instruct, pool) -> int:
    """A process other than rank 0 under torchrun: train beside rank 0, then generate its share of what
    rank 0's evaluation or comparison asks for, until rank 0 is done. Rank 0 does everything else."""
    from llm import distributed

    if run.train == 1 and run.task == "instruct":
        predictor.train_instruct(instruct)
    elif run.train == 1:
        predictor.train()
    pool.serve()
    distributed.finish()
    return 0


def dispatch(run, predictor, evaluation, trade, instruct, pool=None) -> int:
    """Run the stages the flags ask for, in pipeline order."""
    from stock_predictor import print_forecast
    from utils import StockToolError

    target = None
    if run.export:
        from llm import export

        target = Path(run.export_dir or Path(predictor.train_settings.output_dir) / run.export)
        export.check_target(target)  # before any work: a run must not end in a refusal
    built = False
    if run.build_forecaster:
        from instruct import teacher

        if not run.teacher_url or not run.teacher_model:
            raise StockToolError("--build-forecaster 1 needs --teacher-url and --teacher-model")
        predictor.build_forecaster(teacher.TeacherClient(run.teacher_url, run.teacher_model),
                                   run.forecaster_weeks, run.forecaster_samples)  # fmt: skip
        built = True
    if run.build_events:
        predictor.build_events(run.instruct_mix, run.instruct_rows)
        built = True
    if run.task == "instruct":
        if run.train == 1:
            predictor.train_instruct(instruct)
        if target is not None:
            print(export.describe(export.export(run, predictor.model_cfg.model_dir, target)))
            if not instruct.eval_file:
                return 0
        if instruct.eval_file or (run.train == 0 and not built):
            predictor.compare(instruct, pool)
        return 0
    if built and run.train == 0:
        return 0
    if run.train == 1:
        predictor.train()
    if target is not None:
        print(export.describe(export.export(run, predictor.model_cfg.model_dir, target)))
        if not (run.evaluate or run.trade):
            return 0
    if run.evaluate:
        predictor.evaluate(evaluation, pool=pool)
    if run.trade:
        import stock_api

        predictor.trade(trade, stock_api.Credentials.from_env(run.api_account, run.api_password))
    if run.evaluate or run.trade:
        return 0
    if run.train == 1:
        return _forecast_after_training(run, predictor, trade)
    codes = [c.strip() for c in (run.code or "2330").split(",") if c.strip()]
    if not codes:
        raise StockToolError("--code: give at least one stock code, e.g. 2330 or 2330,2454")
    results = predictor.forecast_many(codes, trade.past, trade.future, run.context)
    for result in results:
        print_forecast(result)
    return 0 if all(r.ok for r in results) else 3


def _forecast_after_training(run, predictor, trade) -> int:
    """The main job ends with the new adapter's forecast and chart (of --code; by default 2330 when it was
    trained on, else the first company). Training has succeeded by then: a forecast that cannot be made is
    reported, and the exit code stays 0."""
    from stock_predictor import print_forecast
    from utils import StockToolError

    trained = [c.code for c in predictor.companies()]
    default = "2330" if "2330" in trained else trained[0]
    codes = [c.strip() for c in (run.code or default).split(",") if c.strip()]
    print(f"forecast with the new adapter ({trade.past} known → {trade.future} forecast trading days):")
    try:
        for result in predictor.forecast_many(codes, trade.past, trade.future, run.context):
            print_forecast(result)
    except StockToolError as exc:
        print(f"no forecast after training: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
