"""Instruction tuning's settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from config.defaults import BOOTSTRAP
from config.flags import AT_LEAST_0, AT_LEAST_1, existing_file, option, shared
from utils import StockToolError


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
