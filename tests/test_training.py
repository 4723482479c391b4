"""The training stage's pure steps: which rows train, the SFT arguments, where --resume continues."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from config.model_args import LoraConfig, ModelConfig
from config.training_args import TrainConfig
from llm import sft
from llm.sft_data import TrainingData
from utils import StockToolError


def test_over_long_examples_are_left_out_in_order_and_counted(caplog):
    rows = [{"id": i} for i in range(5)]
    with caplog.at_level(logging.WARNING, logger="stock.model"):
        kept = sft.fitting_examples(rows, [10, 50, 20, 51, 50], max_seq_length=50, kind="training")
    assert [r["id"] for r in kept] == [0, 1, 2, 4]  # 50 fits, 51 does not; order kept
    assert "1 of 5 training examples exceed --max-seq-length 50" in caplog.text
    caplog.clear()
    assert sft.fitting_examples(rows[:2], [1, 2], 50, "validation") == rows[:2] and not caplog.text


def _job(settings: TrainConfig, model: ModelConfig = ModelConfig(), seed: int = 1) -> sft.Job:
    return sft.Job(model, LoraConfig(random_state=seed), settings, TrainingData((), (), {}, {}))


def test_sft_arguments_follow_the_settings_and_the_device():
    settings = TrainConfig(
        per_device_train_batch_size=4, gradient_accumulation_steps=2, max_steps=0, report_to="tensorboard, none"
    )
    cpu = sft.sft_arguments(
        _job(settings, ModelConfig(max_seq_length=768), 3407), sft.Setup(False, 1, "adamw_torch", False), False, True
    )
    assert cpu["per_device_train_batch_size"] == 4 and cpu["gradient_accumulation_steps"] == 2
    assert cpu["max_steps"] == -1  # 0: train --num-epochs
    assert cpu["max_length"] == 768 and cpu["seed"] == 3407 and cpu["report_to"] == ["tensorboard"]
    assert cpu["use_cpu"] and not cpu["bf16"] and not cpu["fp16"] and cpu["dataset_num_proc"] is None
    assert cpu["completion_only_loss"] and cpu["eval_strategy"] == "no"  # eval_steps 0: once, at the end
    assert cpu["ddp_find_unused_parameters"] is None
    gpu = sft.sft_arguments(
        _job(dataclasses.replace(settings, max_steps=60, eval_steps=10, report_to=())),
        sft.Setup(True, 2, "adamw_8bit", True),
        False,
        True,
    )
    assert gpu["max_steps"] == 60 and gpu["fp16"] and not gpu["bf16"] and not gpu["use_cpu"]
    assert gpu["eval_strategy"] == "steps" and gpu["eval_steps"] == 10 and gpu["report_to"] == "none"
    assert gpu["padding_free"] and gpu["optim"] == "adamw_8bit" and gpu["ddp_find_unused_parameters"] is False
    no_val = sft.sft_arguments(_job(dataclasses.replace(settings, eval_steps=10)), sft.Setup(True, 1, "x", 1), True, 0)
    assert no_val["eval_strategy"] == "no" and no_val["bf16"] and not no_val["fp16"]
    assert not no_val["torch_compile"]
    compiled = dataclasses.replace(settings, torch_compile=True)
    assert sft.sft_arguments(_job(compiled), sft.Setup(True, 1, "x", 1), True, 0)["torch_compile"]


def test_the_trainer_settings_copied_by_name_are_sft_configs_own():
    from dataclasses import fields

    from trl import SFTConfig

    sft_fields = {f.name for f in fields(SFTConfig)}
    assert set(sft.COPIED) <= sft_fields
    own = {f.name for f in fields(TrainConfig)} - {
        "resume",
        "optim",
        "padding_free",
        "report_to",
        "max_steps",
        "eval_steps",
    }  # settled per run
    assert own <= set(sft.COPIED) | {"run_name"} and own <= sft_fields


def test_resume_continues_from_the_last_checkpoint_or_says_there_is_none(tmp_path, capsys):
    settings = TrainConfig(output_dir=str(tmp_path), resume=True)
    assert sft.resume_point(dataclasses.replace(settings, resume=False), 1, False) is None
    assert sft.resume_point(settings, 1, False) is None
    assert "there is no checkpoint" in capsys.readouterr().out
    for step in (50, 100, 200):  # numeric order, not text order
        (tmp_path / f"checkpoint-{step}").mkdir()
    assert sft.resume_point(settings, 1, False) == str(tmp_path / "checkpoint-200")
    assert sft.resume_point(settings, 2, True) == str(tmp_path / "checkpoint-200")
    with pytest.raises(StockToolError, match="several processes needs CUDA"):
        sft.resume_point(settings, 2, False)
