"""training.train's pure steps (issue 12): which rows train, the SFT arguments, where --resume continues."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from config.model_args import ModelConfig
from config.training_args import TrainSettings
from llm import sft
from utils import StockToolError


def test_over_long_examples_are_left_out_in_order_and_counted(caplog):
    rows = [{"id": i} for i in range(5)]
    with caplog.at_level(logging.WARNING, logger="stock.model"):
        kept = sft.fitting_examples(rows, [10, 50, 20, 51, 50], max_seq_length=50, kind="training")
    assert [r["id"] for r in kept] == [0, 1, 2, 4]  # 50 fits, 51 does not; order kept
    assert "1 of 5 training examples exceed --max-seq-length 50" in caplog.text
    caplog.clear()
    assert sft.fitting_examples(rows[:2], [1, 2], 50, "validation") == rows[:2] and not caplog.text


def test_sft_arguments_follow_the_settings_and_the_device():
    settings = TrainSettings(batch_size=4, gradient_accumulation_steps=2, max_steps=0, report_to="tensorboard, none")
    cpu = sft.sft_arguments(
        ModelConfig(max_seq_length=768), settings, 3407, False, False, "adamw_torch", False, True, 1
    )
    assert cpu["per_device_train_batch_size"] == 4 and cpu["gradient_accumulation_steps"] == 2
    assert cpu["max_steps"] == -1  # 0: train --num-epochs
    assert cpu["max_length"] == 768 and cpu["seed"] == 3407 and cpu["report_to"] == ["tensorboard"]
    assert cpu["use_cpu"] and not cpu["bf16"] and not cpu["fp16"] and cpu["dataset_num_proc"] is None
    assert cpu["completion_only_loss"] and cpu["eval_strategy"] == "no"  # eval_steps 0: once, at the end
    assert cpu["ddp_find_unused_parameters"] is None
    gpu = sft.sft_arguments(
        ModelConfig(),
        dataclasses.replace(settings, max_steps=60, eval_steps=10, report_to="none"),
        1,
        True,
        False,
        "adamw_8bit",
        True,
        True,
        2,
    )
    assert gpu["max_steps"] == 60 and gpu["fp16"] and not gpu["bf16"] and not gpu["use_cpu"]
    assert gpu["eval_strategy"] == "steps" and gpu["eval_steps"] == 10 and gpu["report_to"] == "none"
    assert gpu["padding_free"] and gpu["optim"] == "adamw_8bit" and gpu["ddp_find_unused_parameters"] is False
    no_val = sft.sft_arguments(ModelConfig(), dataclasses.replace(settings, eval_steps=10), 1, True, True, "x", 1, 0, 1)
    assert no_val["eval_strategy"] == "no" and no_val["bf16"] and not no_val["fp16"]
    assert not no_val["torch_compile"]
    compiled = dataclasses.replace(settings, torch_compile=True)
    assert sft.sft_arguments(ModelConfig(), compiled, 1, True, True, "x", 1, 0, 1)["torch_compile"]


def test_resume_continues_from_the_last_checkpoint_or_says_there_is_none(tmp_path, capsys):
    settings = TrainSettings(output_dir=str(tmp_path), resume=True)
    assert sft.resume_point(dataclasses.replace(settings, resume=False), 1, False) is None
    assert sft.resume_point(settings, 1, False) is None
    assert "there is no checkpoint" in capsys.readouterr().out
    for step in (50, 100, 200):  # numeric order, not text order
        (tmp_path / f"checkpoint-{step}").mkdir()
    assert sft.resume_point(settings, 1, False) == str(tmp_path / "checkpoint-200")
    assert sft.resume_point(settings, 2, True) == str(tmp_path / "checkpoint-200")
    with pytest.raises(StockToolError, match="several processes needs CUDA"):
        sft.resume_point(settings, 2, False)
