"""`--export merged`: the adapter merged into its base model, round-tripped through this tool and through
transformers alone, on the CPU with the real SmolLM2."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import main as cli
import model
from config import data_args, manifest, model_args
from llm import checkpoints, export, generation
from llm.generation import Sampling
from prompts import prompt_format
from utils import StockToolError

OHLCV = data_args.FIELD_SETS["ohlcv"]
FRAME = pd.DataFrame(
    {
        "Open": [100.0, 101.0, 99.5],
        "High": [102.0, 103.5, 101.0],
        "Low": [99.0, 100.5, 98.0],
        "Close": [101.0, 100.0, 100.5],
        "Volume": [1000.0, 1200.0, 900.0],
    },
    index=pd.DatetimeIndex(["2026-04-27", "2026-04-28", "2026-04-29"], name="Date"),
)

pytestmark = pytest.mark.slow  # every test exports an adapter of the real SmolLM2


@pytest.fixture(scope="module")
def adapter(tmp_path_factory) -> Path:
    """A LoRA adapter with random (not zero) B matrices, so that merging it visibly changes the model, saved
    the way training saves one (adapter files, tokenizer, stock_config.json)."""
    import torch
    from peft import LoraConfig, get_peft_model

    gguf = checkpoints.smollm2_gguf()
    base, tokenizer = model.load_base(
        model_args.ModelConfig(model_name=str(gguf)), checkpoints.resolve_model_source(str(gguf)), False
    )
    torch.manual_seed(0)
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    tuned = get_peft_model(base, lora)
    with torch.no_grad():
        for name, weights in tuned.named_parameters():
            if "lora_B" in name:
                weights.mul_(0.3)  # big enough to change answers, small enough to keep them text
    folder = tmp_path_factory.mktemp("adapter") / "model"
    tuned.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    settings = {"max_seq_length": 1024, "load_in_4bit": False, "load_in_8bit": False}
    config = {"base_model": str(gguf), "model": settings, "dataset": {"fields": OHLCV, "answer_format": "change"}}
    (folder / manifest.STOCK_CONFIG).write_text(json.dumps(config), encoding="utf-8")
    return folder


def greedy(folder: Path, adapter: bool = True) -> str:
    prompt = [{"role": "user", "content": prompt_format.user_prompt("台積電", FRAME, 1, OHLCV, "", "change")}]
    loaded = model.load_for_inference(str(folder), adapter=adapter)
    return generation.generate(loaded, [prompt], 24, Sampling(batch_size=1))[0]


def test_a_float32_merge_forecasts_exactly_as_the_adapter_and_loads_without_this_tool(adapter, tmp_path):
    from transformers import AutoModelForCausalLM

    merged = export.export_merged(str(adapter), str(tmp_path / "merged"), "float32")
    assert {"model.safetensors", "config.json", "tokenizer.json", "chat_template.jinja", "stock_config.json"} <= {
        p.name for p in merged.iterdir()
    }
    assert not list(tmp_path.glob("*.partial")) and not (merged / "adapter_config.json").exists()
    tuned = greedy(adapter)
    assert greedy(merged) == tuned  # exact: the same weights, summed in another order
    assert greedy(adapter, adapter=False) != tuned  # the adapter matters, so the equality above can fail
    plain = AutoModelForCausalLM.from_pretrained(merged)  # transformers alone
    assert plain.dtype.is_floating_point and not hasattr(plain, "peft_config")
    assert json.loads((merged / "stock_config.json").read_text())["export"]["kind"] == "merged"


def test_a_bfloat16_merge_is_half_the_size_and_still_a_forecaster(adapter, tmp_path):
    merged = export.export_merged(str(adapter), str(tmp_path / "merged16"), "bfloat16")
    full = export.export_merged(str(adapter), str(tmp_path / "merged32"), "float32")
    ratio = (merged / "model.safetensors").stat().st_size / (full / "model.safetensors").stat().st_size
    assert 0.45 < ratio < 0.55
    assert greedy(merged)  # loads and generates through the tool (16-bit rounding may change the words)


def test_export_refuses_bad_targets_and_inputs_in_one_line(adapter, tmp_path, capsys):
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine", encoding="utf-8")
    args = ["--train", "0", "--export", "merged", "--model-dir", str(adapter), "--output-dir", str(tmp_path / "out")]
    assert cli.main([*args, "--export-dir", str(full)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert (full / "keep.txt").read_text(encoding="utf-8") == "mine"
    assert cli.main([*args[:-4], "--model-dir", str(tmp_path / "none"), "--output-dir", str(tmp_path / "out")]) == 2
    assert "no trained adapter" in capsys.readouterr().err
    for unknown in (["--export", "onnx"], ["--export", "gguf", "--gguf-type", "q4_k_m"]):
        with pytest.raises(SystemExit) as stop:  # argparse: one usage line and exit 2
            cli.main([*args, *unknown])
        assert stop.value.code == 2
    with pytest.raises(StockToolError, match="--export-dtype 'int3'"):
        export.export_merged(str(adapter), str(tmp_path / "x"), "int3")
    merged = export.export_merged(str(adapter), str(tmp_path / "m"), "float32")
    with pytest.raises(StockToolError, match="already a merged export"):
        export.export_merged(str(merged), str(tmp_path / "again"), "float32")
    assert not (tmp_path / "x").exists() and not (tmp_path / "again").exists()


def test_a_failed_write_leaves_no_export_and_says_so(adapter, tmp_path, monkeypatch):
    def full_disk(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export.Path, "write_text", full_disk)  # the Modelfile, after the GGUF itself
    with pytest.raises(StockToolError, match="could not write the export to .*No space left"):
        export.export_gguf(str(adapter), str(tmp_path / "gguf"), "q8_0")
    assert list(tmp_path.iterdir()) == []


def test_a_gguf_export_reads_back_as_the_same_model_with_an_ollama_modelfile(adapter, tmp_path):
    """f16 GGUF → transformers' GGUF reader → the adapter's greedy answer (the reader undoes llama.cpp's q/k
    layout; a wrong rope base or permutation changes the answer)."""
    folder = export.export_gguf(str(adapter), str(tmp_path / "gguf"), "f16")
    assert sorted(p.name for p in folder.iterdir()) == ["Modelfile", "model-f16.gguf", "stock_config.json"]
    assert greedy(folder) == greedy(adapter)
    text = (folder / "Modelfile").read_text(encoding="utf-8")
    assert text.startswith("FROM ./model-f16.gguf\n") and 'PARAMETER stop "<|im_end|>"' in text
    assert "<|im_start|>assistant" in text and "PARAMETER temperature 0" in text
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM' in text  # what the tool's prompts begin with
    small = export.export_gguf(str(adapter), str(tmp_path / "q8"), "q8_0")
    ratio = (small / "model-q8_0.gguf").stat().st_size / (folder / "model-f16.gguf").stat().st_size
    assert 0.45 < ratio < 0.6 and greedy(small)  # 8.5 bits a weight; reads back and generates
    with pytest.raises(StockToolError, match="--gguf-type 'q4_k_m'"):
        export.export_gguf(str(adapter), str(tmp_path / "k"), "q4_k_m")
    assert not (tmp_path / "k").exists()
