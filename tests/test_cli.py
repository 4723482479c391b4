"""The command line through `main([...])`: every spec argument exists, and bad input gets a clear message."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest

import main as cli
import model
from market.exchanges import ExchangeClient, Throttle
from stock_predictor import DataConfig, StockPredictor
from utils import StockToolError

SPEC_FLAGS = """--train --data-dir --company-list-file --year --month --choose-stock --model-name --max-seq-length
--load_in_4bit --load_in_8bit --model-dir --rank --lora-alpha --lora-dropout --random-state --batch-size
--gradient-accumulation-steps --num-epochs --max-steps --learning-rate --logging-steps --optim --weight-decay
--lr-scheduler-type --output-dir --report-to""".split()


def test_every_spec_argument_exists():
    parser = cli.build_parser()
    known = {option for action in parser._actions for option in action.option_strings}
    assert not [flag for flag in SPEC_FLAGS if flag not in known]


def test_spec_arguments_reach_the_configs():
    args = cli.build_parser().parse_args(
        "--train 1 --rank 8 --lora-alpha 32 --lora-dropout 0.05 --random-state 7 --batch-size 3 "
        "--gradient-accumulation-steps 5 --num-epochs 2 --max-steps 9 --learning-rate 1e-4 --logging-steps 2 "
        "--optim adamw_torch --weight-decay 0.1 --lr-scheduler-type cosine --output-dir o --report-to none "
        "--max-seq-length 333 --model-dir m --year 2025 --month 3 --data-dir d".split()
    )
    data, model_cfg, lora, train, _, _, _ = cli.build_configs(args, cuda=False)
    assert (lora.rank, lora.lora_alpha, lora.lora_dropout, lora.random_state) == (8, 32, 0.05, 7)
    assert (train.batch_size, train.gradient_accumulation_steps, train.num_epochs, train.max_steps) == (3, 5, 2, 9)
    assert (train.learning_rate, train.logging_steps, train.optim, train.weight_decay) == (1e-4, 2, "adamw_torch", 0.1)
    assert (train.lr_scheduler_type, train.output_dir, train.report_to) == ("cosine", "o", "none")
    assert (model_cfg.max_seq_length, model_cfg.model_dir, model_cfg.load_in_4bit) == (333, "m", False)
    assert (data.year, data.month, data.data_dir) == (2025, 3, "d")


def test_gpu_defaults_follow_the_spec():
    args = cli.build_parser().parse_args(["--train", "1"])
    _, model_cfg, _, train, _, _, _ = cli.build_configs(args, cuda=True)
    assert model_cfg.load_in_4bit and train.batch_size * train.gradient_accumulation_steps == 32
    assert train.max_steps == 60 and train.learning_rate == 2e-4 and train.warmup_steps == 5


def test_cpu_run_is_labelled_a_demonstration(capsys):
    args = cli.build_parser().parse_args(["--train", "1"])
    cli.build_configs(args, cuda=False)
    assert "CPU DEMONSTRATION" in capsys.readouterr().out


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
        ["--train", "1", "--company-list-file", str(companies), "--data-dir", str(shared_data / "prices"),
         "--offline", "--end-date", "2026-04-30", "--windows", "300:200", "--output-dir", str(tmp_path)],
        capsys,
    )  # fmt: skip
    assert code == 2 and "too little history" in err


def test_no_network_and_no_cache(tmp_path):
    client = ExchangeClient(twse_url="http://127.0.0.1:9/", retries=2, throttle=Throttle(0), sleep=lambda s: None)
    companies = tmp_path / "c.json"
    companies.write_text('[{"code": "2330"}]')
    predictor = StockPredictor(
        DataConfig(data_dir=str(tmp_path), company_list_file=str(companies), year=2025, month=1), client=client
    )
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


def test_bands_are_calibrated_on_a_gpu_and_from_samples_on_a_cpu_unless_asked(capsys):
    parse = cli.build_parser().parse_args
    gpu = cli.build_configs(parse(["--train", "0", "--evaluate", "1"]), cuda=True)[4]
    cpu = cli.build_configs(parse(["--train", "0", "--evaluate", "1"]), cuda=False)[4]
    assert (gpu.decoding.bands, cpu.decoding.bands) == ("calibrated", "samples")
    assert "bands from samples (--bands samples)" in capsys.readouterr().out
    asked = cli.build_configs(parse(["--train", "0", "--evaluate", "1", "--bands", "calibrated"]), cuda=False)[4]
    assert asked.decoding.bands == "calibrated" and "bands from samples" not in capsys.readouterr().out


def test_the_point_forecast_is_weighted_by_default_and_as_generated_when_asked():
    parse = cli.build_parser().parse_args
    assert cli.build_configs(parse(["--train", "0"]), cuda=True)[4].decoding.point == "calibrated"
    assert cli.build_configs(parse(["--train", "0", "--point", "model"]), cuda=True)[4].decoding.point == "model"
    with pytest.raises(SystemExit) as exit_info:
        parse(["--train", "0", "--point", "median"])
    assert exit_info.value.code == 2
