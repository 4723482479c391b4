"""Model shapes and compute figures of the speed benchmarks: random-weight Llamas of the spec's exact shapes (the
real weights cannot be downloaded here; speed does not depend on their values), parameter counts from a
config.json, and model FLOPs utilisation over a device's dense bf16 peak."""

from __future__ import annotations

from pathlib import Path

# Exact shapes from the models' published config.json files.
SHAPES = {
    "llama-3.2-3b": dict(
        hidden_size=3072,
        intermediate_size=8192,
        num_hidden_layers=28,
        num_attention_heads=24,
        num_key_value_heads=8,
        head_dim=128,
        tie_word_embeddings=True,
    ),
    "llama-3.2-1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=64,
        tie_word_embeddings=True,
    ),
    "llama-3.1-8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        tie_word_embeddings=False,
    ),
}
LLAMA3_COMMON = dict(
    vocab_size=128256,
    max_position_embeddings=131072,
    rope_theta=500000.0,
    rms_norm_eps=1e-5,
    rope_scaling={
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    bos_token_id=1,
    eos_token_id=2,
)


def random_model_folder(shape: str, tokenizer_dir: str, out: Path) -> Path:
    """Save a random-weight bf16 Llama of `shape` with the given tokenizer (ids fit in Llama-3's vocab)."""
    if (out / "config.json").is_file():
        return out
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**SHAPES[shape], **LLAMA3_COMMON, dtype="bfloat16")
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        torch.manual_seed(0)
        net = LlamaForCausalLM(config).to(torch.bfloat16)
    net.save_pretrained(out)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out)
    del net
    return out


# Dense bf16 tensor-core peaks (no sparsity) from NVIDIA's datasheets, by a name fragment of the device, the
# more specific fragment first (an "NVIDIA H100 80GB HBM3" is the SXM part).
PEAK_BF16_FLOPS = [("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12)]


def llama_parameters(config: dict) -> int:
    """Parameters of a Llama-architecture model from its config.json fields (embeddings included; the output
    head counted once more when it is not tied to them)."""
    h, layers, vocab = config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]
    head_dim = config.get("head_dim") or h // config["num_attention_heads"]
    q = config["num_attention_heads"] * head_dim
    kv = config.get("num_key_value_heads", config["num_attention_heads"]) * head_dim
    attention = h * q + 2 * h * kv + q * h
    mlp = 3 * h * config["intermediate_size"]
    per_layer = attention + mlp + 2 * h  # + the two RMSNorm weights
    head = 0 if config.get("tie_word_embeddings", False) else vocab * h
    return vocab * h + layers * per_layer + h + head


def peak_flops(device: str) -> float | None:
    """The device's dense bf16 peak in FLOP/s, or None for a device not in the table."""
    for fragment, flops in PEAK_BF16_FLOPS:
        if fragment.lower() in (device or "").lower():
            return flops
    return None


def mfu(tokens_per_s: float | None, parameters: int, peak: float | None) -> float | None:
    """Model FLOPs utilisation: 4 · N · tokens/s over the peak (LoRA training: forward 2N,
    backward through the activations 2N; gradient checkpointing's recomputation is not counted as useful)."""
    if not tokens_per_s or not peak:
        return None
    return 4 * parameters * tokens_per_s / peak
