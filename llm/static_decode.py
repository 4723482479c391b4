"""Decoding with a static key/value cache for Llama-architecture models: the forward of `generation.py`'s
static path, written out in a few tensor operations so that a whole decode step is one CUDA graph.

A model's weights are read once from whatever the loader made of them (plain `nn.Linear`, bitsandbytes 4-bit,
PEFT LoRA around either: the 4-bit weights dequantized, the LoRA product added) into plain tensors of the compute
dtype. The cache holds every row's keys and values at fixed columns: a batch's prompts are left-padded to one
width, and each row's answer tokens follow its prompt column by column, so rows can advance at different rates
(one token, or a run of forced tokens) without holes. A query of a row sees the row's columns from its first
real one up to its own; a fed position past a row's real tokens (padding of a chunk, a row that waits) writes
columns that the row's next real tokens overwrite before anything reads them.

Attention is the folded decode attention (`attention.fold_gqa_decode`): the query heads that share a key/value
head are that head's query rows, so grouped-query attention with a mask takes a fused kernel. Every operation is
a plain tensor operation without a host read, so one-token steps are captured once per batch shape as a CUDA
graph and replayed (`Engine.step`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

log = logging.getLogger("stock.model")

SUPPORTED = ("llama",)  # model types whose forward this module reproduces (SmolLM2, Llama 3.x)
PREFILL_TOKENS = 65536  # prompt tokens per prefill forward: bounds its activations (rows × width)
COLUMN_BUCKET = 256  # cache columns are allocated in multiples of this, so later batches reuse the cache and graphs


def unsupported(model) -> str | None:
    """Why the static path cannot run `model` (None: it can)."""
    config = getattr(_base(model), "config", None)
    kind = getattr(config, "model_type", None)
    if kind not in SUPPORTED:
        return f"model type {kind!r} (the static path reproduces {', '.join(SUPPORTED)})"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"activation {config.hidden_act!r}"
    for module in model.modules():
        if getattr(module, "use_dora", None) and any(module.use_dora.values()):
            return "a DoRA adapter"
        weight = getattr(module, "weight", None)
        if type(weight).__name__ == "Int8Params":
            return "8-bit weights"
    return None


def _base(model):
    """The causal LM under any PEFT wrapper (the module that holds `lm_head`)."""
    return next(m for m in model.modules() if "lm_head" in m._modules)


def _dense(linear, dtype):
    """A linear layer's weight as a plain (out, in) tensor: bitsandbytes 4-bit dequantized."""
    weight = linear.weight
    if type(weight).__name__ == "Params4bit":
        import bitsandbytes.functional as bnbf

        return bnbf.dequantize_4bit(weight.data, weight.quant_state).to(dtype)
    return weight.detach().to(dtype)


def _linear(module, dtype, merge: bool) -> tuple:
    """(weight, bias, lora) of a projection: lora is None (merged into the weight, or none) or (A, B, scaling)."""
    base = getattr(module, "base_layer", module)
    weight = _dense(base, dtype)
    bias = None if getattr(base, "bias", None) is None else base.bias.detach().to(dtype)
    loras = []
    if (
        hasattr(module, "lora_A")
        and not getattr(module, "merged", False)
        and not getattr(module, "disable_adapters", 0)
    ):
        for name in module.active_adapters:
            if name in module.lora_A:
                a, b = module.lora_A[name].weight.detach(), module.lora_B[name].weight.detach()
                loras.append((a, b, float(module.scaling[name])))
    if merge and loras:
        delta = sum(s * (b.float() @ a.float()) for a, b, s in loras)
        return (weight.float() + delta).to(dtype), bias, None
    if len(loras) > 1:
        raise ValueError("several active LoRA adapters: merge them")
    lora = None if not loras else (loras[0][0].to(dtype), loras[0][1].to(dtype), loras[0][2])
    return weight, bias, lora


def _apply(x, projection):
    """x @ W.T (+ bias) (+ LoRA's scaling × x @ A.T @ B.T, as PEFT computes it)."""
    import torch.nn.functional as F

    weight, bias, lora = projection
    out = F.linear(x, weight, bias)
    if lora is not None:
        a, b, scaling = lora
        out = out + F.linear(F.linear(x, a), b) * scaling
    return out


def _rms(x, weight, eps: float):
    """transformers' LlamaRMSNorm, operation for operation."""
    import torch

    dtype = x.dtype
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(dtype)


def _rotate(x, cos, sin):
    import torch

    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


@dataclass
class _Layer:
    input_norm: object
    post_norm: object
    q: tuple
    k: tuple
    v: tuple
    o: tuple
    gate: tuple
    up: tuple
    down: tuple


@dataclass(frozen=True)
class Feed:
    """What one forward feeds: token `ids` (rows × width), the cache columns they are written at and their rotary
    positions (both rows × width), and each row's position `last` whose logits it returns."""

    ids: object
    cols: object
    positions: object
    last: object

    def tensors(self) -> tuple:
        return self.ids, self.cols, self.positions, self.last


