"""The command line: one parser per command, each with only its settings' flags, and the spec's form.

    python main.py train --company-list-file data/companies.json     fetch, build, fine-tune, forecast
    python main.py forecast --code 2330 --past 5 --future 5           forecast with a chart, CSV, JSON, a page
    python main.py evaluate --test-start 2026-03-02                   walk-forward report against baselines
    python main.py trade [--execute]                                  plan (and send) orders on the server
    python main.py instruct --dataset-file a.jsonl,b.jsonl            financial instruction tuning, comparison
    python main.py export --export gguf                               the adapter merged, or as a GGUF file

The spec's form, `python main.py --train 1 --company-list-file ...` or `--train 0 [--evaluate 1] [--trade 1]
[--task instruct] [--export merged]`, takes every flag of every command and runs the same steps. Either way the
flags are parsed once into the settings groups (`config/*_args.py`), each validated where it is built; what
crosses groups, and every path, is checked here, before anything heavy is imported.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from config import export_args, flags
from config import settings as settings_module
from config.context_args import ContextConfig
from config.data_args import DataConfig, ExamplesConfig
from config.evaluation_args import EvalConfig
from config.export_args import ExportConfig
from config.help_format import CompactHelp, Parser
from config.inference_args import ForecastConfig, InferenceConfig
from config.instruct_args import InstructConfig, InstructDataConfig
from config.model_args import LoraConfig, ModelConfig
from config.settings import GROUPS_OF_SETTINGS, Settings
from config.trading_args import TradeConfig
from config.training_args import TrainConfig
from utils import StockToolError

PROG = "main.py"
GROUPS = {  # the help's sections, in order: group key → title
    "mode": "mode (the spec's form)",
    "data": "data",
    "examples": "examples (windows and prompts)",
    "context": "context in the prompts: twstock signals and news (as of each window's last day)",
    "model": "load pretrained model",
    "lora": "LoRA",
    "trainer": "trainer",
    "forecast": "forecast",
    "inference": "decoding and bands",
    "evaluation": "evaluation",
    "trading": "trading server",
    "instruct": "financial instructions",
    "instruct_data": "instruction data: events database, teacher",
    "export": "export",
    "other": "other",
}


@dataclass(frozen=True)
class Secrets:
    """Keys and passwords: from their flags or the environment, never saved, printed or logged."""

    newsapi_key: str | None = flags.option(
        None, "newsapi.org key (default $NEWSAPI_KEY; prefer the variable)", group="context"
    )
    api_account: str | None = flags.option(
        None, "account (default $STOCK_API_ACCOUNT; prefer the variable)", group="trading"
    )
    api_password: str | None = flags.option(
        None, "password (default $STOCK_API_PASSWORD; prefer the variable)", group="trading"
    )

    def __repr__(self) -> str:
        return "Secrets(...)"

    def newsapi(self) -> str | None:
        return self.newsapi_key or os.environ.get("NEWSAPI_KEY") or None


@dataclass(frozen=True)
class Modes:
    """The spec's form: what a run does, as flags."""

    train: int = flags.option(help="1: training mode, 0: inference mode", group="mode", choices=[0, 1])
    task: str = flags.option(
        "stock",
        "stock: price forecasting; instruct: financial instruction tuning (--dataset-file) and comparison",
        group="mode",
        choices=["stock", "instruct"],
    )
    evaluate: bool = flags.option(False, "1: walk-forward evaluation (the evaluate command)", group="mode")
    trade: bool = flags.option(False, "1: plan (and send) orders (the trade command)", group="mode")


@dataclass(frozen=True)
class Other:
    verbose: bool = flags.option(False, "debug logging", group="other", switch=True)


GROUP_CLASSES = tuple(GROUPS_OF_SETTINGS.values())


@dataclass(frozen=True)
class Command:
    """A command: what it is for, its settings groups (a class, or (class, the fields shown)) and its steps."""

    summary: str
    groups: tuple
    steps: tuple[str, ...] = ()


