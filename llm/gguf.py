"""The GGUF writer of `--export gguf` (llama.cpp's format, with the tokenizer and chat template) and the Ollama
Modelfile beside it.
"""

from __future__ import annotations

from pathlib import Path

from utils import StockToolError

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