@dataclass
class Cache:
    """Keys and values of `rows` sequences at `columns` cache columns, per layer: layers × rows × kv heads ×
    columns × head size. `start[r]`: row r's first real column (left padding before it)."""

    keys: object
    values: object
    start: object

    @property
    def rows(self) -> int:
        return self.keys.shape[1]

    @property
    def columns(self) -> int:
        return self.keys.shape[3]


class Engine:
    """A Llama-architecture model's forward over a static cache. `merge`: LoRA added into the weights (one matrix
    product per projection; the default on a GPU) or applied beside them as PEFT does (bit for bit its sums)."""

    def __init__(self, model, merge: bool = True):
        import torch
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

        base = _base(model)
        config = base.config
        self.device = base.lm_head.weight.device
        self.dtype = base.lm_head.weight.dtype if base.lm_head.weight.dtype.is_floating_point else torch.bfloat16
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.eps = float(config.rms_norm_eps)
        self.scale = self.head_dim**-0.5
        inner = base.model
        self.embed = inner.embed_tokens.weight.detach().to(self.dtype)
        self.norm = inner.norm.weight.detach().to(self.dtype)
        self.lm_head = _linear(base.lm_head, self.dtype, True)
        self.layers = [
            _Layer(
                layer.input_layernorm.weight.detach().to(self.dtype),
                layer.post_attention_layernorm.weight.detach().to(self.dtype),
                *(
                    _linear(getattr(part, name), self.dtype, merge)
                    for part, name in (
                        (layer.self_attn, "q_proj"),
                        (layer.self_attn, "k_proj"),
                        (layer.self_attn, "v_proj"),
                        (layer.self_attn, "o_proj"),
                        (layer.mlp, "gate_proj"),
                        (layer.mlp, "up_proj"),
                        (layer.mlp, "down_proj"),
                    )
                ),
            )
            for layer in inner.layers
        ]
        self.rotary = LlamaRotaryEmbedding(config).to(self.device)
        self._tables = (0, None, None)
        self._graphs: dict = {}
        self._cache: Cache | None = None
        self.replays = 0  # one-token steps replayed from a CUDA graph (benchmarks)

    # ----------------------------------------------------------------- memory

    def kv_bytes_per_token(self) -> int:
        return len(self.layers) * self.kv_heads * self.head_dim * 2 * self.embed.element_size()

    def cache(self, rows: int, columns: int) -> Cache:
        """A cache of at least `rows` × `columns`, reused (with its graphs) while later batches fit in it."""
        import torch

        columns = COLUMN_BUCKET * math.ceil(columns / COLUMN_BUCKET)
        held = self._cache
        if held is not None and held.rows == rows and held.columns >= columns:
            return held
        self.release()
        shape = (len(self.layers), rows, self.kv_heads, columns, self.head_dim)
        keys = torch.zeros(shape, dtype=self.dtype, device=self.device)
        values = torch.zeros(shape, dtype=self.dtype, device=self.device)
        self._cache = Cache(keys, values, torch.zeros(rows, dtype=torch.long, device=self.device))
        return self._cache

    def release(self) -> None:
        """Drop the cache and the graphs recorded on it (their memory goes back to the allocator)."""
        self._cache, self._graphs = None, {}

    def ensure_positions(self, longest: int) -> None:
        """The rotary table (cos, sin of every position, computed by transformers' own rotary module) grown to
        `longest` positions: done before a batch, since a CUDA graph cannot grow it."""
        import torch

        if self._tables[0] >= longest:
            return
        length = max(longest, 2 * self._tables[0], 4096)
        probe = torch.zeros(1, dtype=self.dtype, device=self.device)
        cos, sin = self.rotary(probe, torch.arange(length, device=self.device)[None, :])
        self._tables = (length, cos[0], sin[0])
        self._graphs = {}  # they read the old table

    # ----------------------------------------------------------------- the forward

    def forward(self, cache: Cache, rows: slice, feed: Feed, span: int | None = None):
        """Logits (rows × vocabulary) after feeding `feed` to the rows `rows` of `cache`. Attention reads the first
        `span` columns (default: all)."""
        import torch
        import torch.nn.functional as F

        ids, cols, positions, last = feed.tensors()
        batch, width = ids.shape
        span = span or cache.columns
        group = self.heads // self.kv_heads
        keys, values, start = cache.keys[:, rows], cache.values[:, rows], cache.start[rows]
        h = F.embedding(ids, self.embed)
        _, cos, sin = self._tables
        cos, sin = cos[positions][:, None], sin[positions][:, None]  # rows × 1 × width × head size
        column = torch.arange(span, device=ids.device)
        visible = ((column >= start[:, None, None]) & (column <= cols[:, :, None])) | (column == cols[:, :, None])
        mask = visible[:, None, None].expand(batch, 1, group, width, span).reshape(batch, 1, group * width, span)
        index = cols[:, None, :, None].expand(batch, self.kv_heads, width, self.head_dim)
        for i, layer in enumerate(self.layers):
            x = _rms(h, layer.input_norm, self.eps)
            q = _apply(x, layer.q).view(batch, width, self.heads, self.head_dim).transpose(1, 2)
            k = _apply(x, layer.k).view(batch, width, self.kv_heads, self.head_dim).transpose(1, 2)
            v = _apply(x, layer.v).view(batch, width, self.kv_heads, self.head_dim).transpose(1, 2)
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
            keys[i].scatter_(2, index, k)
            values[i].scatter_(2, index, v)
            folded = q.reshape(batch, self.kv_heads, group * width, self.head_dim)
            out = F.scaled_dot_product_attention(
                folded, keys[i][:, :, :span], values[i][:, :, :span], attn_mask=mask, scale=self.scale
            )
            out = out.view(batch, self.heads, width, self.head_dim).transpose(1, 2).reshape(batch, width, -1)
            h = h + _apply(out, layer.o)
            x = _rms(h, layer.post_norm, self.eps)
            h = h + _apply(F.silu(_apply(x, layer.gate)) * _apply(x, layer.up), layer.down)
        h = h[torch.arange(batch, device=ids.device), last]
        return _apply(_rms(h, self.norm, self.eps), self.lm_head)

    def prefill(self, cache: Cache, prompts: list[list[int]], copies: int = 1):
        """Write `prompts` (token ids, each row's prompt and opening) right-aligned into the cache: prompt u into
        rows u·copies … u·copies + copies − 1 (the samples of one prompt share its prefill). Returns the logits of
        every row's last position and the width (the column after every prompt)."""
        import torch

        width = max(len(p) for p in prompts)
        starts = torch.tensor([width - len(p) for p in prompts], dtype=torch.long)
        cache.start.copy_(starts.repeat_interleave(copies).to(cache.start.device))
        logits = []
        per = max(1, PREFILL_TOKENS // width)
        for s in range(0, len(prompts), per):
            part = prompts[s : s + per]
            ids = torch.zeros((len(part), width), dtype=torch.long)
            for r, p in enumerate(part):
                ids[r, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            cols = torch.arange(width).expand(len(part), width)
            positions = (cols - starts[s : s + len(part), None]).clamp(min=0)
            rows = slice(s * copies, (s + len(part)) * copies, copies)
            last = torch.full((len(part),), width - 1, dtype=torch.long)
            on = [t.to(self.device) for t in (ids, cols, positions, last)]
            logits.append(self.forward(cache, rows, Feed(*on), span=width))
        if copies > 1:  # every sample of a prompt starts from its prompt's keys and values
            for tensor in (cache.keys, cache.values):
                shaped = tensor.view(len(self.layers), len(prompts), copies, *tensor.shape[2:])
                shaped[:, :, 1:, :, :width] = shaped[:, :, :1, :, :width]
        return torch.cat(logits).repeat_interleave(copies, dim=0), width

    def step(self, cache: Cache, feed: Feed, columns: int):
        """`forward` over every row of the cache, reading the first `columns` cache columns (rounded up to
        COLUMN_BUCKET, so that few shapes occur). A one-token step on a GPU is replayed from a CUDA graph recorded
        for this cache and span (its inputs copied into the graph's own tensors; the logits are the graph's); a
        wider one (a forced run, once per field) and every step on a CPU run eagerly."""
        span = min(cache.columns, COLUMN_BUCKET * math.ceil(columns / COLUMN_BUCKET))
        width = feed.ids.shape[1]
        if self.device.type != "cuda" or width > 1:  # a forced run's forward is rare: eager
            return self.forward(cache, slice(None), feed, span)
        key = (id(cache), width, span)
        if key not in self._graphs:
            self._graphs[key] = self._record(cache, width, span)
        graph, inputs, out = self._graphs[key]
        for held, given in zip(inputs.tensors(), feed.tensors(), strict=True):
            held.copy_(given)
        graph.replay()
        self.replays += 1
        return out

    def _record(self, cache: Cache, width: int, span: int):
        """A CUDA graph of `forward` over the whole cache at this width and span. Its warm-up and recording write the
        cache's last `width` columns, which no row uses (the caller keeps them free)."""
        import torch

        rows = cache.rows
        cols = (cache.columns - width + torch.arange(width, device=self.device)).expand(rows, width).contiguous()
        inputs = Feed(
            torch.zeros((rows, width), dtype=torch.long, device=self.device),
            cols,
            torch.zeros((rows, width), dtype=torch.long, device=self.device),
            torch.zeros(rows, dtype=torch.long, device=self.device),
        )
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                self.forward(cache, slice(None), inputs, span)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self.forward(cache, slice(None), inputs, span)
        return graph, inputs, out
