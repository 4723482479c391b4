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

import logging
import shutil
from dataclasses import replace
from pathlib import Path

import model
from config import manifest
from config.export_args import EXPORT_DTYPES, GGUF_TYPES, ExportConfig, check_target
from llm.gguf import chat_format, modelfile, write_gguf
from utils import StockToolError

log = logging.getLogger("stock.export")
__all__ = ["check_target", "export", "export_gguf", "export_merged", "describe"]


def export_merged(model_dir: str, target: str, dtype: str = "bfloat16") -> Path:
    """The adapter in `model_dir` merged into its base model, saved to `target` in `dtype`."""
    if dtype not in EXPORT_DTYPES:
        raise StockToolError(f"--export-dtype {dtype!r}: choose one of {', '.join(EXPORT_DTYPES)}")
    out, config = _source(model_dir, target)
    merged, tokenizer = model.merge_adapter(model_dir, config.base_model, dtype)

    def fill(staging: Path) -> dict:
        merged.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        return {"kind": "merged", "dtype": dtype}

    _write_whole(out, model_dir, config, fill)
    log.info("merged model (%s) saved to %s", dtype, out)
    return out


def _source(model_dir: str, target: str) -> tuple[Path, manifest.Manifest]:
    """(the export's folder, the adapter's manifest), both checked before any loading."""
    out = Path(target)
    check_target(out)
    config = manifest.read(model_dir)
    if config.export:
        kind = config.export.get("kind", "")
        raise StockToolError(f"{model_dir} is already a {kind} export, not an adapter: export from the adapter folder")
    return out, config


def _write_whole(out: Path, model_dir: str, config: manifest.Manifest, fill) -> None:
    """`fill(staging)` writes the export's files into a folder beside `out` and returns what the export is; this
    tool's config (marked as that export) joins them, and the folder is renamed to `out` only when complete. A
    failure leaves nothing behind; a failed write (a full disk) is one error line."""
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
        what = fill(staging) | {"adapter": str(Path(model_dir).resolve())}
        replace(config, export=what).write(staging)
        if out.exists():
            out.rmdir()  # checked empty before the work
        staging.replace(out)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise StockToolError(f"could not write the export to {out}: {exc}") from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def export(cfg: ExportConfig, model_dir: str, target: Path) -> Path:
    """The export the command line asks for (--export, --export-dtype, --gguf-type)."""
    if cfg.kind == "gguf":
        return export_gguf(model_dir, str(target), cfg.gguf_type)
    return export_merged(model_dir, str(target), cfg.dtype)


def describe(folder: Path) -> str:
    """One line for the user: what was written and how to use it."""
    exported = manifest.read(str(folder)).export
    size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    if exported["kind"] == "gguf":
        return (
            f"GGUF ({exported['type']}, {size / 1e6:,.1f} MB) and an Ollama Modelfile in {folder}: "
            f"`cd {folder} && ollama create stock-forecaster -f Modelfile`, or llama.cpp's "
            f"`llama-cli -m {folder / exported['file']}`; this tool: `--train 0 --model-dir {folder}`"
        )
    return (
        f"merged model ({exported['dtype']}, {size / 1e6:,.1f} MB) in {folder}: "
        f"forecast with `python main.py --train 0 --model-dir {folder}`; "
        f"load elsewhere with transformers.AutoModelForCausalLM.from_pretrained({str(folder)!r})"
    )


def export_gguf(model_dir: str, target: str, kind: str = "f16") -> Path:
    """The adapter in `model_dir` merged into its base model, written to `target` as `model-<kind>.gguf` with an
    Ollama `Modelfile` and this tool's `stock_config.json`."""
    if kind not in GGUF_TYPES:
        raise StockToolError(f"--gguf-type {kind!r}: choose one of {', '.join(GGUF_TYPES)} (no K-quants in `gguf`)")
    out, config = _source(model_dir, target)
    merged, tokenizer = model.merge_adapter(model_dir, config.base_model, "float32")
    chat_format(tokenizer)  # refuse before writing anything
    name = f"model-{kind}.gguf"

    def fill(staging: Path) -> dict:
        tokenizer.save_pretrained(staging / "tokenizer")  # what the GGUF's tokenizer fields are read from
        write_gguf(merged, tokenizer, staging / "tokenizer", staging / name, kind, Path(model_dir).name)
        shutil.rmtree(staging / "tokenizer")
        (staging / "Modelfile").write_text(modelfile(name, tokenizer), encoding="utf-8")
        return {"kind": "gguf", "type": kind, "file": name}

    _write_whole(out, model_dir, config, fill)
    log.info("GGUF (%s) and Modelfile saved to %s", kind, out)
    return out