def only(cls, *names: str) -> tuple:
    """A settings group of which a command shows some flags (the others keep their defaults)."""
    return (cls, names)


_WHERE = ("data_dir", "output_dir", "offline", "end_date", "calendar", "price_source")
COMMANDS = {
    "train": Command(
        "fetch prices (and news), build windowed chat examples, fine-tune a LoRA adapter, then forecast --code",
        (
            DataConfig,
            ExamplesConfig,
            ContextConfig,
            only(Secrets, "newsapi_key"),
            ModelConfig,
            LoraConfig,
            TrainConfig,
            only(ForecastConfig, "codes", "past", "future"),
        ),
        ("train", "forecast_after_training"),
    ),
    "forecast": Command(
        "forecast the next trading days of --code with the adapter: table, chart, CSV, JSON and a page",
        (only(DataConfig, *_WHERE), only(ModelConfig, "model_dir"), ForecastConfig, InferenceConfig),
        ("forecast",),
    ),
    "evaluate": Command(
        "walk-forward forecasts of the adapter, its untuned base, an LSTM and the baselines over a test period",
        (only(DataConfig, *_WHERE, "company_list_file"), only(ModelConfig, "model_dir"), EvalConfig, InferenceConfig),
        ("evaluate",),
    ),
    "trade": Command(
        "read the account's holdings, forecast them and the company list, plan orders (sent only with --execute)",
        (
            only(DataConfig, *_WHERE, "company_list_file"),
            only(ModelConfig, "model_dir"),
            only(ForecastConfig, "past", "future"),
            InferenceConfig,
            TradeConfig,
            only(Secrets, "api_account", "api_password"),
        ),
        ("trade",),
    ),
    "instruct": Command(
        "financial instruction tuning (--dataset-file), comparison (--eval-file), built instruction data",
        (
            DataConfig,
            ContextConfig,
            ModelConfig,
            LoraConfig,
            TrainConfig,
            InstructConfig,
            InstructDataConfig,
            only(InferenceConfig, "seed", "batch_size"),
        ),
    ),
    "export": Command(
        "the adapter merged into its base model (an HF folder) or as a llama.cpp GGUF file with a Modelfile",
        (only(DataConfig, "output_dir"), only(ModelConfig, "model_dir"), ExportConfig),
        ("export",),
    ),
}


def _classes(groups) -> list[tuple[type, tuple | None]]:
    return [(g, None) if isinstance(g, type) else g for g in groups]


@dataclass(frozen=True)
class Invocation:
    """A parsed command line: the command, the steps it runs, and the flags as argparse left them."""

    command: str
    steps: tuple[str, ...]
    args: argparse.Namespace = field(repr=False)
    spec_form: bool = False

    @property
    def verbose(self) -> bool:
        return bool(getattr(self.args, "verbose", False))

    def settings(self, cuda: bool) -> Settings:
        """Every group built from the flags, the hardware's defaults settled: a flag left unset takes its field's
        GPU default with CUDA and its CPU-demonstration default otherwise; 4-bit is on with CUDA unless 8-bit."""
        args = self.args
        if self.command == "instruct" and getattr(args, "learning_rate", None) is None:
            args = argparse.Namespace(**vars(args) | {"learning_rate": TrainConfig.learning_rate})  # demos' rate is
        built = {name: flags.build(cls, args, cuda) for name, cls in GROUPS_OF_SETTINGS.items()}
        model = built["model"]
        if getattr(args, "load_in_4bit", None) is None:  # unset: on with CUDA unless 8-bit
            built["model"] = type(model)(**vars(model) | {"load_in_4bit": cuda and not model.load_in_8bit})
        return Settings(**built)

    def secrets(self) -> Secrets:
        return flags.build(Secrets, self.args, cuda=False)


# --------------------------------------------------------------------------- parsers


