"""An adapter's stock_config.json, typed and read in one place."""

from __future__ import annotations

import json

import pytest

from config import manifest
from config.context_args import ContextConfig
from config.data_args import DataConfig, ExamplesConfig
from config.model_args import ModelConfig
from utils import StockToolError


def _adapter(tmp_path, saved: dict):
    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / manifest.STOCK_CONFIG).write_text(json.dumps(saved))
    return str(tmp_path)


def test_a_manifest_reads_back_what_was_written(tmp_path):
    written = manifest.Manifest(
        base_model="m",
        model=ModelConfig(max_seq_length=768),
        data=DataConfig(year=2025),
        examples=ExamplesConfig(windows="1:1"),
        context=ContextConfig(news=False),
        dataset=manifest.DatasetRecord(cutoff="2026-01-05", last_date="2026-02-27", windows=["1:1"], fields=["close"]),
        companies=[{"code": "2330"}],
        other={"benchmark": "x"},
    )
    written.write(tmp_path)
    (tmp_path / "adapter_config.json").write_text("{}")
    read = manifest.read(str(tmp_path))
    assert read == written
    assert (read.windows, read.fields, read.cutoff, read.last_seen) == ("1:1", ["close"], "2026-01-05", "2026-02-27")
    assert json.loads((tmp_path / manifest.STOCK_CONFIG).read_text())["benchmark"] == "x"


def test_an_old_adapters_missing_keys_take_that_versions_behaviour(tmp_path):
    read = manifest.read(_adapter(tmp_path, {"base_model": "m", "data": {"end_date": "2025-12-31", "year": 2025}}))
    assert read.answer_format == "absolute" and read.examples.answer_format == "absolute"
    assert not read.context.signals and not read.context.news and read.data.year == 2025
    assert read.last_seen == "2025-12-31" and read.windows is None and read.model is None


def test_a_folder_that_is_not_an_adapter_is_one_clear_error(tmp_path):
    with pytest.raises(StockToolError, match="no trained adapter"):
        manifest.read(str(tmp_path))
    with pytest.raises(StockToolError, match="names no base_model"):
        manifest.read(_adapter(tmp_path, {"model": {}}))
    with pytest.raises(StockToolError, match="not a manifest"):
        manifest.read(_adapter(tmp_path, {"base_model": "m", "dataset": ["not", "a", "record"]}))
