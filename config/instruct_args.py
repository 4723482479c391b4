"""Instruction tuning's settings: which files train it and which score it (`InstructConfig`), and the instruction
data the tool builds itself, from the events database and a teacher model (`InstructDataConfig`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from config.defaults import BOOTSTRAP
from config.flags import AT_LEAST_0, AT_LEAST_1, existing_file, option, settle
from utils import StockToolError, parse_file_weights

INSTRUCT_KINDS = ("news", "market")  # the events database's instruction kinds (news impact, market analysis)


def _dataset_files(flag: str, value: str) -> None:
    """--dataset-file a.jsonl,b.jsonl:0.5: every file named is there."""
    for path, _ in parse_file_weights(value):
        existing_file(flag, path)


def _compare(flag: str, value: str) -> None:
    """--compare base,<adapter folder>,...: every adapter named is a folder."""
    for name in parse_names(value):
        if name != "base" and not Path(name).is_dir():
            raise StockToolError(f"{flag}: {name} is not an adapter folder (nor base)")


def parse_names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def files_text(files) -> str:
    return ",".join(path if weight == 1 else f"{path}:{weight:g}" for path, weight in files)


def parse_mix(text: str) -> tuple[tuple[str, float], ...]:
    """'news:0.6,market:0.4' → (("news", 0.6), ("market", 0.4)) (the events database's shares)."""
    shares = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        kind, _, share = part.partition(":")
        if kind not in INSTRUCT_KINDS:
            raise ValueError(f"{part!r}: kinds are news and market (earnings needs data we lack)")
        try:
            shares[kind] = float(share)
        except ValueError:
            raise ValueError(f"{part!r}: the share after ':' is not a number") from None
    if not shares or sum(shares.values()) <= 0:
        raise ValueError("needs a positive share, e.g. news:0.6,market:0.4")
    return tuple(shares.items())


def mix_text(mix) -> str:
    return ",".join(f"{kind}:{share:g}" for kind, share in mix)


@dataclass(frozen=True)
class InstructConfig:
    dataset_files: tuple[tuple[str, float], ...] | None = option(
        None,
        "training files, JSON/JSONL: a.jsonl,b.jsonl:0.5 (weights)",
        group="instruct",
        flag="--dataset-file",
        path=_dataset_files,
        parse=lambda text: tuple(parse_file_weights(text)),
        text=files_text,
    )
    template: str = option(
        "chat", "prompt template", group="instruct", flag="--prompt-template", choices=["chat", "cornucopia"], more=True
    )
    skip_bad_rows: bool = option(
        False, "skip (and count) malformed rows instead of stopping", group="instruct", switch=True, more=True
    )
    eval_file: str | None = option(None, "instructions to answer and score", group="instruct", path=existing_file)
    compare: tuple[str, ...] | None = option(
        None,
        "models to run over --eval-file: base,<adapter dir>,... (default: --model-dir)",
        group="instruct",
        path=_compare,
        parse=parse_names,
        text=",".join,
    )
    max_new_tokens: int = option(256, "answer length limit", group="instruct", check=AT_LEAST_1, more=True)
    limit: int = option(
        0,
        "only the first N rows of --eval-file (0: all)",
        group="instruct",
        flag="--eval-limit",
        check=AT_LEAST_0,
        more=True,
    )
    bootstrap: int = option(
        BOOTSTRAP, "bootstrap resamples for 95%% intervals", group="instruct", check=AT_LEAST_0, more=True
    )
    run_name: str | None = option(
        None,
        "report folder under --output-dir (default compare_<eval file>)",
        group="instruct",
        flag="--eval-name",
        more=True,
    )

    def __post_init__(self):
        settle(self)


@dataclass(frozen=True)
class InstructDataConfig:
    build_events: bool = option(
        False,
        "1: build <data-dir>/events.sqlite from stored news and prices, and instructions from it",
        group="instruct_data",
    )
    build_forecaster: bool = option(
        False,
        "1: news-driven analysis rows (FinGPT-Forecaster style) with answers from --teacher-url",
        group="instruct_data",
    )
    teacher_url: str | None = option(None, "OpenAI-compatible base URL (key: $TEACHER_API_KEY)", group="instruct_data")
    teacher_model: str | None = option(None, "the teacher's model name", group="instruct_data")
    forecaster_weeks: int = option(4, "past weeks in each prompt", group="instruct_data", check=AT_LEAST_1, more=True)
    forecaster_samples: int = option(
        200, "samples (company-weeks) at most", group="instruct_data", check=AT_LEAST_1, more=True
    )
    instruct_mix: tuple[tuple[str, float], ...] = option(
        (("news", 0.6), ("market", 0.4)),
        "shares of news-impact / market rows",
        group="instruct_data",
        parse=parse_mix,
        text=mix_text,
        more=True,
    )
    instruct_rows: int = option(2000, "instructions built at most", group="instruct_data", check=AT_LEAST_1, more=True)

    def __post_init__(self):
        settle(self)
        if self.build_forecaster and not (self.teacher_url and self.teacher_model):
            raise StockToolError("--build-forecaster 1 needs --teacher-url and --teacher-model")
