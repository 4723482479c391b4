"""The command line through `main([...])`: every spec argument exists, the commands and the spec's form run the
same steps, every command's help fits a screen, and bad input gets a clear message."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest

import main as cli
import model
from config import cli as parsing
from conftest import argv
from market.exchanges import ExchangeClient, Throttle
from stock_predictor import DataConfig, Settings, StockPredictor
from utils import StockToolError

SPEC_FLAGS = """--train --data-dir --company-list-file --year --month --choose-stock --model-name --max-seq-length
--load_in_4bit --load_in_8bit --model-dir --rank --lora-alpha --lora-dropout --random-state --batch-size
--gradient-accumulation-steps --num-epochs --max-steps --learning-rate --logging-steps --optim --weight-decay
--lr-scheduler-type --output-dir --report-to""".split()


def test_every_spec_argument_exists():
    known = {option for action in parsing.spec_parser()._actions for option in action.option_strings}
    assert not [flag for flag in SPEC_FLAGS if flag not in known]
    train = {option for action in parsing.command_parser("train")._actions for option in action.option_strings}
    assert not [flag for flag in SPEC_FLAGS if flag not in train and flag != "--train"]


SPEC_VALUES = (
    "--rank 8 --lora-alpha 32 --lora-dropout 0.05 --random-state 7 --batch-size 3 "
    "--gradient-accumulation-steps 5 --num-epochs 2 --max-steps 9 --learning-rate 1e-4 --logging-steps 2 "
    "--optim adamw_torch --weight-decay 0.1 --lr-scheduler-type cosine --output-dir o --report-to none "
    "--max-seq-length 333 --model-dir m --year 2025 --month 3 --data-dir d"
).split()


@pytest.mark.parametrize("form", [["--train", "1"], ["train"]])
def test_spec_arguments_reach_the_configs(form):
    s = parsing.parse([*form, *SPEC_VALUES]).settings(cuda=False)
    lora, train = s.lora, s.train
    assert (lora.rank, lora.lora_alpha, lora.lora_dropout, lora.random_state) == (8, 32, 0.05, 7)
    assert (train.per_device_train_batch_size, train.gradient_accumulation_steps) == (3, 5)
    assert (train.num_train_epochs, train.max_steps) == (2, 9)
    assert (train.learning_rate, train.logging_steps, train.optim, train.weight_decay) == (1e-4, 2, "adamw_torch", 0.1)
    assert (train.lr_scheduler_type, train.output_dir, train.report_to) == ("cosine", "o", ())
    assert (s.model.max_seq_length, s.model.model_dir, s.model.load_in_4bit) == (333, "m", False)
    assert (s.data.year, s.data.month, s.data.data_dir, s.data.output_dir) == (2025, 3, "d", "o")


def test_gpu_defaults_follow_the_spec():
    s = parsing.parse(["--train", "1"]).settings(cuda=True)
    assert s.model.load_in_4bit and s.train.per_device_train_batch_size * s.train.gradient_accumulation_steps == 32
    assert s.train.max_steps == 60 and s.train.learning_rate == 2e-4 and s.train.warmup_steps == 5


def test_cpu_run_is_labelled_a_demonstration():
    invocation = parsing.parse(["--train", "1"])
    notes = parsing.device_notes(invocation, invocation.settings(cuda=False), cuda=False)
    assert notes and notes[0].startswith("CPU DEMONSTRATION") and "--windows 1:1" in notes[0]


@pytest.mark.parametrize(
    "spec, command",
    [
        ("--train 1", "train"),
        ("--train 0", "forecast"),
        ("--train 0 --evaluate 1", "evaluate"),
        ("--train 0 --trade 1", "trade"),
        ("--train 0 --export gguf", "export --export gguf"),
        ("--train 1 --task instruct --dataset-file README.md", "instruct --dataset-file README.md"),
        ("--train 0 --task instruct --eval-file README.md", "instruct --eval-file README.md"),
    ],
)
def test_each_command_runs_the_steps_of_the_spec_form(spec, command):
    assert parsing.parse(spec.split()).steps == parsing.parse(command.split()).steps


def test_the_spec_form_combines_its_steps_as_it_always_did():
    steps = {
        argv: parsing.parse(argv.split()).steps
        for argv in (
            "--train 1 --export merged",
            "--train 1 --export merged --evaluate 1",
            "--train 1 --evaluate 1 --trade 1",
            "--train 0 --build-events 1",
            "--train 1 --build-events 1",
            "--train 1 --task instruct --dataset-file a --export gguf",
        )
    }
    assert steps["--train 1 --export merged"] == ("train", "export")
    assert steps["--train 1 --export merged --evaluate 1"] == ("train", "export", "evaluate")
    assert steps["--train 1 --evaluate 1 --trade 1"] == ("train", "evaluate", "trade")
    assert steps["--train 0 --build-events 1"] == ("build_events",)
    assert steps["--train 1 --build-events 1"] == ("build_events", "train", "forecast_after_training")
    assert steps["--train 1 --task instruct --dataset-file a --export gguf"] == ("train_instruct", "export")


def test_every_commands_help_fits_a_screen_and_the_overview_lists_them(capsys):
    for name in parsing.COMMANDS:
        lines = parsing.command_parser(name).format_help().splitlines()
        assert len(lines) <= 60 and max(map(len, lines)) <= 110, (name, len(lines))
    with pytest.raises(SystemExit) as stop:
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert stop.value.code == 0 and all(f"  {name}" in out for name in parsing.COMMANDS)
    assert "--train {0,1}" in out and len(out.splitlines()) <= 30


def test_an_unknown_command_is_one_line(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["forcast", "--code", "2330"])
    assert stop.value.code == 2 and "unknown command 'forcast': choose train, forecast" in capsys.readouterr().err


def run(argv, capsys):
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_missing_company_list(tmp_path, capsys):
    code, _, err = run(["--train", "1", "--company-list-file", str(tmp_path / "nope.json")], capsys)
    assert code == 2 and "does not exist" in err and "Traceback" not in err


def test_malformed_company_list(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("[{name_zh: 台積電}]", encoding="utf-8")
    code, _, err = run(["--train", "1", "--company-list-file", str(bad), "--data-dir", str(tmp_path)], capsys)
    assert code == 2 and "not valid JSON" in err


def test_unknown_company_is_named_with_suggestions(tmp_path, capsys):
    companies = tmp_path / "c.json"
    companies.write_text(json.dumps([{"name_zh": "聯發"}, {"name_zh": "台積店"}], ensure_ascii=False), encoding="utf-8")
    code, _, err = run(["--train", "1", "--company-list-file", str(companies), "--data-dir", str(tmp_path)], capsys)
    assert code == 2 and "台積店" in err and "Close matches: 台積電" in err


def test_year_month_in_the_future(tmp_path, capsys):
    year = dt.date.today().year + 1
    code, _, err = run(["--train", "1", "--year", str(year), "--month", "1", "--data-dir", str(tmp_path)], capsys)
    assert code == 2 and "in the future" in err


def test_4bit_and_8bit_together(capsys):
    code, _, err = run(["--train", "1", "--load_in_4bit", "--load_in_8bit"], capsys)
    assert code == 2 and "exclusive" in err


@pytest.mark.skipif(model.cuda_available(), reason="checks the CPU refusal")
def test_quantization_on_a_cpu(capsys):
    code, _, err = run(["--train", "1", "--load_in_4bit"], capsys)
    assert code == 2 and "need a CUDA GPU" in err


def test_inference_without_adapter(tmp_path, capsys):
    code, _, err = run(["--train", "0", "--model-dir", str(tmp_path / "empty")], capsys)
    assert code == 2 and "no trained adapter" in err


def test_too_little_history(shared_data, tmp_path, capsys):
    companies = tmp_path / "c.json"
    companies.write_text('[{"code": "2330"}]')
    code, _, err = run(
        argv(
            "--train 1 --company-list-file {companies} --data-dir {shared_data}/prices --offline "
            "--end-date 2026-04-30 --windows 300:200 --output-dir {tmp_path}",
            companies=companies,
            shared_data=shared_data,
            tmp_path=tmp_path,
        ),
        capsys,
    )
    assert code == 2 and "too little history" in err


def test_no_network_and_no_cache(tmp_path):
    client = ExchangeClient(twse_url="http://127.0.0.1:9/", retries=2, throttle=Throttle(0), sleep=lambda s: None)
    companies = tmp_path / "c.json"
    companies.write_text('[{"code": "2330"}]')
    data = DataConfig(data_dir=str(tmp_path), company_list_file=str(companies), year=2025, month=1)
    predictor = StockPredictor(Settings(data=data), client=client)
    with pytest.raises(StockToolError, match=re.escape("use cached prices with --data-dir")):
        predictor.fetch_prices(predictor.companies())
    assert not list(tmp_path.rglob("*.csv"))


def test_read_only_cache_needs_offline(shared_data, tmp_path, capsys, monkeypatch):
    # as root every folder is writable, so the folder's permission check itself is replaced: read-only for it
    import utils
    from market import workspace

    prices = shared_data / "prices"
    monkeypatch.setattr(workspace, "is_writable_dir", lambda path: Path(path) != prices and utils.is_writable_dir(path))
    code, _, err = run(
        ["--train", "1", "--data-dir", str(shared_data / "prices"), "--output-dir", str(tmp_path)], capsys
    )
    assert code == 2 and "--offline" in err


def test_bands_are_calibrated_on_a_gpu_and_from_samples_on_a_cpu_unless_asked():
    evaluate = parsing.parse(["--train", "0", "--evaluate", "1"])
    gpu, cpu = evaluate.settings(cuda=True).inference, evaluate.settings(cuda=False).inference
    assert (gpu.bands, cpu.bands) == ("calibrated", "samples")
    assert "bands from samples (--bands samples)" in parsing.device_notes(evaluate, evaluate.settings(False), False)[0]
    asked = parsing.parse(["evaluate", "--bands", "calibrated"])
    assert asked.settings(cuda=False).inference.bands == "calibrated"
    assert not parsing.device_notes(asked, asked.settings(False), False)


def test_the_point_forecast_is_weighted_by_default_and_as_generated_when_asked():
    assert parsing.parse(["--train", "0"]).settings(cuda=True).inference.point == "calibrated"
    assert parsing.parse(["forecast", "--point", "model"]).settings(cuda=True).inference.point == "model"
    with pytest.raises(SystemExit) as exit_info:
        parsing.parse(["--train", "0", "--point", "median"])
    assert exit_info.value.code == 2


def test_training_then_evaluating_needs_days_after_the_training_data():
    later = parsing.parse("--train 1 --end-date 2026-02-27 --evaluate 1 --test-end 2026-04-30".split())
    parsing.check(later)  # the days after the training data: no refusal
    for argv_ in ("--end-date 2026-02-27", "--end-date 2026-02-27 --test-end 2026-02-27"):
        with pytest.raises(StockToolError, match="give a later --test-end"):
            parsing.check(parsing.parse(f"--train 1 --evaluate 1 {argv_}".split()))
