"""What `export` writes: the adapter merged into its base model as a plain HF folder, or as a llama.cpp GGUF file
with an Ollama Modelfile."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from config.flags import folder, option, settle
from utils import StockToolError, is_writable_dir

EXPORT_KINDS = ("merged", "gguf")
EXPORT_DTYPES = ("bfloat16", "float16", "float32")  # of a merged export's weights
GGUF_TYPES = ("f16", "q8_0")  # what the `gguf` library can write; it has no K-quant quantizer (q4_k_m)


@dataclass(frozen=True)
class ExportConfig:
    kind: str | None = option(
        None,
        "merged: the --model-dir adapter merged into its base model as a plain HF folder; gguf: the same as a "
        "llama.cpp GGUF file with an Ollama Modelfile (after training when --train 1)",
        group="export",
        flag="--export",
        choices=list(EXPORT_KINDS),
    )
    export_dir: str | None = option(
        None, "where the export goes (default <output-dir>/<merged|gguf>); new or empty", group="export", path=folder
    )
    gguf_type: str = option(GGUF_TYPES[0], "of the GGUF weights", group="export", choices=list(GGUF_TYPES))
    dtype: str = option(
        EXPORT_DTYPES[0], "of the merged weights", group="export", flag="--export-dtype", choices=list(EXPORT_DTYPES)
    )

    def __post_init__(self):
        settle(self)


def check_target(target: Path) -> None:
    """An export never lands in a folder that holds something, nor where it cannot be written."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise StockToolError(f"--export-dir {target} exists and is not empty: choose a new folder")
    parent = target.parent if target.parent != Path("") else Path(".")
    if not is_writable_dir(str(parent)):
        raise StockToolError(f"--export-dir {target}: {parent} is not writable")
