"""The command line generated from the config dataclasses: one default per setting, shared flags, every value
checked where its config is built."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields

import pytest

from config import cli, defaults
from config import flags as flags_
from config.data_args import ExamplesConfig
from config.flags import AT_LEAST_1, option, shared
from utils import StockToolError


@dataclass(frozen=True)
class Toy:
    steps: int = option(60, "optimizer steps", group="g", cpu=16, check=AT_LEAST_1)
    mode: bool = option(True, "how", group="g", flag="--how", choices={"fast": True, "slow": False})
    seed: int = option(7, "seed", group="g")
    copy_of_seed: int = shared(7, "seed")
    hidden: int = 3  # no metadata: not a flag

    def __post_init__(self):
        flags_.settle(self)


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


def test_range_checks_name_the_flag_wherever_the_config_is_built():
    with pytest.raises(StockToolError, match="--steps 0: must be at least 1"):
        flags_.build(Toy, _toy_parser().parse_args(["--steps", "0"]), cuda=True)
    with pytest.raises(StockToolError, match="--steps 0: must be at least 1"):
        Toy(steps=0)
    with pytest.raises(StockToolError, match="--windows: window '5' is not 'past:future'"):
        ExamplesConfig(windows="5")
    assert ExamplesConfig(windows="1:1,5:5").windows[1].name == "5:5"  # text parsed once into its type


def test_the_seed_flag_reaches_every_config_that_uses_a_seed():
    for argv in (["--train", "0"], ["evaluate"]):
        settings = cli.parse([*argv, "--random-state", "11", "--eval-batch-size", "5"]).settings(cuda=True)
        assert (settings.evaluation.seed, settings.inference.seed, settings.inference.batch_size) == (11, 11, 5)
    assert cli.parse(["--train", "0", "--random-state", "11"]).settings(cuda=True).lora.random_state == 11
    assert cli.parse(["--train", "0"]).settings(cuda=True).inference.batch_size is None  # each use's own default
    assert cli.parse(["forecast"]).settings(cuda=False).inference.batch_size == 8


def test_every_settings_field_is_a_flag_or_set_by_one_except_the_internal_ones():
    internal = {("TrainConfig", "run_name"), ("TrainConfig", "torch_compile")}
    for cls in cli.GROUP_CLASSES:
        for f in fields(cls):
            if (cls.__name__, f.name) not in internal:
                assert f.metadata.get("help") or f.metadata.get("same_as"), f"{cls.__name__}.{f.name}"


def test_the_help_shows_the_gpu_and_the_cpu_default(capsys):
    with pytest.raises(SystemExit):
        cli.parse(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "per-device batch size (default: GPU 16, CPU demo 4)" in text
    assert "optimizer steps; 0: train --num-epochs (default: GPU 60, CPU demo 16)" in text


def test_the_device_defaults_are_said_on_a_gpu_too_leaving_out_what_the_user_set():
    for argv in (["--train", "1", "--batch-size", "4"], ["train", "--batch-size", "4"]):
        invocation = cli.parse(argv)
        (note,) = cli.device_notes(invocation, invocation.settings(cuda=True), cuda=True)
        assert note.startswith("CUDA GPU: the GPU defaults apply: ") and "--max-steps 60" in note
        assert "--batch-size" not in note  # the user gave it, so it is no default
    invocation = cli.parse(["--train", "0", "--evaluate", "1"])
    assert "CUDA GPU: bands calibrated" in cli.device_notes(invocation, invocation.settings(cuda=True), cuda=True)[0]


def test_the_optimizer_and_scheduler_choices_are_transformers_own():
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    assert list(defaults.OPTIMIZERS) == [o.value for o in OptimizerNames]
    assert list(defaults.SCHEDULERS) == [s.value for s in SchedulerType]


def _numeric_flags():
    for cls in cli.GROUP_CLASSES:
        for f, kind in flags_.flag_fields(cls):
            if kind in (int, float) and not f.metadata["choices"]:
                yield flags_.flag_name(f), kind


@pytest.mark.parametrize(("flag", "kind"), list(_numeric_flags()), ids=lambda v: v if isinstance(v, str) else "")
def test_every_number_flag_refuses_what_overflows_or_is_no_number(flag, kind):
    texts = ["99999999999999999999", "-99999999999999999999"] if kind is int else ["inf", "-inf", "nan", "1e308"]
    for text in texts:
        with pytest.raises(StockToolError, match=f"^{flag} "):
            cli.check(cli.parse(["--train", "1", f"{flag}={text}"]))


def test_every_default_passes_its_own_check():
    """settle() leaves a value at its default unchecked (--calendar's check imports a library): defaults must pass."""
    for cls in cli.GROUP_CLASSES:
        for f, _ in flags_.flag_fields(cls):
            rule = f.metadata["check"]
            values = [f.default] + ([] if f.metadata["cpu"] is flags_.NO_CPU else [f.metadata["cpu"]])
            for value in values:
                if isinstance(rule, tuple) and value is not None:
                    assert rule[1](value), f"{flags_.flag_name(f)} {value}"
