"""The training benchmark's tools on literal inputs: the benchmark's configurations, parameter count and MFU, the
token counting of the training collator, and the varlen attention with grouped heads (CPU only)."""

import sys

import pytest

from benchmarks import model_shapes, train_speed
from llm import patches, trainer_hooks

torch = pytest.importorskip("torch")


def test_configurations_are_presets_or_spelled_out_and_bad_ones_are_refused():
    assert train_speed.parse_config("default") == train_speed.Config("default", "unsloth", 16, True, False, True)
    plain = train_speed.parse_config("unsloth-padded")
    assert (plain.batch, plain.padding_free, plain.varlen_gqa) == (8, False, False)
    custom = train_speed.parse_config("unsloth:32:1:0:0")
    assert (custom.stack, custom.batch, custom.padding_free, custom.packing, custom.varlen_gqa) == (
        "unsloth",
        32,
        True,
        False,
        False,
    )
    assert train_speed.parse_config("unsloth:8:0:1").varlen_gqa  # on unless said
    assert train_speed.parse_config("default").flash == "auto"  # unsloth picks FlashAttention-3/-4 when installed
    assert train_speed.parse_config("default-bundled-flash").flash == "off"
    assert not train_speed.parse_config("transformers:4:0:0").varlen_gqa  # an unsloth setting only
    for bad in (
        "fast",
        "unsloth:8:0",
        "vllm:8:0:0",
        "unsloth:x:0:0",
        "unsloth:0:0:0",
        "unsloth:8:2:0",
        "transformers:8:1:0",
    ):
        with pytest.raises(ValueError, match="--configs"):
            train_speed.parse_config(bad)


def test_parameter_count_matches_the_published_model_sizes():
    common = {"vocab_size": 128256}
    # Meta's model cards: Llama-3.2-3B 3.21B (3,212,749,824), Llama-3.1-8B 8.03B (8,030,261,248)
    assert model_shapes.llama_parameters({**model_shapes.SHAPES["llama-3.2-3b"], **common}) == 3_212_749_824
    assert model_shapes.llama_parameters({**model_shapes.SHAPES["llama-3.1-8b"], **common}) == 8_030_261_248
    assert model_shapes.llama_parameters({**model_shapes.SHAPES["llama-3.2-1b"], **common}) == 1_235_814_400


def test_mfu_is_four_n_tokens_per_second_over_the_devices_peak():
    peak = model_shapes.peak_flops("NVIDIA H100 80GB HBM3")
    assert peak == 989e12 and model_shapes.peak_flops("NVIDIA H200") == 989e12
    assert model_shapes.peak_flops("NVIDIA H100 PCIe") == 756e12  # not the SXM part's figure
    assert model_shapes.peak_flops("cpu") is None and model_shapes.mfu(15_000, 3_212_749_824, None) is None
    # a measured figure: 14,932 useful tokens/s on the 3B shape is about 19% of the H100's peak
    assert model_shapes.mfu(14_932, 3_212_749_824, peak) == pytest.approx(0.194, abs=0.001)
    assert model_shapes.mfu(None, 3_212_749_824, peak) is None


def test_the_table_sets_every_configuration_beside_plain_unsloth_of_the_same_run():
    def row(name, rate, **kw):
        cfg = train_speed.parse_config(name)
        return {
            **cfg.__dict__,
            "useful_tokens_per_s": rate,
            "mfu": 0.2,
            "peak_gpu_memory_gb": 8.3,
            "train_loss": 1.5,
            **kw,
        }

    text = train_speed.table(
        [
            row("default", 16_000),
            row("unsloth-padded", 8_000),
            {"name": "x", "error": "exit 1: oom"},
            row("default", 20_000, flash_impl="FA4 active"),
        ]
    )
    lines = text.splitlines()
    assert "| default (unsloth) | 16 | padding-free | 16,000 | 2.00 | 20.0% | 8.3 GB | 1.5 |" in lines
    assert "| unsloth-padded (unsloth) | 8 | padded | 8,000 | 1.00 |" in lines[3]
    assert "failed: exit 1: oom" in lines[4]
    assert "| default (unsloth) | 16 | padding-free; FA4 active | 20,000 | 2.50 |" in lines[5]


def _counted(batch):
    counter = trainer_hooks.CountingCollator(lambda features: batch)
    counter([{}])
    return counter.tokens, counter.trained_tokens


def test_useful_tokens_are_counted_without_padding_in_every_batching():
    ids = torch.tensor([[5, 6, 7, 0, 0], [8, 9, 10, 11, 12]])
    padded = {
        "input_ids": ids,
        "attention_mask": torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]),
        "labels": torch.tensor([[-100, 6, 7, -100, -100], [-100, -100, -100, 11, 12]]),
    }
    assert _counted(padded) == (8, 4)
    # padding-free: the same two rows as one flat row, no padding at all, positions restarting per row
    flat = {
        "input_ids": torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12]]),
        "position_ids": torch.tensor([[0, 1, 2, 0, 1, 2, 3, 4]]),
        "labels": torch.tensor([[-100, 6, 7, -100, -100, -100, 11, 12]]),
    }
    assert _counted(flat) == (8, 4)
    # packed rows (bfd): several examples per row, padded to the longest row
    packed = {
        "input_ids": torch.tensor([[5, 6, 7, 8, 9], [10, 11, 12, 0, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]),
        "position_ids": torch.tensor([[0, 1, 2, 0, 1], [0, 1, 2, 0, 0]]),
        "labels": torch.tensor([[-100, 6, 7, -100, 9], [-100, 11, 12, -100, -100]]),
    }
    assert _counted(packed) == (8, 5)


def _segment_reference(query, key, value, cu):
    """Causal attention per sequence of a varlen batch, by SDPA with grouped heads."""
    sdpa = torch.nn.functional.scaled_dot_product_attention
    outs = []
    for start, end in zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True):
        q, k, v = (t[start:end].transpose(0, 1) for t in (query, key, value))
        outs.append(sdpa(q, k, v, is_causal=True, enable_gqa=True).transpose(0, 1))
    return torch.cat(outs)


