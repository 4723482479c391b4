"""The spec's facade: `StockPredictor` runs the pipeline as a straight line, one stage module each:

    Workspace (workspace.py: companies, price cache, exchange client, news)
    → training_data.prepare (windowed chat examples, chronological split)
    → training.train (4-bit LoRA through SFTTrainer; the adapter and its manifest)
    → forecast.latest (generate, parse, band, print, chart, files)
    → walk_forward.evaluate / trading.run / instruct_tasks (evaluation, orders, instruction tuning)

It holds the read-only configs built once by `main.py` and passes each stage the `Workspace` and the settings
that stage needs, never itself; no stage module imports this one. The price cache lets a rerun skip months
already fetched and the adapter lets inference and evaluation run without retraining.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd

from config.data_args import DataConfig
from config.defaults import FORECASTER_SAMPLES, FORECASTER_WEEKS, INSTRUCT_MIX, INSTRUCT_ROWS
from config.inference_args import DecodingConfig
from config.model_args import LoraSettings, ModelConfig
from config.trading_args import TradeConfig
from config.training_args import TrainSettings
from forecasting.forecast_files import print_forecast  # noqa: F401  (print_forecast: the spec's facade re-exports it)
from forecasting.reading import Forecast
from market.company_list import Company
from market.exchanges import ExchangeClient
from market.workspace import Workspace


class StockPredictor:
    def __init__(
        self,
        data: DataConfig = DataConfig(),
        model: ModelConfig = ModelConfig(),
        lora: LoraSettings = LoraSettings(),
        train_settings: TrainSettings = TrainSettings(),
        client: ExchangeClient | None = None,
        newsapi_key: str | None = None,
        decoding: DecodingConfig = DecodingConfig(),
    ):
        self.model_cfg, self.lora, self.train_settings, self.decoding = model, lora, train_settings, decoding
        self.chart_style = "international"  # or "taiwan": red up, green down (--chart-style)
        make_client = ExchangeClient
        if data.price_source == "server":  # the trading server's own price history (--price-source server)
            import stock_api

            make_client = stock_api.ServerPriceSource
        self.workspace = Workspace(data, train_settings.output_dir, client, newsapi_key, lora.random_state, make_client)
        self._loaded = None

    # ----------------------------------------------------------------- the workspace's, under the spec's names

    @property
    def data(self) -> DataConfig:
        return self.workspace.data

    @property
    def fields(self) -> list[str]:
        return self.workspace.fields

    def companies(self) -> list[Company]:
        return self.workspace.companies()

    def fetch_prices(self, companies: list[Company]) -> dict[str, pd.DataFrame]:
        return self.workspace.fetch_prices(companies)

    def context_builder(self, data: DataConfig, prices: dict[str, pd.DataFrame]):
        return self.workspace.context_builder(data, prices)

    # ----------------------------------------------------------------- stages 2 and 3: examples, training

    def build_dataset(self, companies: list[Company], prices: dict[str, pd.DataFrame]) -> tuple[list, list, dict]:
        from llm import sft_data

        return sft_data.build(self.workspace, companies, prices)

    def train(self) -> dict:
        import model
        from llm import distributed, sft, sft_data

        model.check_quantization(self.model_cfg, model.cuda_available())
        # with several processes (torchrun), rank 0 alone talks to the exchanges and writes the examples
        train, val, extra = distributed.on_main(functools.partial(sft_data.prepare, self.workspace))
        figures = sft.train(self.model_cfg, self.lora, self.train_settings, train, val, extra)
        print("training: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
        print(
            f"adapter saved to {self.model_cfg.model_dir}; TensorBoard: tensorboard --logdir "
            f"{Path(self.train_settings.output_dir) / 'runs'}"
        )
        return figures

    # ----------------------------------------------------------------- stage 4: inference

    def inference(self, code: str = "2330", past: int = 5, future: int = 5, context: str = "") -> Forecast:
        """Forecast `future` trading days of `code` from its latest `past` days, print them and chart them."""
        return self.forecast_many([code], past, future, context)[0]

    def forecast_many(
        self, codes: list[str], past: int, future: int, context: str = "", charts: bool = True
    ) -> list[Forecast]:
        """Latest-days forecasts for several stocks, generated in one batch (`forecast.latest`); valid ones are
        charted and written to CSV and JSON beside the chart."""
        import model
        from forecasting import latest

        if self._loaded is None:
            self._loaded = model.load_for_inference(self.model_cfg.model_dir)
        chart_dir = Path(self.train_settings.output_dir) / "forecasts" if charts else None
        results = latest.latest(
            self.workspace,
            self._loaded,
            codes,
            past,
            future,
            context,
            self.decoding,
            self._calibration(),
            chart_dir,
            self.chart_style,
        )
        if chart_dir and any(r.chart for r in results):  # one page for the run: every code asked for, charts inline
            from forecasting import forecast_page

            page = forecast_page.write_forecast_index(chart_dir, results, self.decoding)
            for result in results:
                result.page = page
        return results

    def _calibration(self):
        from forecasting import latest

        return latest.band_calibration(self.model_cfg.model_dir, self.decoding)

    # ----------------------------------------------------------------- decisions and orders

    def trade(self, cfg: TradeConfig, credentials, api=None) -> list[dict]:
        """Holdings → forecasts → buy/sell/hold → orders (only with execute): `trading.run`."""
        from trading import orders

        candidates = [c.code for c in self.companies()]
        forecast = functools.partial(self.forecast_many, past=cfg.past, future=cfg.future, charts=False)
        return orders.run(cfg, credentials, candidates, forecast, api)

    # ----------------------------------------------------------------- stages in their own modules

    def evaluate(self, cfg, generators: dict | None = None, pool=None) -> dict:
        """Walk-forward evaluation against baselines (see `walk_forward.evaluate`)."""
        from evaluation import walk_forward

        self.release()
        return walk_forward.evaluate(self.workspace, self.model_cfg.model_dir, cfg, generators, pool)

    def build_events(self, mix: str = INSTRUCT_MIX, rows: int = INSTRUCT_ROWS) -> dict:
        from instruct import stages

        return stages.build_events(self.workspace, mix, rows)

    def build_forecaster(self, teacher, weeks: int = FORECASTER_WEEKS, samples: int = FORECASTER_SAMPLES) -> dict:
        from instruct import stages

        return stages.build_forecaster(self.workspace, teacher, weeks, samples)

    def train_instruct(self, cfg) -> dict:
        from instruct import stages

        return stages.train_instruct(self.workspace, self.model_cfg, self.lora, self.train_settings, cfg)

    def generation_pool(self, evaluation, instruct):
        """A `distributed.Pool` of every model an evaluation or a comparison may ask for: under torchrun, the
        processes other than rank 0 serve it while rank 0 runs the stage."""
        from evaluation import llm_forecasters
        from instruct import stages
        from llm import distributed

        factories: dict = {}

        def build(key):
            if key[0] not in factories:  # built on first use (a comparison's factory reads its adapters' configs)
                kinds = {"eval": lambda: llm_forecasters.generator_factory(self.model_cfg.model_dir, evaluation),
                         "compare": lambda: stages.compare_factory(self.model_cfg, instruct)}  # fmt: skip
                factories[key[0]] = kinds[key[0]]()
            return factories[key[0]](key)

        return distributed.Pool(build)

    def compare(self, cfg, pool=None) -> dict:
        from instruct import stages

        self.release()
        return stages.compare(self.workspace, self.model_cfg, cfg, pool)

    def release(self) -> None:
        """Free the forecasting model (a stage that loads its own calls this first)."""
        import model

        self._loaded = None
        model.free_memory()