def command_parser(name: str) -> argparse.ArgumentParser:
    """The parser of one command: its settings groups' flags only, in their help sections."""
    command = COMMANDS[name]
    p = Parser(
        prog=f"{PROG} {name}",
        usage=f"{PROG} {name} [options]",
        description=command.summary,
        formatter_class=CompactHelp,
        epilog="every flag in full: docs/cli.md",
        add_help=False,
    )
    groups = {key: p.add_argument_group(title) for key, title in GROUPS.items()}
    groups["other"].add_argument("-h", "--help", action="help", help="show this help and exit")
    for cls, shown in _classes(command.groups) + [(Other, None)]:
        _add(p, groups, cls, shown)
    _drop_empty_groups(p)
    return p


def spec_parser() -> argparse.ArgumentParser:
    """The spec's form: `--train 1/0` and every flag of every command."""
    p = Parser(
        prog=PROG,
        usage=f"{PROG} --train {{0,1}} [options]  (or: {PROG} COMMAND [options])",
        formatter_class=CompactHelp,
        add_help=False,
    )
    groups = {key: p.add_argument_group(title) for key, title in GROUPS.items()}
    for cls in (Modes, *GROUP_CLASSES, Secrets, Other):
        _add(p, groups, cls, None)
    return p


def _add(parser, groups, cls, shown) -> None:
    if shown is None:
        flags.add_arguments(parser, groups, [cls])
        return
    keep = {f.name for f in fields(cls)} - set(shown)
    flags.add_arguments(parser, groups, [cls], skip=keep)


def _drop_empty_groups(parser) -> None:
    parser._action_groups = [g for g in parser._action_groups if g._group_actions]


