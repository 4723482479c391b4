"""The command line generated from the config dataclasses (issue 12): one default per setting, shared flags."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields

import pytest

import main as cli
from config import defaults
from config import flags as flags_
from config.data_args import DataConfig
from config.evaluation_args import EvalConfig
from config.flags import AT_LEAST_1, option, shared
from config.inference_args import DecodingConfig
from config.instruct_args import InstructConfig
from config.model_args import LoraSettings
from config.training_args import TrainSettings
from utils import StockToolError


@dataclass(frozen=True)
class Toy:
    steps: int = option(60, "optimizer steps", group="g", cpu=16, check=AT_LEAST_1)
    mode: bool = option(True, "how", group="g", flag="--how", choices={"fast": True, "slow": False})
    seed: int = option(7, "seed", group="g")
    copy_of_seed: int = shared(7, "seed")
    hidden: int = 3  # no metadata: not a flag


def _toy_parser():
    parser = argparse.ArgumentParser()
    flags_.add_arguments(parser, {}, [Toy])
    return parser


def test_a_field_with_help_is_a_flag_and_its_cpu_default_applies_only_when_unset():
    parser = _toy_parser()
    flags = {o for a in parser._actions for o in a.option_strings}
    assert {"--steps", "--how", "--seed"} <= flags and "--hidden" not in flags and "--copy-of-seed" not in flags
    unset = parser.parse_args([])
    assert flags_.build(Toy, unset, cuda=True).steps == 60 and flags_.build(Toy, unset, cuda=False).steps == 16
    assert flags_.build(Toy, parser.parse_args(["--steps", "5"]), cuda=False).steps == 5
    assert flags_.unset_device_fields(Toy, unset) == ["steps"]


def test_a_choice_text_maps_to_the_fields_value_and_a_shared_field_follows_its_flag():
    built = flags_.build(Toy, _toy_parser().parse_args(["--how", "slow", "--seed", "9"]), cuda=True)
    assert (built.mode, built.seed, built.copy_of_seed, built.hidden) == (False, 9, 9, 3)
    assert _toy_parser().parse_args([]).how == "fast"


def test_range_checks_name_the_flag():
    with pytest.raises(StockToolError, match="--steps 0: must be at least 1"):
        flags_.check([Toy], _toy_parser().parse_args(["--steps", "0"]))


def test_the_seed_flag_reaches_every_config_that_uses_a_seed():
    args = cli.build_parser().parse_args(["--train", "0", "--random-state", "11", "--eval-batch-size", "5"])
    _, _, lora, _, evaluation, _, instruct = cli.build_configs(args, cuda=True)
    assert (lora.random_state, evaluation.seed, evaluation.decoding.seed) == (11, 11, 11)
    assert (evaluation.batch_size, instruct.batch_size) == (5, 5)
    _, _, _, _, evaluation, _, instruct = cli.build_configs(cli.build_parser().parse_args(["--train", "0"]), cuda=True)
    assert (evaluation.batch_size, instruct.batch_size) == (1024, 64)  # each field's own GPU default


def test_every_settings_field_is_a_flag_or_set_by_one_except_the_internal_ones():
    internal = {("TrainSettings", "run_name"), ("TrainSettings", "torch_compile"), ("EvalConfig", "decoding")}
    for cls in (DataConfig, LoraSettings, TrainSettings, EvalConfig, InstructConfig, DecodingConfig):
        for f in fields(cls):
            if (cls.__name__, f.name) not in internal:
                assert f.metadata.get("help") or f.metadata.get("same_as"), f"{cls.__name__}.{f.name}"


def test_the_help_shows_the_gpu_and_the_cpu_default(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "per-device batch size (default: GPU 16, CPU demo 4)" in text
    assert "(default: GPU calibrated, CPU demo samples)" in text


def test_the_device_defaults_are_printed_on_a_gpu_too_leaving_out_what_the_user_set(capsys):
    parse = cli.build_parser().parse_args
    cli.build_configs(parse(["--train", "1", "--batch-size", "4"]), cuda=True)
    out = capsys.readouterr().out
    assert out.startswith("CUDA GPU: the GPU defaults apply: ") and "max_steps=60" in out
    assert "batch_size=" not in out  # the user gave it, so it is no default
    cli.build_configs(parse(["--train", "0", "--evaluate", "1"]), cuda=True)
    assert "CUDA GPU: bands calibrated" in capsys.readouterr().out


def test_the_optimizer_and_scheduler_choices_are_transformers_own():
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    assert list(defaults.OPTIMIZERS) == [o.value for o in OptimizerNames]
    assert list(defaults.SCHEDULERS) == [s.value for s in SchedulerType]


def _numeric_flags():
    for cls in (cli.RunConfig, *cli.CONFIGS):
        for f, kind in flags_.flag_fields(cls):
            if kind in (int, float) and not f.metadata["choices"]:
                yield flags_.flag_name(f), kind


@pytest.mark.parametrize(("flag", "kind"), list(_numeric_flags()), ids=lambda v: v if isinstance(v, str) else "")
def test_every_number_flag_refuses_what_overflows_or_is_no_number(flag, kind):
    texts = ["99999999999999999999", "-99999999999999999999"] if kind is int else ["inf", "-inf", "nan", "1e308"]
    for text in texts:
        args = cli.build_parser().parse_args(["--train", "1", f"{flag}={text}"])
        with pytest.raises(StockToolError, match=f"^{flag} "):
            flags_.check((cli.RunConfig, *cli.CONFIGS), args)


def test_every_default_passes_its_own_check():
    """check() leaves a flag at its default unchecked (--calendar's check imports a library): defaults must pass."""
    for cls in (cli.RunConfig, *cli.CONFIGS):
        for f, _ in flags_.flag_fields(cls):
            rule = f.metadata["check"]
            values = [f.default] + ([] if f.metadata["cpu"] is flags_.NO_CPU else [f.metadata["cpu"]])
            for value in values:
                if isinstance(rule, tuple) and value is not None:
                    assert rule[1](value), f"{flags_.flag_name(f)} {value}"