def test_varlen_attention_with_grouped_heads_is_the_grouped_attention():
    calls = []

    def varlen_without_gqa(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, window_size=(-1, -1), scale=None):
        """torch 2.11's signature: no enable_gqa, heads must match."""
        calls.append((key.shape[-2], window_size, scale))
        assert key.shape[-2] == query.shape[-2]
        out = []
        for start, end in zip(cu_seq_q[:-1].tolist(), cu_seq_q[1:].tolist(), strict=True):
            q, k, v = (t[start:end].transpose(0, 1) for t in (query, key, value))
            out.append(torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(0, 1))
        return torch.cat(out)

    shimmed = patches.varlen_with_gqa(varlen_without_gqa)
    torch.manual_seed(0)
    cu = torch.tensor([0, 5, 12, 13], dtype=torch.int32)
    query, key, value = torch.randn(13, 6, 16), torch.randn(13, 2, 16), torch.randn(13, 2, 16)
    got = shimmed(query, key, value, cu, cu, 7, 7, window_size=(-1, 0), enable_gqa=True, scale=0.25)
    assert calls == [(6, (-1, 0), 0.25)]  # keys repeated to the query's 6 heads, other arguments passed on
    assert torch.allclose(got, _segment_reference(query, key, value, cu), atol=1e-5)
    with pytest.raises(AssertionError):  # without the flag nothing is repeated, as torch would refuse
        shimmed(query, key, value, cu, cu, 7, 7)
    import inspect

    assert {"window_size", "enable_gqa"} <= set(inspect.signature(shimmed).parameters)  # what unsloth looks for


def test_the_varlen_shim_is_left_out_where_it_cannot_or_need_not_apply(monkeypatch):
    import torch.nn.attention.varlen as varlen

    before = varlen.varlen_attn
    assert patches.patch_varlen_gqa() == "not needed: no CUDA"  # this CPU machine
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.cuda, "is_flash_attention_available", lambda: False)
    # the CPU's torch may already take enable_gqa (2.12+); with the flag gone and no flash kernel: not installed
    monkeypatch.setattr(
        varlen, "varlen_attn", lambda query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, window_size=None: None
    )
    assert patches.patch_varlen_gqa().startswith("not available")
    monkeypatch.setattr(torch.backends.cuda, "is_flash_attention_available", lambda: True)
    assert patches.patch_varlen_gqa() == "installed" and varlen.varlen_attn.takes_gqa
    assert patches.patch_varlen_gqa().startswith("not needed")  # once only
    monkeypatch.setattr(varlen, "varlen_attn", before)


def test_a_gpu_row_records_which_attention_path_unsloth_took(monkeypatch, tmp_path):
    """The GPU branch of `measure` (stand-ins for unsloth and the training): a row with its attention paths."""
    import argparse
    import json
    import types

    dispatch = types.ModuleType("unsloth.utils.attention_dispatch")
    dispatch._TORCH_VARLEN_ATTN = object()
    for name, module in (
        ("unsloth", types.ModuleType("unsloth")),
        ("unsloth.utils", types.ModuleType("unsloth.utils")),
        ("unsloth.utils.attention_dispatch", dispatch),
    ):
        monkeypatch.setitem(sys.modules, name, module)
    trained = {"device": "NVIDIA H100 80GB HBM3", "useful_tokens_per_s": 1000.0, "train_loss": 1.5}
    monkeypatch.setattr(train_speed.sft, "train", lambda *args, **kwargs: trained)
    monkeypatch.setattr(train_speed, "prompt_mix", lambda *args, **kwargs: [])
    monkeypatch.setattr(train_speed, "_flash_impl", lambda: "FA3")
    folder = tmp_path / "net"
    folder.mkdir()
    shape = {"hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 100, "num_attention_heads": 4}
    (folder / "config.json").write_text(json.dumps(shape | {"intermediate_size": 128}))
    flags = {"steps": 2, "windows": "1:1", "fields": "ohlcv", "max_seq_length": 64, "load_in_4bit": 1, "shape": None}
    args = argparse.Namespace(prices=str(tmp_path), work=str(tmp_path), **flags)
    row = train_speed.measure(train_speed.PRESETS["default-compile"], str(folder), args, 1)
    assert row["flash_impl"] == "FA3" and row["unsloth_varlen"] is True and "varlen_gqa" in row
    assert row["compile"] is True and row["useful_tokens_per_s"] == 1000.0 and row["mfu"] is not None