def overview() -> str:
    """What `python main.py --help` prints: the commands, and the spec's form."""
    lines = [
        f"usage: {PROG} COMMAND [options]   or the spec's form: {PROG} --train {{0,1}} [options]",
        "",
        "Fine-tune an LLM with LoRA to forecast Taiwan stock prices (twstock data), and forecast with it.",
        "",
        "commands:",
    ]
    lines += [f"  {name:<10}{command.summary}" for name, command in COMMANDS.items()]
    lines += [
        "",
        "The spec's form takes every command's flags: --train 1 trains (then forecasts), --train 0",
        "forecasts; --evaluate 1, --trade 1, --task instruct and --export merged|gguf ask for the others.",
        "",
        f"{PROG} COMMAND --help lists a command's flags; docs/cli.md lists every flag in full.",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- parsing and steps


def parse(argv: list[str]) -> Invocation:
    """The command line → an Invocation; `--help` prints and exits (0), a refusal prints one line and exits (2)."""
    if argv and argv[0] in COMMANDS:
        args = command_parser(argv[0]).parse_args(argv[1:])
        return Invocation(argv[0], command_steps(argv[0], args), args)
    if not argv or argv[0] in ("-h", "--help") or "-h" in argv or "--help" in argv:
        print(overview())
        raise SystemExit(0 if argv else 2)
    if not argv[0].startswith("-"):
        spec_parser().exit(2, f"error: unknown command {argv[0]!r}: choose {', '.join(COMMANDS)} ({PROG} --help)\n")
    args = spec_parser().parse_args(argv)
    steps = spec_steps(args)
    command = "instruct" if args.task == "instruct" else "train" if args.train == 1 else steps[0]
    return Invocation(command, steps, args, spec_form=True)


def command_steps(name: str, args) -> tuple[str, ...]:
    """What a command runs, in order (instruct: what its flags ask for)."""
    if name != "instruct":
        return COMMANDS[name].steps
    built, asked = flags.build(InstructDataConfig, args, cuda=False), flags.build(InstructConfig, args, cuda=False)
    steps = [
        s
        for s, wanted in (
            ("build_forecaster", built.build_forecaster),
            ("build_events", built.build_events),
            ("train_instruct", asked.dataset_files),
            ("compare", asked.eval_file),
        )
        if wanted
    ]
    if not steps:
        raise StockToolError(
            "instruct: give --dataset-file (to train), --eval-file (to compare), --build-events 1 or "
            "--build-forecaster 1"
        )
    return tuple(steps)


def spec_steps(args) -> tuple[str, ...]:
    """The steps of the spec's form, as its flags have always combined them."""
    train, export = args.train == 1, bool(args.export)
    steps = [
        s for s, asked in (("build_forecaster", args.build_forecaster), ("build_events", args.build_events)) if asked
    ]
    built = bool(steps)
    if args.task == "instruct":
        steps += ["train_instruct"] * train + ["export"] * export
        if args.eval_file or (not train and not built and not export):
            steps.append("compare")
        return tuple(steps)
    if built and not train:
        return tuple(steps)
    steps += ["train"] * train + ["export"] * export
    if export and not (args.evaluate or args.trade):
        return tuple(steps)
    steps += ["evaluate"] * bool(args.evaluate) + ["trade"] * bool(args.trade)
    if not (args.evaluate or args.trade):
        steps.append("forecast_after_training" if train else "forecast")
    return tuple(steps)


def check(invocation: Invocation) -> None:
    """Refuse a malformed value, a path of the wrong kind or flags that do not go together, before any work and
    without importing anything heavy: every group is built once here (each validates itself), then the paths."""
    from utils import is_writable_dir

    settings = invocation.settings(cuda=False)  # device defaults are valid either way; only given values can fail
    flags.check_paths((*GROUP_CLASSES, Secrets), invocation.args)
    if not is_writable_dir(settings.data.output_dir):
        raise StockToolError(f"--output-dir {settings.data.output_dir} is not writable: choose another folder")
    if settings.trade.execute and "trade" not in invocation.steps:
        raise StockToolError("--execute only applies to --trade 1")
    if "export" in invocation.steps and settings.export.kind is None:
        raise StockToolError("export: give --export merged or --export gguf")
    if settings.export.kind and settings.export.export_dir is not None:
        export_args.check_target(Path(settings.export.export_dir))
    if "train" in invocation.steps and "evaluate" in invocation.steps:
        settings_module.check_days_after_training(settings)


def device_notes(invocation: Invocation, settings: Settings, cuda: bool) -> list[str]:
    """What the hardware chose, in words: on a GPU its defaults and calibrated bands; on a CPU the demonstration's
    shrunk defaults, and bands from samples."""
    groups = (settings.data, settings.examples, settings.model, settings.train, settings.forecast, settings.inference)
    implicit = {}
    for group in groups:
        text = flags.as_text(group)
        for f, _ in flags.flag_fields(type(group)):
            if f.name in flags.unset_device_fields(type(group), invocation.args):
                implicit[flags.flag_name(f)] = text[f.name]
    if invocation.command == "instruct":  # price windows and forecasts play no part in instruction tuning
        implicit = {
            k: v for k, v in implicit.items() if k not in ("--windows", "--learning-rate", "--past", "--future")
        }
    notes, shown = [], ", ".join(f"{k} {v}" for k, v in implicit.items())
    training = "train" in invocation.steps or "train_instruct" in invocation.steps
    asked_bands = getattr(invocation.args, "bands", None) is not None
    if cuda:
        if training and implicit:
            notes.append("CUDA GPU: the GPU defaults apply: " + shown)
        if not asked_bands and "evaluate" in invocation.steps:
            notes.append(
                "CUDA GPU: bands calibrated on the adapter's held-out days (--bands samples draws them instead)"
            )
        return notes
    if not asked_bands and "evaluate" in invocation.steps:
        notes.append(
            "no CUDA GPU: bands from samples (--bands samples), since calibrating them would forecast the "
            "adapter's held-out days too, about doubling the evaluation's time on a CPU; --bands calibrated "
            "asks for it"
        )
    if training and implicit:
        notes.append(
            f"CPU DEMONSTRATION: no CUDA GPU, so these defaults are shrunk to finish in minutes: {shown}. "
            "The forecasts of such a run are not meaningful; train on a GPU, or set the flags yourself."
        )
    return notes
