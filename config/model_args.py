"""The model settings: which base model, how it is loaded, where the adapter goes (`ModelConfig`); and LoRA's
(`LoraConfig`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from config.defaults import SEED
from config.flags import between, folder, option, settle
from utils import StockToolError

GGUF_MAGIC = b"GGUF"  # the first four bytes of every GGUF file


def check_model_name(model_name: str) -> None:
    """Refuse, before any work, a model name that cannot load: empty, a missing local path, a file that is not
    a GGUF file (its first four bytes), or a folder without config.json. A Hub id is left to the loader."""
    if not model_name.strip():
        raise StockToolError("--model-name '': give a Hub id, an HF model folder or a .gguf file")
    path = Path(model_name).expanduser()
    if path.suffix.lower() == ".gguf" or path.is_file():
        if path.is_dir():
            raise StockToolError(f"model file {model_name} is a folder, not a .gguf file")
        if not path.is_file():
            raise StockToolError(f"model file {model_name} does not exist")
        if path.suffix.lower() != ".gguf":
            raise StockToolError(
                f"model {model_name} is a file but not a .gguf one: give a .gguf file, an HF model folder or a Hub id"
            )
        try:
            with open(path, "rb") as handle:
                magic = handle.read(len(GGUF_MAGIC))
        except OSError as exc:
            raise StockToolError(f"cannot read model file {model_name}: {exc.strerror or exc}") from None
        if magic != GGUF_MAGIC:
            raise StockToolError(f"model file {model_name} is not a GGUF file (it does not start with {GGUF_MAGIC!r})")
        return
    if path.is_dir():
        if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
            raise StockToolError(f"model folder {model_name} has no config.json: not an HF model folder")
    elif model_name.startswith(("/", "./", "../", "~", ".\\", "..\\")) or os.path.isabs(model_name):
        raise StockToolError(f"model folder {model_name} does not exist")


def _model_name(flag: str, value: str) -> None:
    check_model_name(value)  # no torch: it reads a .gguf's first bytes, or a folder's files


SEED_RANGE = between(0, 2**32 - 1, "from 0 to 4294967295 (numpy's seeds)")


@dataclass(frozen=True)
class ModelConfig:
    model_name: str | None = option(
        None,
        "Hub id (unsloth/Llama-3.2-3B-Instruct, unsloth/Meta-Llama-3.1-8B-bnb-4bit), HF folder or .gguf; "
        "default: the 3B model on CUDA, the bundled SmolLM2-135M on a CPU",
        group="model",
        path=_model_name,
    )
    max_seq_length: int = option(
        4096,
        "longest training example in tokens",
        group="model",
        cpu=768,
        check=between(64, 2**20, "from 64 to 1048576 tokens"),
    )
    # unset (None): on with CUDA unless --load_in_8bit (`config.cli`)
    load_in_4bit: bool | None = option(
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
        more=True,
    )
    model_dir: str = option(
        "outputs/model", "where the trained adapter is saved and loaded from", group="model", path=folder
    )

    def __post_init__(self):
        settle(self)
        if self.load_in_4bit and self.load_in_8bit:
            raise StockToolError("--load_in_4bit and --load_in_8bit are exclusive: choose one")


@dataclass(frozen=True)
class LoraConfig:
    rank: int = option(16, "LoRA rank r", group="lora", check=between(1, 4096))
    lora_alpha: int = option(16, "LoRA alpha", group="lora", check=between(1, 2**16))
    lora_dropout: float = option(
        0.0, "LoRA dropout", group="lora", check=("from 0 up to 1 (exclusive)", lambda v: 0 <= v < 1)
    )
    random_state: int = option(SEED, "random seed", group="lora", aliases=["--seed"], check=SEED_RANGE)

    def __post_init__(self):
        settle(self)
