"""The library patches of the GPU stack, each a named function that model loading applies (`prepare_gpu_stack`,
`prepare_generation`), switched by a `Patches` record (the benchmarks switch them off to measure what each gives;
docs/measured.md). None is applied at import.

- `patch_varlen_gqa`: torch 2.11's varlen flash attention given torch 2.12's `enable_gqa`, so that unsloth's
  padding-free training runs one attention call per layer instead of one per sequence (training). Applied before
  unsloth is imported, which must itself precede trl / transformers / peft.
- `patch_fold_decode_attention`: unsloth's one-token grouped-query decode attention as ordinary attention
  (`fold_gqa_decode`), so that it takes a fused kernel instead of the math one (generation).
- `patch_decode_graphs`: unsloth's decode step replayed as CUDA graphs (its programmatic switch), for generation
  through the loaded model's own forward.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger("stock.model")


@dataclass(frozen=True)
class Patches:
    """Which patches model loading applies on a GPU (all, by default)."""

    varlen_gqa: bool = True
    fold_decode_attention: bool = True
    decode_graphs: bool = True


DEFAULT = Patches()
APPLIED: dict[str, str] = {}  # what each patch did in this process (for the benchmarks' records)


def prepare_gpu_stack(patches: Patches = DEFAULT) -> None:
    """On a GPU, before anything imports transformers: the varlen patch, then unsloth imported (it patches trl,
    transformers and peft when imported first). Once per process."""
    if "unsloth" in APPLIED:
        return
    APPLIED["varlen_gqa"] = patch_varlen_gqa() if patches.varlen_gqa else "off"
    import unsloth  # noqa: F401

    APPLIED["unsloth"] = "imported"


def prepare_generation(patches: Patches = DEFAULT) -> None:
    """On a GPU, before a model generates through unsloth's inference path: the folded decode attention and
    unsloth's CUDA-graph decode step, as `patches` says."""
    APPLIED["fold_decode_attention"] = patch_fold_decode_attention() if patches.fold_decode_attention else "off"
    APPLIED["decode_graphs"] = patch_decode_graphs(patches.decode_graphs)


def fold_gqa_decode(sdpa):
    """`sdpa` (scaled_dot_product_attention) with one-token grouped-query attention computed as ordinary
    attention: the query heads that share a key/value head become that head's query rows.

    unsloth's batched decode step calls SDPA with `enable_gqa=True` and a padding mask. No fused PyTorch kernel
    takes that combination (flash takes no mask; memory-efficient and cuDNN no grouped heads: pytorch/pytorch#181528,
    Comfy-Org/ComfyUI#15135), so it runs on the math kernel, which repeats the cached keys and values for every
    query head. On the H100 the step then grew with batch × cache length: 140 ms at 1,024 five-day prompts,
    16.6 ms folded (docs/measured.md, "Generation speed"). Folded, the same attention has as many query as key heads and
    takes the memory-efficient kernel. The result is the same attention (not bit for bit: another kernel sums
    in another order). Everything else goes to `sdpa` unchanged."""

    def attention(query, key, value, *args, **kwargs):
        mask = kwargs.get("attn_mask")
        heads, kv_heads = query.shape[1], key.shape[1]
        if (
            not args
            and kwargs.get("enable_gqa")
            and not kwargs.get("is_causal")
            and not kwargs.get("dropout_p")
            and query.dim() == 4
            and query.shape[2] == 1
            and heads != kv_heads
            and heads % kv_heads == 0
            and (mask is None or (mask.dim() == 4 and mask.shape[1] == 1 and mask.shape[2] == 1))
        ):
            batch, _, _, head_dim = query.shape
            folded = query.reshape(batch, kv_heads, heads // kv_heads, head_dim)
            out = sdpa(folded, key, value, attn_mask=mask, scale=kwargs.get("scale"))
            return out.reshape(batch, heads, 1, head_dim)
        return sdpa(query, key, value, *args, **kwargs)

    attention.folds_gqa = True
    return attention


def varlen_with_gqa(varlen_attn):
    """torch 2.11's `varlen_attn` taking torch 2.12's `enable_gqa`: grouped key/value heads are repeated to the
    query's heads first. The layout is varlen's (tokens, heads, head_dim); everything else passes through."""

    def attention(*arguments, window_size=None, enable_gqa=False, **kw):
        query, key, value, *sequences = arguments  # then cu_seq_q, cu_seq_k, max_q, max_k
        if enable_gqa and key.shape[-2] != query.shape[-2]:
            groups = query.shape[-2] // key.shape[-2]
            key = key.repeat_interleave(groups, dim=-2)
            value = value.repeat_interleave(groups, dim=-2)
        if window_size is not None:
            kw["window_size"] = window_size
        return varlen_attn(query, key, value, *sequences, **kw)

    attention.takes_gqa = True
    return attention


def patch_varlen_gqa() -> str:
    """Lets unsloth's padding-free training use torch's one-call varlen flash attention on torch 2.11.

    unsloth runs a padding-free batch's attention as one varlen flash call only when torch's `varlen_attn` takes
    `enable_gqa` (torch 2.12); on 2.11 (the GPU machine's) it falls back to one SDPA call per sequence of the
    batch, per layer. Giving 2.11's function that argument (`varlen_with_gqa`) before unsloth is imported puts
    it on the one-call path; whether that is faster is measured by `benchmarks/train_speed.py` (docs/measured.md). Does
    nothing without CUDA, without torch's varlen attention or flash kernel, on a torch that already takes
    `enable_gqa`. Returns what it did, for the log."""
    import inspect

    import torch

    if not torch.cuda.is_available():
        return "not needed: no CUDA"
    try:
        import torch.nn.attention.varlen as varlen
    except ImportError:
        return "not available: this torch has no varlen attention"
    params = inspect.signature(varlen.varlen_attn).parameters
    if getattr(varlen.varlen_attn, "takes_gqa", False) or "enable_gqa" in params:
        return "not needed: torch's varlen attention takes grouped heads"
    if "window_size" not in params or not torch.backends.cuda.is_flash_attention_available():
        return "not available: this torch's varlen attention lacks window_size or the flash kernel"
    varlen.varlen_attn = varlen_with_gqa(varlen.varlen_attn)
    log.info("attention: torch varlen flash attention with grouped heads for padding-free batches")
    return "installed"


def patch_fold_decode_attention() -> str:
    """Routes unsloth's Llama decode attention through `fold_gqa_decode` (once per process)."""
    import unsloth.models.llama as llama

    if not getattr(llama.scaled_dot_product_attention, "folds_gqa", False):
        llama.scaled_dot_product_attention = fold_gqa_decode(llama.scaled_dot_product_attention)
    return "installed"


def patch_decode_graphs(on: bool) -> str:
    """unsloth's decode step replayed as CUDA graphs (bit for bit the eager step, by its docs; it measured 27% more
    forecasts/s at 5:5, docs/measured.md), through its programmatic switch `_decode_graphs.ENABLED`."""
    try:
        from unsloth.models import _decode_graphs as graphs
    except ImportError:  # an unsloth without CUDA-graph decoding
        return "not available"
    graphs.ENABLED = bool(on)
    return "on" if on else "off"
