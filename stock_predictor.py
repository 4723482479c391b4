"""The spec's facade: `StockPredictor` runs the pipeline as a straight line, one stage module each:

    Workspace (market/workspace.py: companies, price cache, exchange client, news)
    → llm/sft_data.prepare (windowed chat examples, chronological split)
    → llm/sft.train (4-bit LoRA through SFTTrainer; the adapter and its manifest)
    → forecasting/latest.forecast (generate, read, band, print, chart, files, the page)
    → evaluation/walk_forward.evaluate, trading/orders.run, instruct/stages (evaluation, orders, instructions)

It holds the read-only `Settings` built once by the command line and passes each stage the `Workspace` and the
settings groups that stage needs, never itself; no stage module imports this one. The price cache lets a rerun
skip months already fetched and the adapter lets inference and evaluation run without retraining.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path

import pandas as pd

from config.context_args import ContextConfig
from config.data_args import DataConfig, ExamplesConfig
from config.inference_args import ForecastConfig
from config.model_args import LoraConfig, ModelConfig
from config.settings import Settings
from config.training_args import TrainConfig
from forecasting.forecast_files import print_forecast  # noqa: F401  (print_forecast: the spec's facade re-exports it)
from forecasting.reading import Forecast
from market.company_list import Company
from market.exchanges import ExchangeClient
from market.workspace import Workspace

__all__ = [
    "StockPredictor",
    "Settings",
    "DataConfig",
    "ExamplesConfig",
    "ContextConfig",
    "ModelConfig",
    "LoraConfig",
    "TrainConfig",
    "ForecastConfig",
    "Forecast",
    "print_forecast",
]


class StockPredictor:
    """`StockPredictor(settings).inference(code="2330", past=5, future=5, context="")`, as the spec has it; the
    settings at their defaults when none are given. `client`: an exchange client (tests: a local server);
    `newsapi_key`: newsapi.org's key, kept out of the settings (they are saved beside the adapter)."""

    def __init__(self, settings: Settings | None = None, client: ExchangeClient | None = None, newsapi_key=None):
        self.settings = settings or Settings()
        s = self.settings
        make_client = ExchangeClient
        if s.data.price_source == "server":  # the trading server's own price history (--price-source server)
            import stock_api

            make_client = stock_api.ServerPriceSource
        self.workspace = Workspace(s.data, s.examples, s.context, client, newsapi_key, s.lora.random_state, make_client)
        self._loaded = None

    # ----------------------------------------------------------------- the workspace's, under the spec's names

    @property
    def data(self) -> DataConfig:
        return self.workspace.data

    @property
    def fields(self) -> tuple[str, ...]:
        return self.workspace.fields

    def companies(self) -> list[Company]:
        return self.workspace.companies()

    def fetch_prices(self, companies: list[Company]) -> dict[str, pd.DataFrame]:
        return self.workspace.fetch_prices(companies)

    # ----------------------------------------------------------------- examples, training

    def build_dataset(self, companies: list[Company], prices: dict[str, pd.DataFrame]) -> tuple[list, list, dict]:
        from llm import sft_data

        return sft_data.build(self.workspace, companies, prices)

    def train(self) -> dict:
        import model
        from llm import distributed, sft, sft_data

        s = self.settings
        model.check_quantization(s.model, model.cuda_available())
        # with several processes (torchrun), rank 0 alone talks to the exchanges and writes the examples
        data = distributed.on_main(functools.partial(sft_data.prepare, self.workspace))
        figures = sft.train(sft.Job(s.model, s.lora, s.train, data))
        print("training: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
        board = Path(s.data.output_dir) / "runs"
        print(f"adapter saved to {s.model.model_dir}; TensorBoard: tensorboard --logdir {board}")
        return figures

    # ----------------------------------------------------------------- inference

    def inference(self, code: str = "2330", past: int = 5, future: int = 5, context: str = "") -> Forecast:
        """Forecast `future` trading days of `code` from its latest `past` days, print them and chart them."""
        return self.forecast_many([code], past, future, context)[0]

    def forecast_many(
        self, codes: list[str], past: int, future: int, context: str = "", charts: bool = True
    ) -> list[Forecast]:
        """Latest-days forecasts for several stocks, generated in one batch (`forecasting.latest.forecast`); valid
        ones are charted and written to CSV and JSON beside the chart, with one page for the run."""
        import model
        from forecasting import forecast_page, latest

        s = self.settings
        if self._loaded is None:
            self._loaded = model.load_for_inference(s.model.model_dir)
        asked = replace(s.forecast, codes=tuple(codes), past=past, future=future, context=context)
        chart_dir = Path(s.data.output_dir) / "forecasts" if charts else None
        calibration = latest.band_calibration(s.model.model_dir, s.inference)
        results = latest.forecast(self.workspace, self._loaded, asked, s.inference, calibration, chart_dir)
        if chart_dir and any(r.chart for r in results):  # one page for the run: every code asked for, charts inline
            page = forecast_page.write_forecast_index(chart_dir, results, s.inference)
            results = [replace(r, page=page) for r in results]
        return results

    # ----------------------------------------------------------------- decisions and orders

    def trade(self, credentials, api=None) -> list[dict]:
        """Holdings → forecasts → buy/sell/hold → orders (only with --execute): `trading.orders.run`."""
        from trading import orders

        s = self.settings
        candidates = [c.code for c in self.companies()]
        forecast = functools.partial(self.forecast_many, past=s.forecast.past, future=s.forecast.future, charts=False)
        return orders.run(s.trade, credentials, candidates, forecast, api)

    # ----------------------------------------------------------------- stages in their own modules

    def evaluate(self, pool=None) -> dict:
        """Walk-forward evaluation against baselines (see `evaluation.walk_forward.evaluate`); `pool`: where the
        LLMs' answers come from (default: the adapter and its base, loaded on first use)."""
        from evaluation import walk_forward

        self.release()
        s = self.settings
        return walk_forward.evaluate(self.workspace, s.model.model_dir, s.evaluation, s.inference, pool)

    def build_events(self) -> dict:
        from instruct import stages

        return stages.build_events(self.workspace, self.settings.instruct_data)

    def build_forecaster(self, teacher) -> dict:
        from instruct import stages

        return stages.build_forecaster(self.workspace, teacher, self.settings.instruct_data)

    def train_instruct(self) -> dict:
        from instruct import stages

        s = self.settings
        return stages.train_instruct(self.workspace, s.model, s.lora, s.train, s.instruct)

    def generation_pool(self):
        """A `distributed.Pool` of every model an evaluation or a comparison may ask for: under torchrun, the
        processes other than rank 0 serve it while rank 0 runs the stage."""
        from evaluation import llm_forecasters
        from instruct import stages
        from llm import distributed

        s = self.settings
        kinds = {
            "eval": lambda: llm_forecasters.generator_factory(s.model.model_dir, s.inference),
            "compare": lambda: stages.compare_factory(s.model, s.instruct, s.inference),
        }
        return distributed.Pool.of_kinds(kinds)

    def compare(self, pool=None) -> dict:
        from instruct import stages

        self.release()
        s = self.settings
        return stages.compare(self.workspace, s.model, s.instruct, s.inference, pool)

    def release(self) -> None:
        """Free the forecasting model (a stage that loads its own calls this first)."""
        import model

        self._loaded = None
        model.free_memory()
