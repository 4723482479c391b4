"""Take a trained adapter elsewhere: the base model with the LoRA merged in, as a plain HF folder.

`--export merged` merges the adapter into its base model (`model.merge_adapter`: transformers + PEFT in float32,
on the CPU whether or not the machine has a GPU), casts the result to `--export-dtype` and saves weights,
tokenizer and chat template. `transformers.AutoModelForCausalLM.from_pretrained(<folder>)` loads it alone. The
folder also keeps this tool's `stock_config.json` (answer format, fields, windows), marked as a merged export,
so `python main.py --train 0 --model-dir <folder>` forecasts with it, and `--model-name <folder>` takes it as
a base model.

The folder is written beside its final name and renamed at the end: it is complete or absent.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from utils import StockToolError, is_writable_dir, write_json

log = logging.getLogger("stock.export")

EXPORT_DTYPES = ("bfloat16", "float16", "float32")


def check_target(target: Path) -> None:
    """An export never lands in a folder that holds something, nor where it cannot be written."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise StockToolError(f"--export-dir {target} exists and is not empty: choose a new folder")
    parent = target.parent if target.parent != Path("") else Path(".")
    if not is_writable_dir(str(parent)):
        raise StockToolError(f"--export-dir {target}: {parent} is not writable")


def export_merged(model_dir: str, target: str, dtype: str = "bfloat16") -> Path:
    """The adapter in `model_dir` merged into its base model, saved to `target` in `dtype`."""
    import model

    if dtype not in EXPORT_DTYPES:
        raise StockToolError(f"--export-dtype {dtype!r}: choose one of {', '.join(EXPORT_DTYPES)}")
    out = Path(target)
    check_target(out)
    config = model.read_stock_config(model_dir)
    if config.get("export"):
        raise StockToolError(f"{model_dir} is already a merged export, not an adapter: export from the adapter folder")
    merged, tokenizer = model.merge_adapter(model_dir, config["base_model"], dtype)
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        merged.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        exported = config | {"export": {"kind": "merged", "dtype": dtype, "adapter": str(Path(model_dir).resolve())}}
        write_json(staging / model.STOCK_CONFIG, exported)
        if out.exists():
            out.rmdir()  # checked empty above
        staging.replace(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("merged model (%s) saved to %s", dtype, out)
    return out


def describe(folder: Path) -> str:
    """One line for the user: what was written and how to use it."""
    import model

    config = json.loads((folder / model.STOCK_CONFIG).read_text(encoding="utf-8"))
    size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    return (
        f"merged model ({config['export']['dtype']}, {size / 1e6:,.1f} MB) in {folder}: "
        f"forecast with `python main.py --train 0 --model-dir {folder}`; "
        f"load elsewhere with transformers.AutoModelForCausalLM.from_pretrained({str(folder)!r})"
    )
