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

import manifest
import model
from utils import StockToolError, is_writable_dir

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


def export(args, model_dir: str, target: Path) -> Path:
    """The export the command line asks for (--export, --export-dtype, --gguf-type)."""
    if args.export == "gguf":
        return export_gguf(model_dir, str(target), args.gguf_type)
    return export_merged(model_dir, str(target), args.export_dtype)


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


# --------------------------------------------------------------------------- GGUF (llama.cpp, Ollama)

GGUF_TYPES = ("f16", "q8_0")  # what the `gguf` library can write; it has no K-quant quantizer (q4_k_m)
CHAT_FORMATS = {  # tokenizer marker → (llama.cpp pre-tokenizer, Ollama template, stop strings)
    "<|im_start|>": (
        "smollm",
        "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n",
        ["<|im_end|>"],
    ),
    "<|start_header_id|>": (
        "llama-bpe",
        "<|begin_of_text|>{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
        "{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n",
        ["<|eot_id|>", "<|end_of_text|>"],
    ),
}


def _permute(weights, heads: int):
    """llama.cpp's rotary layout for q/k projections (its converter's `permute`): each head's two halves
    interleaved. transformers' GGUF reader applies the inverse."""
    return (
        weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _rope(config) -> dict:
    """The rotary settings: transformers 5 keeps them in `rope_parameters` (theta and scaling together),
    earlier versions in `rope_theta` and `rope_scaling`."""
    merged = dict(getattr(config, "rope_scaling", None) or {})
    merged |= dict(getattr(config, "rope_parameters", None) or {})
    if "rope_theta" not in merged and getattr(config, "rope_theta", None) is not None:
        merged["rope_theta"] = config.rope_theta
    return merged


def _llama3_rope_factors(config) -> list[float] | None:
    """The per-frequency factors of Llama 3.x's rope scaling, written as the `rope_freqs` tensor the way
    llama.cpp's converter writes them; None for models without it (SmolLM2)."""
    import math

    scaling = _rope(config)
    if str(scaling.get("rope_type", scaling.get("type", ""))).lower() != "llama3":
        return None
    base = scaling.get("rope_theta", 10000.0)
    dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    factor = scaling.get("factor", 8.0)
    low, high = scaling.get("low_freq_factor", 1.0), scaling.get("high_freq_factor", 4.0)
    old_context = scaling.get("original_max_position_embeddings", 8192)
    factors = []
    for i in range(0, dim, 2):
        wavelength = 2 * math.pi * base ** (i / dim)
        if wavelength < old_context / high:
            factors.append(1.0)
        elif wavelength > old_context / low:
            factors.append(factor)
        else:
            smooth = (old_context / wavelength - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return factors


def chat_format(tokenizer) -> tuple[str, str, list[str]]:
    vocab = tokenizer.get_vocab()
    for marker, spec in CHAT_FORMATS.items():
        if marker in vocab:
            return spec
    raise StockToolError(
        "--export gguf knows the ChatML (SmolLM2) and Llama 3 chat formats; this tokenizer has neither: "
        "use --export merged and llama.cpp's own converter"
    )


def write_gguf(merged, tokenizer, tokenizer_dir: Path, path: Path, kind: str, name: str) -> None:
    """A llama.cpp GGUF of a merged Llama-architecture model: `f16` (norms stay float32) or `q8_0`."""
    import gguf

    config = merged.config
    if config.model_type != "llama":
        raise StockToolError(f"--export gguf writes the Llama architecture; this model is {config.model_type!r}")
    writer = gguf.GGUFWriter(str(path), "llama")
    _gguf_header(writer, config, kind, name)
    _gguf_tokenizer(writer, tokenizer, tokenizer_dir, config.vocab_size)
    _gguf_tensors(writer, merged, kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def _gguf_header(writer, config, kind: str, name: str) -> None:
    """The architecture's hyper-parameters, as llama.cpp reads them."""
    import gguf

    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(_rope(config).get("rope_theta", 10000.0))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_dimension_count(_head_dim(config))
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if kind == "f16" else gguf.LlamaFileType.MOSTLY_Q8_0)


def _gguf_tokenizer(writer, tokenizer, tokenizer_dir: Path, vocab_size: int) -> None:
    """The tokenizer, as llama.cpp's converter writes a byte-level BPE one (merges and chat template included)."""
    import gguf

    pre, _, _ = chat_format(tokenizer)
    reverse = {i: t for t, i in tokenizer.get_vocab().items()}
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    added = set(tokenizer.get_added_vocab().values())
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        tokens.append(reverse[i])
        types.append(
            gguf.TokenType.CONTROL
            if i in special
            else gguf.TokenType.USER_DEFINED
            if i in added
            else gguf.TokenType.NORMAL
        )
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    vocab = gguf.SpecialVocab(tokenizer_dir, load_merges=True, n_vocab=len(tokens))
    vocab.chat_template = tokenizer.chat_template
    vocab.add_to_gguf(writer)


def _gguf_tensors(writer, merged, kind: str) -> None:
    """The weights under llama.cpp's names (q/k rows permuted to its rotary layout), f16 or q8_0; norms float32."""
    import gguf
    import numpy as np

    config = merged.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    factors = _llama3_rope_factors(config)
    if factors is not None:
        writer.add_tensor(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", np.array(factors, np.float32))
    for key, tensor in merged.state_dict().items():
        if key == "lm_head.weight" and getattr(config, "tie_word_embeddings", False):
            continue  # llama.cpp reads the tied output from token_embd
        target = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise StockToolError(f"--export gguf: no llama.cpp name for the tensor {key}")
        data = tensor.float().numpy()
        if key.endswith("q_proj.weight"):
            data = _permute(data, config.num_attention_heads)
        elif key.endswith("k_proj.weight"):
            data = _permute(data, config.num_key_value_heads)
        if data.ndim == 1:
            writer.add_tensor(target, data.astype(np.float32))
        elif kind == "q8_0" and data.shape[-1] % 32 == 0:
            quantized = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(target, quantized, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(target, data.astype(np.float16))


SYSTEM_TURNS = {
    "<|im_start|>": r"<\|im_start\|>system\n(.*?)<\|im_end\|>",
    "<|start_header_id|>": r"<\|start_header_id\|>system<\|end_header_id\|>\n\n(.*?)<\|eot_id\|>",
}


def default_system(tokenizer) -> str | None:
    """The system message the model's own chat template adds when a conversation has none (SmolLM2's "You are
    a helpful AI assistant named SmolLM…"): the prompts this tool trained and forecasts with contain it."""
    import re

    text = tokenizer.apply_chat_template([{"role": "user", "content": "-"}], tokenize=False)
    for marker, pattern in SYSTEM_TURNS.items():
        if marker in tokenizer.get_vocab():
            found = re.search(pattern, text, re.S)
            return found.group(1) if found else None
    return None


def modelfile(gguf_name: str, tokenizer) -> str:
    """An Ollama Modelfile for the GGUF beside it: its chat template, the template's default system message,
    stop tokens and greedy decoding (what this tool's forecasts use)."""
    _, template, stops = chat_format(tokenizer)
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{template}"""']
    system = default_system(tokenizer)
    if system:
        lines.append(f'SYSTEM """{system}"""')
    lines += [*(f'PARAMETER stop "{s}"' for s in stops), "PARAMETER temperature 0", ""]
    return "\n".join(lines)


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
