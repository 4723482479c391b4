"""The pipeline as a straight line: companies → price cache → examples JSONL → adapter → forecast + chart.

`StockPredictor` holds the read-only configs built once by `main.py` and runs each stage. The price cache
lets a rerun skip months already fetched and the adapter lets inference and evaluation run without retraining;
the examples JSONL is written for inspection (what the model was trained on) and is not read back.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import sys
from dataclasses import asdict
from pathlib import Path

import pandas as pd

import dataset
import generation
import market_data
import market_wide
import prompt_context
from configs import (
    DataConfig,
    DecodingConfig,
    LoraSettings,
    ModelConfig,
    TradeConfig,
    TrainSettings,
    parse_flag,
)
from forecast import (  # noqa: F401  (print_forecast: the spec's facade re-exports it)
    Forecast,
    next_trading_days,
    plot_forecast,
    print_forecast,
    read_forecast,
    write_forecast_files,
)
from market_data import Company, ExchangeClient, PriceCache
from utils import StockToolError, is_writable_dir, taipei_today, write_json, write_jsonl

log = logging.getLogger("stock.predictor")


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
        self.data, self.model_cfg, self.lora, self.train_settings = data, model, lora, train_settings
        self.decoding = decoding
        self.chart_style = "international"  # or "taiwan": red up, green down (--chart-style)
        if data.answer_format not in dataset.ANSWER_FORMATS:
            raise StockToolError(
                f"--answer-format {data.answer_format!r}: choose {' or '.join(dataset.ANSWER_FORMATS)}"
            )
        self.newsapi_key = newsapi_key  # kept out of the configs: they are saved next to the adapter
        self.lora_seed = lora.random_state
        self._chosen: list[Company] | None = None
        self._market_prices: dict[str, pd.DataFrame] = {}
        self.windows = parse_flag(dataset.parse_windows, data.windows, "--windows")
        self.fields = parse_flag(dataset.parse_fields, data.fields, "--fields")
        self.cache = PriceCache(market_data.resolve_price_dir(data.data_dir))
        self._client = client
        self._loaded = None

    # ----------------------------------------------------------------- stage 1: prices

    def date_range(self) -> tuple[dt.date, dt.date]:
        today = taipei_today()
        if not 1 <= self.data.month <= 12:
            raise StockToolError(f"--month {self.data.month} is not a month (1-12)")
        start = dt.date(self.data.year, self.data.month, 1)
        end = dt.date.fromisoformat(self.data.end_date) if self.data.end_date else today
        if start > today:
            raise StockToolError(f"--year/--month {start:%Y-%m} is in the future (today is {today})")
        if end < start:
            raise StockToolError(f"--end-date {end} is before --year/--month {start:%Y-%m}")
        if end > today:
            log.warning("--end-date %s is in the future: prices end today, %s", end, today)
        return start, min(end, today)

    def companies(self) -> list[Company]:
        if self.data.choose_stock:
            if self._chosen is None:
                self._chosen = self.choose_stocks()
            return self._chosen
        return market_data.load_company_list(self.data.company_list_file or market_data.DEFAULT_COMPANY_FILE)

    def choose_stocks(self) -> list[Company]:
        """N listed stocks for each of twstock's four buy and four sell points on the latest market day."""
        client = None if self.data.offline or self.data.market_csv else self.client()
        chosen, market_prices = market_wide.choose_stocks(
            self.data, self.date_range()[1], client, self.market_dir(), self.lora_seed
        )
        if market_prices is not None:  # the market CSV is also the chosen stocks' price history (used offline)
            self._market_prices = market_prices
        return chosen

    def market_dir(self) -> Path:
        return self.store_dir("market")

    def news_store(self):
        import news

        return news.NewsStore(self.store_dir("news"))

    def store_dir(self, name: str) -> Path:
        """`<data-dir>/<name>`, or `<output-dir>/<name>` when --data-dir is a folder of price CSVs."""
        if self.cache.directory == Path(self.data.data_dir):
            return Path(self.train_settings.output_dir) / name
        return Path(self.data.data_dir) / name

    # ----------------------------------------------------------------- context: signals and news

    def collect_news(self, companies: list[Company]) -> None:
        """Import --news-csv, then fetch newsapi.org (with a key, online) into the store."""
        prompt_context.collect_news(self.data, self.news_store(), companies, self.newsapi_key)

    def context_builder(self, data: DataConfig, prices: dict[str, pd.DataFrame]):
        """fn(code) → fn(as_of_date) → (context text, kind): the as-of context of `data`'s settings."""
        return prompt_context.builder(data, prices, self.news_store() if data.news else None)

    def client(self) -> ExchangeClient | None:
        """Where missing months come from: the exchanges through twstock, or the trading server."""
        if self.data.offline:
            return None
        if self._client is None:
            if self.data.price_source == "server":
                import stock_api

                self._client = stock_api.ServerPriceSource()
            else:
                self._client = ExchangeClient()
        return self._client

    def fetch_prices(self, companies: list[Company]) -> dict[str, pd.DataFrame]:
        from tqdm import tqdm

        start, end = self.date_range()
        if not self.data.offline and not is_writable_dir(self.cache.directory):
            raise StockToolError(
                f"the price cache {self.cache.directory} is not writable; add --offline to use it as it is"
            )
        months = (end.year - start.year) * 12 + end.month - start.month + 1
        if not self.data.offline and months > 36:
            print(
                f"prices: {start:%Y-%m} → {end:%Y-%m} is {months} months; for {len(companies)} companies that is up to "
                f"{months * len(companies):,} exchange requests, about {months * len(companies) * 2 / 60:,.0f} minutes "
                "at one request every 2 s (months already cached are skipped; Ctrl-C stops, a rerun resumes)"
            )
        prices = {}
        for company in tqdm(companies, desc="prices", unit="company", disable=len(companies) < 3):
            market = self._market_prices.get(company.code)
            if self.data.offline and market is not None and self.cache.load(company.code) is None:
                prices[company.code] = _from_market(market, company, start, end)  # --choose-stock --market-csv
            else:
                prices[company.code] = market_data.update_prices(company, self.cache, start, end, self.client())
        rows = sum(len(f) for f in prices.values())
        requests = self._client.requests_made if self._client else 0
        print(
            f"prices: {len(prices)} companies, {rows:,} trading days ({start} → {end}); "
            f"{requests} exchange request(s); cache {self.cache.directory}"
        )
        return prices

    # ----------------------------------------------------------------- stage 2: examples

    def examples_dir(self) -> Path:
        """`<data-dir>/examples`; `<output-dir>/examples` when --data-dir is someone else's folder of price
        CSVs (it is only read) or cannot be written."""
        fallback = Path(self.train_settings.output_dir) / "examples"
        if self.cache.directory == Path(self.data.data_dir):
            return fallback
        preferred = Path(self.data.data_dir) / "examples"
        if is_writable_dir(preferred):
            return preferred
        log.info("%s is not writable; writing examples to %s", preferred, fallback)
        return fallback

    def build_dataset(self, companies: list[Company], prices: dict[str, pd.DataFrame]) -> tuple[list, list, dict]:
        examples, skipped = self._all_examples(companies, prices)
        all_dates = [d for f in prices.values() for d in f.index]
        cutoff = dataset.split_cutoff(all_dates, self.data.val_fraction)
        train, val, straddling = dataset.chronological_split(examples, cutoff)
        if not train:
            raise StockToolError(f"no training window ends before the validation cutoff {cutoff:%Y-%m-%d}")
        if len(val) > self.data.max_val_examples:  # an even spread over the held-out period, not a shuffle
            step = len(val) / self.data.max_val_examples
            val = [val[int(i * step)] for i in range(self.data.max_val_examples)]
        manifest = {
            "cutoff": cutoff.strftime("%Y-%m-%d"),
            "first_date": min(all_dates).strftime("%Y-%m-%d"),
            "last_date": max(all_dates).strftime("%Y-%m-%d"),  # nothing after it was seen: the leakage guard
            "stride": self.data.stride,
            "windows": [w.name for w in self.windows],
            "fields": self.fields,
            "answer_format": self.data.answer_format,
            "companies": [c.code for c in companies],
            "train_examples": len(train),
            "val_examples": len(val),
            "dropped_straddling_cutoff": straddling,
            "skipped_blank_fields": skipped,
            "per_window": {w.name: sum(e["meta"]["window"] == w.name for e in train) for w in self.windows},
            "per_context": _count_by(train, "context"),
        }
        out = self.examples_dir()
        write_jsonl(out / "train.jsonl", train)
        write_jsonl(out / "val.jsonl", val)
        write_json(out / "manifest.json", manifest)
        print(
            f"examples: {len(train):,} train / {len(val):,} validation (cutoff {manifest['cutoff']}, "
            f"{straddling} straddling the cutoff dropped, {skipped} with blank fields skipped) → {out}"
        )
        return train, val, manifest

    def _all_examples(self, companies: list[Company], prices: dict[str, pd.DataFrame]) -> tuple[list, int]:
        """(every company's examples of every window type, windows skipped for blank fields)."""
        from tqdm import tqdm

        examples, skipped = [], 0
        context = self.context_builder(self.data, prices)
        for company in tqdm(companies, desc="examples", unit="company", disable=len(companies) < 3):
            frame = prices[company.code]
            for window in self.windows:
                if len(frame) < window.past + window.future:
                    log.warning("%s has %d trading days, too few for window %s", company.code, len(frame), window.name)
                    continue
                built, bad = dataset.build_examples(
                    frame,
                    company.name_zh,
                    company.code,
                    window,
                    self.fields,
                    self.data.stride,
                    context(company.code),
                    self.data.answer_format,
                )
                examples += built
                skipped += bad
        if not examples:
            longest = max(w.past + w.future for w in self.windows)
            raise StockToolError(
                f"too little history: no company has {longest} trading days with every field in "
                f"--fields {self.data.fields}; start earlier with --year/--month or use shorter --windows"
            )
        return examples, skipped

    # ----------------------------------------------------------------- stage 3: training

    def train(self) -> dict:
        import distributed
        import model

        model.check_quantization(self.model_cfg, model.cuda_available())

        def prepare():
            companies = self.companies()
            prices = self.fetch_prices(companies)
            self.collect_news(companies)
            train, val, manifest = self.build_dataset(companies, prices)
            extra = {"data": asdict(self.data), "dataset": manifest, "companies": [asdict(c) for c in companies]}
            return train, val, extra

        import training

        # with several processes (torchrun), rank 0 alone talks to the exchanges and writes the examples
        train, val, extra = distributed.on_main(prepare)
        figures = training.train(self.model_cfg, self.lora, self.train_settings, train, val, extra)
        print("training: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
        print(
            f"adapter saved to {self.model_cfg.model_dir}; TensorBoard: tensorboard --logdir "
            f"{Path(self.train_settings.output_dir) / 'runs'}"
        )
        return figures

    # ----------------------------------------------------------------- stage 4: inference

    def _model(self):
        import model

        if self._loaded is None:
            self._loaded = model.load_for_inference(self.model_cfg.model_dir)
        return self._loaded

    def inference(self, code: str = "2330", past: int = 5, future: int = 5, context: str = "") -> Forecast:
        """Forecast `future` trading days of `code` from its latest `past` days, print them and chart them."""
        return self.forecast_many([code], past, future, context)[0]

    def forecast_many(
        self, codes: list[str], past: int, future: int, context: str = "", charts: bool = True
    ) -> list[Forecast]:
        """Latest-days forecasts for several stocks, generated in one batch; valid ones are charted and
        written to CSV and JSON beside the chart."""

        if past < 1 or future < 1:
            raise StockToolError("--past and --future must be at least 1")
        loaded = self._model()
        fields = loaded.config.fields or self.fields
        answer_format = loaded.config.answer_format
        trained = loaded.config.data or self.data
        end = self.date_range()[1]
        start = end - dt.timedelta(days=max(60, past * 3))  # calendar days covering `past` trading days
        companies, histories, prompts, regexes, frames = [], [], [], [], []
        for code in codes:
            company = prompt_context.with_english_name(market_data.resolve_company({"code": code}))
            frame = market_data.update_prices(company, self.cache, start, end, self.client())
            if len(frame) < past:
                raise StockToolError(
                    f"{code} has only {len(frame)} trading days cached before {frame.index[-1]:%Y-%m-%d}"
                )
            history = frame.iloc[-past:]
            frames.append(frame)  # its volatility scales a calibrated band
            # the context the adapter was trained with (signals, news as of the last known day), then the user's
            built, _ = self.context_builder(trained, {code: frame})(code)(history.index[-1])
            text = "\n".join(part for part in (built, context.strip()) if part)
            content = dataset.user_prompt(company.name_zh, history, future, fields, text, answer_format)
            companies.append(company), histories.append(history), prompts.append([{"role": "user", "content": content}])
            dates = next_trading_days(history.index[-1], future)
            regexes.append(dataset.answer_regex(dates, fields, answer_format))
        max_new = dataset.answer_token_budget(future, fields)
        _check_fits(loaded, prompts, max_new, past)
        d = self.decoding
        answers = generation.generate_samples(
            loaded,
            prompts,
            max_new,
            batch_size=max(8, d.samples),
            samples=d.samples,
            temperature=d.temperature,
            regexes=regexes if d.constrained else None,
            seed=d.seed,
        )
        results = []
        out_dir = Path(self.train_settings.output_dir) / "forecasts"
        cal = self._calibration()
        for company, history, raw, frame in zip(companies, histories, answers, frames, strict=True):
            anchor = dataset.anchor_of(history, answer_format)
            result = read_forecast(
                company.code, company.name_zh, history, raw, fields, future, anchor, company.name_en, d.band, cal, frame
            )
            if result.ok and charts:  # an impossible candle is reported, never drawn as if it were a forecast
                result.chart = plot_forecast(result, out_dir, self.chart_style)
                result.files = write_forecast_files(result, result.chart.with_suffix(""))
            results.append(result)
        return results

    def _calibration(self):
        """The adapter's calibration (written by an evaluation) when the bands are to come from it and it was
        made with this decoding; else None (the bands then come from samples, if any)."""
        import calibration

        if self.decoding.bands != "calibrated":
            return None
        cal = calibration.load(Path(self.model_cfg.model_dir) / calibration.FILE)
        if cal is None:
            return None
        if cal.point != self.decoding.point:
            log.warning(
                "%s was calibrated for --point %s, not %s: no calibrated band (evaluate with --point %s)",
                self.model_cfg.model_dir,
                cal.point,
                self.decoding.point,
                self.decoding.point,
            )
            return None
        if cal.decoding != self.decoding.identity():
            log.warning(
                "%s was calibrated with decoding %s, not %s: no calibrated band (evaluate with this decoding)",
                self.model_cfg.model_dir,
                cal.decoding,
                self.decoding.identity(),
            )
            return None
        return cal

    # ----------------------------------------------------------------- decisions and orders

    def trade(self, cfg: TradeConfig, credentials, api=None) -> list[dict]:
        """Holdings → forecasts → buy/sell/hold → orders (only with execute): `trading.run`."""
        import trading

        candidates = [c.code for c in self.companies()]
        forecast = functools.partial(self.forecast_many, past=cfg.past, future=cfg.future, charts=False)
        return trading.run(cfg, credentials, candidates, forecast, api)

    # ----------------------------------------------------------------- stages in their own modules

    def evaluate(self, cfg, generators: dict | None = None, pool=None) -> dict:
        """Walk-forward evaluation against baselines (see `walk_forward.evaluate`)."""
        import walk_forward

        return walk_forward.evaluate(self, cfg, generators, pool)

    def build_events(self, mix: str = "news:0.6,market:0.4", rows: int = 2000) -> dict:
        import instruct_tasks

        return instruct_tasks.build_events(self, mix, rows)

    def build_forecaster(self, teacher, weeks: int = 4, samples: int = 200) -> dict:
        import instruct_tasks

        return instruct_tasks.build_forecaster(self, teacher, weeks, samples)

    def train_instruct(self, cfg) -> dict:
        import instruct_tasks

        return instruct_tasks.train_instruct(self, cfg)

    def generation_pool(self, evaluation, instruct):
        """A `distributed.Pool` of every model an evaluation or a comparison may ask for: under torchrun, the
        processes other than rank 0 serve it while rank 0 runs the stage."""
        import distributed
        import instruct_tasks
        import walk_forward

        factories: dict = {}

        def build(key):
            if key[0] not in factories:  # built on first use (a comparison's factory reads its adapters' configs)
                kinds = {"eval": lambda: walk_forward.generator_factory(self, evaluation),
                         "compare": lambda: instruct_tasks.compare_factory(self, instruct)}  # fmt: skip
                factories[key[0]] = kinds[key[0]]()
            return factories[key[0]](key)

        return distributed.Pool(build)

    def compare(self, cfg, pool=None) -> dict:
        import instruct_tasks

        return instruct_tasks.compare(self, cfg, pool)

    def release(self) -> None:
        import gc

        self._loaded = None
        gc.collect()
        if "torch" in sys.modules and sys.modules["torch"].cuda.is_available():
            sys.modules["torch"].cuda.empty_cache()


def _count_by(examples: list[dict], key: str) -> dict[str, int]:
    """How many examples carry each value of meta[key], by value in order."""
    values = sorted({e["meta"][key] for e in examples})
    return {v: sum(e["meta"][key] == v for e in examples) for v in values}


def _check_fits(loaded, prompts: list, max_new: int, past: int) -> None:
    """Refuse, before generating, a prompt that with its answer would not fit in the model's context."""
    if loaded.tokenizer is None:  # an injected fake model (tests)
        return
    longest = max(loaded.prompt_tokens(p) for p in prompts)
    if longest + max_new > loaded.context:
        raise StockToolError(
            f"--past {past}: the prompt is {longest:,} tokens and the answer needs up to {max_new:,}, more than the "
            f"model's context of {loaded.context:,} tokens; use a smaller --past"
        )


def _from_market(frame: pd.DataFrame, company: Company, start: dt.date, end: dt.date) -> pd.DataFrame:
    sliced = frame.loc[pd.Timestamp(start) : pd.Timestamp(end)]
    if sliced.empty:
        raise StockToolError(f"the market CSV has no prices for {company.code} between {start} and {end}")
    return sliced
