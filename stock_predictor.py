"""The pipeline as a straight line: companies → price cache → examples JSONL → adapter → forecast + chart.

`StockPredictor` holds the read-only configs built once by `main.py` and runs each stage; every
stage leaves a file behind, so any one can be rerun without refetching or retraining.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pandas as pd

import dataset
import evaluation as ev
import market_data
from market_data import Company, ExchangeClient, PriceCache
from model import LoraSettings, ModelConfig, TrainSettings
from utils import StockToolError, is_writable_dir, taipei_today, write_json, write_jsonl

log = logging.getLogger("stock.predictor")

DEFAULT_COMPANY_FILE = Path(__file__).with_name("data") / "companies.json"


@dataclass(frozen=True)
class DataConfig:
    data_dir: str = "data"
    company_list_file: str | None = None  # None: the spec's 41 companies shipped in data/companies.json
    year: int = 2024
    month: int = 12
    end_date: str | None = None  # None: today (Taipei)
    offline: bool = False
    choose_stock: int = 0
    windows: str = dataset.DEFAULT_WINDOWS
    fields: str = "ohlcv"
    stride: int = 1
    val_fraction: float = 0.1
    max_val_examples: int = 200
    price_source: str = "twstock"  # or "server": the trading server's price history
    signals: bool = True  # twstock's best four points (as of each window's last day) in the prompt
    news: bool = True  # stored news (as of each window's last day) in the prompt; collected with NEWSAPI_KEY
    news_languages: str = "both"  # zh, en or both
    news_max_articles: int = 5
    news_max_tokens: int = 300  # estimated: one token per CJK character, one per four other characters
    news_days: int = 30  # how far back to collect (newsapi's free plan: ~30 days)
    news_daily_limit: int = 100  # newsapi requests a day (the free plan's limit)
    news_csv: str | None = None  # headlines to import into the store: code,date,title[,description,source,url]
    market_csv: str | None = None  # market-wide daily CSV for --choose-stock instead of the exchanges


EVAL_MODELS = ("tuned", "base", "lstm")


@dataclass(frozen=True)
class EvalConfig:
    test_start: str | None = None  # None: the day after the adapter's last training day
    test_end: str | None = None  # None: --end-date, or today
    stride: int = 1  # trading days between forecast origins
    models: str = "tuned,base,lstm"  # besides the naive baselines, which always run
    windows: str | None = None  # None: the adapter's window types
    batch_size: int = 64  # prompts generated together
    bootstrap: int = 1000  # block-bootstrap resamples for the 95% intervals
    brokerage: float = 0.001425  # per side
    sell_tax: float = 0.003
    run_name: str | None = None  # None: eval_<test-start>_<test-end> under --output-dir
    lstm_epochs: int = 30
    seed: int = 3407


TRAIN_QUESTIONS = "train_questions.txt"  # beside an instruction adapter: fingerprints of its training questions


@dataclass(frozen=True)
class InstructConfig:
    dataset_files: str | None = None  # training files, "a.jsonl,b.jsonl:0.5" (a weight multiplies a file's rows)
    template: str = "chat"  # chat (the model's template) or cornucopia (the seed's plain template)
    skip_bad_rows: bool = False
    eval_file: str | None = None  # instructions to answer with each model of `compare`
    compare: str | None = None  # "base,outputs/model,...": None means --model-dir alone
    max_new_tokens: int = 256
    batch_size: int = 8
    limit: int = 0  # the first N rows of eval_file (0: all)
    bootstrap: int = 1000
    run_name: str | None = None  # None: compare_<eval file stem> under --output-dir


@dataclass(frozen=True)
class TradeConfig:
    execute: bool = False  # False: a dry run that prints and journals the plan and sends nothing
    api_url: str | None = None  # None: $STOCK_API_URL or the spec's server
    threshold: float = 0.01
    max_lots: int = 1
    max_positions: int = 5
    past: int = 5
    future: int = 5
    journal_dir: str = "outputs/trades"


@dataclass
class Forecast:
    code: str
    name: str
    past: pd.DataFrame
    raw_answer: str
    forecast: pd.DataFrame | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    chart: Path | None = None

    @property
    def ok(self) -> bool:
        return self.forecast is not None and not self.problems


class StockPredictor:
    def __init__(
        self,
        data: DataConfig = DataConfig(),
        model: ModelConfig = ModelConfig(),
        lora: LoraSettings = LoraSettings(),
        train_settings: TrainSettings = TrainSettings(),
        client: ExchangeClient | None = None,
        newsapi_key: str | None = None,
    ):
        self.data, self.model_cfg, self.lora, self.train_settings = data, model, lora, train_settings
        self.newsapi_key = newsapi_key  # kept out of the configs: they are saved next to the adapter
        self.lora_seed = lora.random_state
        self._chosen: list[Company] | None = None
        self._market_prices: dict[str, pd.DataFrame] = {}
        self.windows = _parse(dataset.parse_windows, data.windows, "--windows")
        self.fields = _parse(dataset.parse_fields, data.fields, "--fields")
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
        return start, min(end, today)

    def companies(self) -> list[Company]:
        if self.data.choose_stock:
            if self._chosen is None:
                self._chosen = self.choose_stocks()
            return self._chosen
        return market_data.load_company_list(self.data.company_list_file or DEFAULT_COMPANY_FILE)

    def choose_stocks(self) -> list[Company]:
        """N listed stocks for each of twstock's four buy and four sell points on the latest market day."""
        import random

        n, end = self.data.choose_stock, self.date_range()[1]
        if n < 1:
            raise StockToolError("--choose-stock must be at least 1")
        days = 10  # enough trading days for the 6-day average and the turns of the 3-day one
        full = None
        if self.data.market_csv:
            full = market_data.read_market_csv(self.data.market_csv)
            rows = market_data.last_days(full, end, days)
            origin = self.data.market_csv
        elif self.data.offline:
            raise StockToolError("--choose-stock with --offline needs --market-csv (a market-wide daily CSV)")
        else:
            client = self.client() if isinstance(self.client(), ExchangeClient) else ExchangeClient()
            rows = market_data.collect_market_days(client, self.market_dir(), end, days)
            origin = f"the exchanges' daily reports ({self.market_dir()})"
        frames = market_data.market_frames(rows)
        latest = max(f.index[-1] for f in frames.values() if len(f))
        points = {}
        for code, frame in sorted(frames.items()):
            if len(frame) < 7 or frame.index[-1] != latest or not _is_common_stock(code):
                continue
            points[code] = dataset.best_four_points(frame)[-1]
        rng = random.Random(self.lora_seed)
        chosen: dict[str, Company] = {}
        print(f"choose-stock: {len(points):,} listed stocks on {latest:%Y-%m-%d} from {origin}")
        for side, names in (("buy", dataset.BEST_BUY_WHY), ("sell", dataset.BEST_SELL_WHY)):
            for i, why in enumerate(names):
                pool = [c for c, p in points.items() if p and p[side][i]]
                picks = rng.sample(pool, min(n, len(pool)))
                named = []
                for code in picks:
                    try:
                        company = chosen.get(code) or market_data.resolve_company({"code": code})
                    except StockToolError:
                        continue  # not in twstock's table (a new listing): cannot be fetched by code
                    chosen[code] = company
                    named.append(f"{code} {company.name_zh}")
                print(f"  {side} {i + 1} ({why}): {', '.join(named) or 'none'}  [{len(pool):,} stocks meet it]")
        if not chosen:
            raise StockToolError(f"--choose-stock: no stock meets any best-four-point condition on {latest:%Y-%m-%d}")
        if full is not None:  # the market CSV is also the chosen stocks' price history (used offline)
            self._market_prices = market_data.market_frames(full[full["code"].isin(list(chosen))])
        return list(chosen.values())

    def market_dir(self) -> Path:
        return self._store_dir("market")

    def news_store(self):
        import news

        return news.NewsStore(self._store_dir("news"))

    def _store_dir(self, name: str) -> Path:
        """`<data-dir>/<name>`, or `<output-dir>/<name>` when --data-dir is a folder of price CSVs."""
        if self.cache.directory == Path(self.data.data_dir):
            return Path(self.train_settings.output_dir) / name
        return Path(self.data.data_dir) / name

    # ----------------------------------------------------------------- context: signals and news

    def collect_news(self, companies: list[Company]) -> None:
        """Import --news-csv, then fetch newsapi.org (with a key, online) into the store."""
        import news

        store = self.news_store()
        if self.data.news_csv:
            counts = news.import_csv(self.data.news_csv, store, {c.code: _with_english_name(c) for c in companies})
            print(
                f"news: imported {counts['imported']:,} new of {counts['rows']:,} rows from {self.data.news_csv} "
                f"({counts['unknown_code']:,} for other companies, {counts['bad_rows']:,} unreadable) "
                f"→ {store.directory}"
            )
        if not self.data.news or self.data.offline:
            return
        if not self.newsapi_key:
            log.warning("no NEWSAPI_KEY: news is not collected; prompts use the news already stored (if any)")
            return
        collector = news.NewsCollector(self.newsapi_key, store, self.data.news_daily_limit)
        summary = collector.collect([_with_english_name(c) for c in companies], self.data.news_days)
        print(
            f"news: {summary['requests']} newsapi request(s), {summary['new_articles']:,} new article(s) → "
            f"{store.directory}"
            + (f"; daily budget reached, skipped: {', '.join(summary['skipped'])}" if summary["skipped"] else "")
        )

    def context_builder(self, data: DataConfig, prices: dict[str, pd.DataFrame]):
        """fn(code) → fn(as_of_date) → (context text, kind): the as-of context of `data`'s settings."""
        languages = ("zh", "en") if data.news_languages == "both" else (data.news_languages,)
        store = self.news_store() if data.news else None
        signals = {code: dict(zip(f.index, dataset.best_four_points(f), strict=True)) for code, f in prices.items()}

        def for_code(code: str):
            articles = store.articles(code, languages) if store else []
            points = signals.get(code, {})

            def context_for(as_of) -> tuple[str, str]:
                parts, kind = [], "prices"
                if data.signals:
                    parts.append(dataset.signal_text(points.get(pd.Timestamp(as_of))))
                    kind += "+signals"
                lines = dataset.news_lines(articles, pd.Timestamp(as_of).date(), data.news_max_articles,
                                           data.news_max_tokens) if articles else []  # fmt: skip
                if lines:
                    parts.append(f"News up to {pd.Timestamp(as_of):%Y-%m-%d} (newest first):\n" + "\n".join(lines))
                    kind += "+news"
                return "\n".join(parts), kind

            return context_for

        return for_code

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
                    frame, company.name_zh, company.code, window, self.fields, self.data.stride, context(company.code)
                )
                examples += built
                skipped += bad
        if not examples:
            longest = max(w.past + w.future for w in self.windows)
            raise StockToolError(
                f"too little history: no company has {longest} trading days with every field in "
                f"--fields {self.data.fields}; start earlier with --year/--month or use shorter --windows"
            )
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
            "companies": [c.code for c in companies],
            "train_examples": len(train),
            "val_examples": len(val),
            "dropped_straddling_cutoff": straddling,
            "skipped_blank_fields": skipped,
            "per_window": {w.name: sum(e["meta"]["window"] == w.name for e in train) for w in self.windows},
            "per_context": {
                k: sum(e["meta"]["context"] == k for e in train) for k in sorted({e["meta"]["context"] for e in train})
            },  # fmt: skip
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

    # ----------------------------------------------------------------- stage 3: training

    def train(self) -> dict:
        import model

        model.check_quantization(self.model_cfg, model.cuda_available())
        companies = self.companies()
        prices = self.fetch_prices(companies)
        self.collect_news(companies)
        train, val, manifest = self.build_dataset(companies, prices)
        extra = {"data": asdict(self.data), "dataset": manifest, "companies": [asdict(c) for c in companies]}
        figures = model.train(self.model_cfg, self.lora, self.train_settings, train, val, extra)
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
        """Latest-days forecasts for several stocks, generated in one batch; valid ones are charted."""
        import model

        if past < 1 or future < 1:
            raise StockToolError("--past and --future must be at least 1")
        loaded = self._model()
        fields = loaded.config.get("dataset", {}).get("fields", self.fields)
        trained = _data_config_from(loaded.config["data"]) if "data" in loaded.config else self.data
        end = self.date_range()[1]
        start = end - dt.timedelta(days=max(60, past * 3))  # calendar days covering `past` trading days
        companies, histories, prompts = [], [], []
        for code in codes:
            company = _with_english_name(market_data.resolve_company({"code": code}))
            frame = market_data.update_prices(company, self.cache, start, end, self.client())
            if len(frame) < past:
                raise StockToolError(
                    f"{code} has only {len(frame)} trading days cached before {frame.index[-1]:%Y-%m-%d}"
                )
            history = frame.iloc[-past:]
            # the context the adapter was trained with (signals, news as of the last known day), then the user's
            built, _ = self.context_builder(trained, {code: frame})(code)(history.index[-1])
            text = "\n".join(part for part in (built, context.strip()) if part)
            content = dataset.user_prompt(company.name_zh, history, future, fields, text)
            companies.append(company), histories.append(history), prompts.append([{"role": "user", "content": content}])
        max_new = dataset.answer_token_budget(future, fields)
        answers = model.generate(loaded, prompts, max_new_tokens=max_new)
        results = []
        for company, history, raw in zip(companies, histories, answers, strict=True):
            result = _read_forecast(company, history, raw, fields, future)
            if result.ok and charts:  # an impossible candle is reported, never drawn as if it were a forecast
                result.chart = plot_forecast(
                    history, result.forecast, company, Path(self.train_settings.output_dir) / "forecasts"
                )
            results.append(result)
        return results

    # ----------------------------------------------------------------- decisions and orders

    def trade(self, cfg: TradeConfig, credentials, api=None) -> list[dict]:
        """Holdings → forecasts (holdings and candidates) → buy/sell/hold per stock → orders (only with execute).

        Every decision and server reply goes to the day's journal; a decision already sent (or possibly
        sent) today is never sent again.
        """
        import stock_api
        import trading

        api = api or stock_api.StockApiClient(**({"base_url": cfg.api_url} if cfg.api_url else {}))
        rules = trading.TradeRules(cfg.threshold, cfg.max_lots, cfg.max_positions)
        held = {}
        for h in api.holdings(credentials):
            held[h.code] = held.get(h.code, 0) + h.shares
        candidates = [c.code for c in self.companies()]
        codes = list(dict.fromkeys([c for c in held if held[c] > 0] + candidates))
        forecasts = {f.code: f for f in self.forecast_many(codes, cfg.past, cfg.future, charts=False)}
        positions = sum(1 for lots in held.values() if lots > 0)
        decisions = []
        for code in codes:
            f = forecasts[code]
            problem = "; ".join(f.problems)[:200]
            d = trading.decide(
                code, float(f.past["Close"].iloc[-1]), f.forecast if f.ok else None, held.get(code, 0), positions,
                rules, problem,
            )  # fmt: skip
            positions += d.side == "buy"
            decisions.append(d)
        journal = trading.TradeJournal(cfg.journal_dir, taipei_today(), credentials.tag)
        mode = "EXECUTE" if cfg.execute else "DRY RUN (nothing is sent; add --execute to send the orders)"
        print(f"trade plan, {journal.day} ({mode}); holdings: {held or 'none'}")
        outcomes = []
        for d in decisions:
            line = f"  {d.code} {d.side.upper():4s} {d.lots} lot(s)" + (f" @ {d.price:g}" if d.price else "")
            print(f"{line:34s} {d.reason}")
            outcomes.append(self._carry_out(d, cfg.execute, journal, api, credentials))
        sent = sum(o["status"] == "sent" for o in outcomes)
        print(f"journal: {journal.path} ({sent} order(s) sent)")
        return outcomes

    @staticmethod
    def _carry_out(decision, execute: bool, journal, api, credentials) -> dict:
        import stock_api

        if decision.side == "hold":
            return journal.append(decision, "hold")
        if not execute:
            return journal.append(decision, "dry-run")
        earlier = journal.already(decision.code, decision.side)
        if earlier:
            print(f"    not sent: this {decision.side} of {decision.code} is already {earlier!r} in today's journal")
            return journal.append(decision, "duplicate-skipped", earlier=earlier)
        journal.append(decision, "sending")  # written and synced before the request: a crash cannot double it
        send = api.buy if decision.side == "buy" else api.sell
        try:
            result = send(credentials, decision.code, decision.lots, decision.price)
        except stock_api.OrderRefused as exc:
            print(f"    refused: {exc}")
            return journal.append(decision, "refused", reply=exc.body)
        except stock_api.OrderOutcomeUnknown as exc:
            print(f"    UNKNOWN: {exc}")
            return journal.append(decision, "unknown", error=str(exc))
        except stock_api.StockApiError as exc:  # the request never reached the server
            print(f"    not sent: {exc}")
            return journal.append(decision, "not-sent", error=str(exc))
        print(f"    sent: {result.status or result.result}")
        return journal.append(decision, "sent", reply=result.raw)

    # ----------------------------------------------------------------- financial instruction tuning

    def build_events(self, mix: str = "news:0.6,market:0.4", rows: int = 2000) -> dict:
        """The events database from stored news and prices, then news-impact and market-analysis instructions.

        Writes `<data-dir>/events.sqlite` (rebuilt whole, atomically) and
        `<data-dir>/instructions/events_instructions.jsonl`, ready for `--task instruct --dataset-file`.
        """
        import events

        weights = _parse_mix(mix)
        companies = self.companies()
        prices = self.fetch_prices(companies)
        self.collect_news(companies)
        start, end = self.date_range()
        taiex = market_data.update_taiex(self.cache.directory, start, end, self.client() if self.data.offline is False
                                         and isinstance(self.client(), ExchangeClient) else None)  # fmt: skip
        if taiex is None:
            log.warning(
                "no TAIEX closes (%s/TAIEX.csv, or online): market returns are left empty", self.cache.directory
            )
        store = self.news_store()
        items = []
        for company in companies:
            for article in store.articles(company.code, ("zh", "en")):
                items.append({**article, "code": company.code})
        if not items:
            raise StockToolError(
                f"no stored news for these companies in {store.directory}: collect it (NEWSAPI_KEY) or import "
                "headlines with --news-csv first"
            )
        db_path = self._store_dir("events.sqlite")
        counts = events.build(db_path, items, prices, taiex)
        names = {c.code: c.name_zh for c in companies}
        built = events.build_instructions(
            events.read_impacts(db_path), prices, taiex, names, weights, rows, self.lora_seed
        )
        out = self._store_dir("instructions") / "events_instructions.jsonl"
        write_jsonl(out, built)
        kinds = {k: sum(r["kind"] == k for r in built) for k in ("news_impact", "market_analysis")}
        print(
            f"events: {counts['events']:,} news items, {counts['impacts']:,} impacts (windows 1/5/20) → {db_path}; "
            f"instructions: {kinds['news_impact']:,} news-impact + {kinds['market_analysis']:,} market-analysis → {out}"
        )
        return {"db": db_path, "instructions": out, **counts, **kinds}

    def build_forecaster(self, teacher, weeks: int = 4, samples: int = 200) -> dict:
        """News-driven analysis rows (FinGPT-Forecaster style): past weeks' moves and headlines → three sections.

        The teacher sees the real next-week movement, so every training answer's prediction is what happened;
        answers whose sections or prediction disagree are rejected and counted. Answers are cached as they come
        (a rerun resumes); the dataset files are written only when every sample has an answer.
        """
        import hashlib as _hashlib
        import random

        import instructions as ins

        companies = self.companies()
        prices = self.fetch_prices(companies)
        self.collect_news(companies)
        store = self.news_store()
        candidates = []
        for company in companies:
            frame = prices[company.code]
            articles = store.articles(company.code, ("zh", "en"))
            by_week = [g for _, g in frame.groupby([frame.index.isocalendar().year, frame.index.isocalendar().week])]
            for k in range(weeks, len(by_week)):
                past, nxt = by_week[k - weeks : k], by_week[k]
                described = []
                for week in past:
                    start, end = week.index[0].date(), week.index[-1].date()
                    heads = [a["title"] for a in sorted(articles, key=lambda a: a["taipei_time"], reverse=True)
                             if start <= a["taipei_date"] <= end][:5]  # fmt: skip
                    closes = (float(week["Close"].iloc[0]), float(week["Close"].iloc[-1]))
                    described.append({"start": f"{start}", "end": f"{end}", "headlines": heads, "open_close": closes})
                last_close = float(past[-1]["Close"].iloc[-1])
                before_last = float(past[-2]["Close"].iloc[-1]) if weeks > 1 else float(past[-1]["Close"].iloc[0])
                prompt = ins.forecaster_prompt(
                    company.name_zh, company.code, described,
                    (f"{nxt.index[0]:%Y-%m-%d}", f"{nxt.index[-1]:%Y-%m-%d}"),
                )  # fmt: skip
                candidates.append({
                    "code": company.code, "week_end": f"{nxt.index[-1]:%Y-%m-%d}", "prompt": prompt,
                    "movement": ins.movement_bin(float(nxt["Close"].iloc[-1]) / last_close - 1),
                    "last_movement": ins.movement_bin(last_close / before_last - 1),
                    "news": sum(len(d["headlines"]) for d in described),
                })  # fmt: skip
        if not candidates:
            raise StockToolError(
                f"too little history for {weeks} past weeks plus one; start earlier with --year/--month"
            )
        chosen = random.Random(self.lora_seed).sample(candidates, min(samples, len(candidates)))
        chosen.sort(key=lambda c: (c["week_end"], c["code"]))
        directory = self._store_dir("instructions")
        cache = AnswerCache(directory / "forecaster_teacher_cache.jsonl", f"teacher:{teacher.url}:{teacher.model}")
        system = (
            "You are a seasoned stock market analyst. Answer in exactly this format:\n"
            "[Positive Developments]:\n1. ...\n[Potential Concerns]:\n1. ...\n[Prediction & Analysis]:\n"
            "Prediction: Up/Down by X-Y% (or by more than 5%)\nAnalysis: ..."
        )
        failures, rows, rejected = [], [], 0
        for c in chosen:
            hint = (f"{c['prompt']}\n\n(For the writer only, never mention it: next week the stock actually moved "
                    f"{ins.bin_words(c['movement'])}. Your prediction line must read 'Prediction: "
                    f"{ins.bin_words(c['movement'])}'.)")  # fmt: skip
            key = _hashlib.sha1(f"{cache.identity}|{hint}".encode()).hexdigest()
            if key not in cache.answers:
                try:
                    cache.add([key], [teacher.chat(system, hint)])
                except StockToolError as exc:
                    failures.append(str(exc))
                    break  # the endpoint is down: stop, keep what is cached, report
            answer = cache.answers[key]
            if ins.sections_valid(answer) and ins.parse_prediction(answer) == c["movement"]:
                rows.append(
                    {k: c[k] for k in ("prompt", "movement", "last_movement", "code", "week_end")} | {"answer": answer}
                )
            else:
                rejected += 1
        if failures:
            raise StockToolError(
                f"the teacher failed ({failures[0]}); {len(cache.answers):,} answers are cached in {cache.path} and no "
                "dataset was written: rerun to resume"
            )
        cut = sorted(r["week_end"] for r in rows)[int(len(rows) * (1 - self.data.val_fraction))] if rows else ""
        train = [r for r in rows if r["week_end"] < cut]
        test = [r for r in rows if r["week_end"] >= cut]
        write_jsonl(directory / "forecaster_train.jsonl", train)
        write_jsonl(directory / "forecaster_test.jsonl", test)
        print(
            f"forecaster: {len(chosen):,} samples ({sum(c['news'] > 0 for c in chosen):,} with headlines), "
            f"{teacher.calls} teacher call(s), {rejected} answer(s) rejected (format or prediction); "
            f"{len(train):,} train / {len(test):,} test (test weeks from {cut}) → {directory}"
        )
        return {"train": len(train), "test": len(test), "rejected": rejected, "calls": teacher.calls}

    def train_instruct(self, cfg: InstructConfig) -> dict:
        """LoRA on Alpaca / conversational / sentiment files mixed by weight; answer-only loss."""
        import instructions as ins
        import model

        if not cfg.dataset_files:
            raise StockToolError("--task instruct --train 1 needs --dataset-file a.jsonl[,b.jsonl:weight ...]")
        model.check_quantization(self.model_cfg, model.cuda_available())
        files, sources = [], {}
        for path, weight in ins.parse_file_weights(cfg.dataset_files):
            rows, skipped = ins.read_rows(path, cfg.skip_bad_rows)
            files.append((rows, weight))
            sources[path] = {"rows": len(rows), "weight": weight, "bad_rows_skipped": skipped}
        mixed = ins.mix(files, self.lora_seed)
        train, val = ins.split(mixed, self.data.val_fraction, self.lora_seed)
        val = val[: self.data.max_val_examples]
        print(
            f"instructions: {len(mixed):,} rows from {len(files)} file(s) → {len(train):,} train / {len(val):,} "
            f"validation (split by question); template {cfg.template}; "
            + "; ".join(
                f"{p}: {v['rows']:,} rows × {v['weight']:g}, {v['bad_rows_skipped']} bad skipped"
                for p, v in sources.items()
            )  # fmt: skip
        )
        extra = {"task": "instruct", "instruct": asdict(cfg), "sources": sources}
        fingerprints = "".join(f"{f}\n" for f in sorted({ins.fingerprint(r) for r in train}))
        figures = model.train(
            self.model_cfg,
            self.lora,
            self.train_settings,
            [ins.to_example(r, cfg.template) for r in train],
            [ins.to_example(r, cfg.template) for r in val],
            extra,
            extra_files={TRAIN_QUESTIONS: fingerprints},
        )
        print("training: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
        print(f"adapter saved to {self.model_cfg.model_dir}")
        return figures

    def compare(self, cfg: InstructConfig) -> dict:
        """Run each model of --compare over --eval-file: answers JSONL per model, scores with 95% intervals
        where gold answers exist, and a side-by-side Markdown comparison. Refuses rows an adapter trained on."""
        import instructions as ins
        import model

        if not cfg.eval_file:
            raise StockToolError("--task instruct --train 0 needs --eval-file (instructions to answer)")
        rows, skipped = ins.read_rows(cfg.eval_file, cfg.skip_bad_rows)
        rows = rows[: cfg.limit] if cfg.limit else rows
        names = [n.strip() for n in (cfg.compare or self.model_cfg.model_dir).split(",") if n.strip()]
        adapters = [n for n in names if n != "base"]
        for adapter in adapters:  # the overlap guard, before any model is loaded
            seen_file = Path(adapter) / TRAIN_QUESTIONS
            if not seen_file.is_file():
                model.read_stock_config(adapter)  # a clear "no trained adapter" error when it is not one
                raise StockToolError(f"{adapter} has no {TRAIN_QUESTIONS}: cannot prove the eval rows are unseen")
            seen = set(seen_file.read_text(encoding="utf-8").split())
            overlap = [r.origin for r in rows if ins.fingerprint(r) in seen]
            if overlap:
                raise StockToolError(
                    f"{len(overlap)} of {len(rows)} eval rows were in {adapter}'s training data (e.g. {overlap[:3]}); "
                    "score on rows kept apart"
                )
        base_cfg = self.model_cfg
        if adapters and not self.model_cfg.model_name:
            saved = model.read_stock_config(adapters[0])
            base_cfg = replace(self.model_cfg, model_name=saved["base_model"])
        out_dir = Path(self.train_settings.output_dir) / (cfg.run_name or f"compare_{Path(cfg.eval_file).stem}")
        results = {}
        for name in names:
            loaded = model.load_untuned(base_cfg) if name == "base" else model.load_for_inference(name)
            template = loaded.config.get("instruct", {}).get("template", cfg.template)
            prompts = [ins.to_example(r, template)["prompt"] for r in rows]
            answers = model.generate(loaded, prompts, cfg.max_new_tokens, batch_size=cfg.batch_size)
            del loaded
            self._release()
            label = "base" if name == "base" else Path(name).name
            write_jsonl(
                out_dir / f"answers_{label}.jsonl",
                [
                    {"origin": r.origin, "question": r.question, "gold": r.gold or r.output, "answer": a, "model": name}
                    for r, a in zip(rows, answers, strict=True)
                ],  # fmt: skip
            )
            results[label] = {"model": name, "template": template, "scores": ins.score(rows, answers, cfg.bootstrap),
                              "answers": answers}  # fmt: skip
        write_json(out_dir / "scores.json", {k: {**v, "answers": None} for k, v in results.items()})
        text = _comparison_markdown(cfg.eval_file, rows, results, skipped)
        from utils import atomic_write_text

        atomic_write_text(out_dir / "comparison.md", text)
        print(text.split("\n## Side by side")[0])
        print(f"comparison: {out_dir / 'comparison.md'}")
        return results

    # ----------------------------------------------------------------- stage 5: evaluation

    def evaluate(self, cfg: EvalConfig, generators: dict | None = None) -> dict:
        """Walk-forward forecasts over the test period by the tuned and untuned LLMs, the LSTM and the naive
        baselines, on the same windows; metrics with bootstrap intervals, a backtest and a report.

        `generators` maps "tuned"/"base" to `fn(prompts, max_new_tokens) -> answers`, replacing the
        real models (tests use it); by default the models are loaded from --model-dir.
        """
        import report

        wanted = _parse_models(cfg.models)
        adapter = self._adapter_config(required=bool({"tuned", "base"} & set(wanted)))
        train_data = _data_config_from(adapter["data"]) if adapter else self.data
        test_start, test_end, seen_end = self._test_period(cfg, adapter)
        companies = self._eval_companies(adapter)
        window_text = cfg.windows or _adapter_windows(adapter) or self.data.windows
        windows = _parse(dataset.parse_windows, window_text, "--windows")
        fields = (adapter or {}).get("dataset", {}).get("fields") or self.fields
        first_day = dt.date(train_data.year, train_data.month, 1)
        prices = {
            c.code: market_data.update_prices(c, self.cache, first_day, test_end, self.client()) for c in companies
        }
        columns = [dataset.FIELDS[f][1] for f in fields]
        tests = self._test_windows(companies, prices, windows, test_start, test_end, cfg.stride, columns)
        print(
            f"evaluation: {len(tests):,} test windows ({', '.join(w.name for w in windows)}) over "
            f"{test_start} → {test_end}, {len(companies)} companies; models: baselines + {', '.join(wanted)}"
        )
        predictions, answers, timings, lstm_figures = {}, [], {}, {}
        for name, baseline in ev.BASELINES.items():
            predictions[name] = [baseline(w) for w in tests]
        if "lstm" in wanted:
            cutoff = pd.Timestamp(adapter["dataset"]["cutoff"]) if adapter else None
            pool_prices = {
                code: f[f.index <= pd.Timestamp(seen_end or test_start - dt.timedelta(days=1))]
                for code, f in prices.items()
            }
            predictions["lstm"], lstm_figures = self._lstm_forecasts(
                tests, windows, pool_prices, fields, train_data, cutoff, cfg
            )
        run_dir = Path(self.train_settings.output_dir) / (cfg.run_name or f"eval_{test_start}_{test_end}")
        cache_dir = run_dir.with_name(run_dir.name + ".answers")
        context = self.context_builder(train_data, prices)  # as the adapter was trained: same signals and news
        for name in ("tuned", "base"):
            if name in wanted:
                generate = (generators or {}).get(name) or self._generator(name, cfg.batch_size)
                cache = AnswerCache(cache_dir / f"{name}.jsonl", self._model_identity(name, adapter, generators))
                predictions[name], model_answers, timings[name] = _llm_forecasts(
                    name, tests, fields, generate, cache, context
                )
                answers += model_answers
                del generate  # frees the model before the next one loads
        self._release()
        rows = ev.add_errors(
            pd.concat([ev.forecast_rows(m, tests, p) for m, p in predictions.items()], ignore_index=True)
        )
        table = ev.metrics_table(rows, n_boot=cfg.bootstrap, seed=cfg.seed)
        costs = ev.Costs(cfg.brokerage, cfg.sell_tax)
        one_step = min(windows, key=lambda w: (w.future, w.past)).name
        backtests = {
            m: ev.backtest(rows[(rows["model"] == m) & (rows["window"] == one_step) & (rows["step"] == 1)], costs)
            for m in predictions
        }
        context = {
            "test_start": str(test_start),
            "test_end": str(test_end),
            "adapter": self.model_cfg.model_dir if adapter else None,
            "base_model": (adapter or {}).get("base_model"),
            "adapter_data_last_date": str(seen_end) if seen_end else None,
            "adapter_training": (adapter or {}).get("dataset"),
            "companies": [c.code for c in companies],
            "windows": [w.name for w in windows],
            "fields": fields,
            "backtest_window": one_step,
            "costs": asdict(costs),
            "config": asdict(cfg),
            "generation": timings,
            "lstm": lstm_figures,
        }
        paths = report.write_report(run_dir, context, rows, table, backtests, answers)
        shutil.rmtree(cache_dir, ignore_errors=True)  # the answers are in the report's answers.jsonl now
        print(report.headline_text(table, backtests, context))
        print(f"report: {paths['report']} (metrics {paths['metrics']})")
        return {"table": table, "backtests": backtests, "paths": paths, "context": context}

    def _adapter_config(self, required: bool) -> dict | None:
        import model

        directory = Path(self.model_cfg.model_dir)
        if required or (directory / model.STOCK_CONFIG).is_file():
            return model.read_stock_config(str(directory))
        return None

    def _test_period(self, cfg: EvalConfig, adapter: dict | None):
        """(test_start, test_end, last day the adapter saw). Refuses a period the adapter was trained on."""
        seen = None
        if adapter:
            seen = adapter.get("dataset", {}).get("last_date") or adapter.get("data", {}).get("end_date")
            if not seen:
                raise StockToolError(
                    f"{self.model_cfg.model_dir} does not record the last day it was trained on; "
                    "retrain it with --end-date so that an evaluation can keep to later days"
                )
            seen = dt.date.fromisoformat(seen)
        if cfg.test_start:
            start = _date(cfg.test_start, "--test-start")
        elif seen:
            start = seen + dt.timedelta(days=1)
        else:
            raise StockToolError("--test-start is required when no trained adapter is evaluated")
        end = _date(cfg.test_end, "--test-end") if cfg.test_end else self.date_range()[1]
        if end < start:
            raise StockToolError(f"--test-end {end} is before --test-start {start}")
        if seen and seen >= start:
            raise StockToolError(
                f"the adapter in {self.model_cfg.model_dir} was trained on prices up to {seen}, which overlaps the "
                f"test period from {start}: that would score it on days it has seen. Use --test-start after {seen} "
                "or retrain with an earlier --end-date"
            )
        return start, end, seen

    def _eval_companies(self, adapter: dict | None) -> list[Company]:
        if self.data.company_list_file or not adapter or not adapter.get("companies"):
            return self.companies()
        return [Company.from_saved(c) for c in adapter["companies"]]

    def _test_windows(self, companies, prices, windows, test_start, test_end, stride, columns):
        if stride < 1:
            raise StockToolError("--eval-stride must be at least 1")
        tests = []
        start, end = pd.Timestamp(test_start), pd.Timestamp(test_end)
        for window in windows:
            found = []
            for c in companies:
                found += ev.test_windows(prices[c.code], c.code, c.name_zh, window, start, end, stride, columns)
            if not found:
                log.warning("no %s test window fits in %s → %s", window.name, test_start, test_end)
            tests += found
        if not tests:
            days = max((int(((f.index >= start) & (f.index <= end)).sum()) for f in prices.values()), default=0)
            raise StockToolError(
                f"no test window fits in {test_start} → {test_end}: the price data has {days} trading day(s) there "
                f"and the shortest window needs {min(w.future for w in windows)} (check --test-start/--test-end, "
                "--end-date and that prices reach the test period)"
            )
        return tests

    def _lstm_forecasts(self, tests, windows, prices, fields, train_data, cutoff, cfg):
        """Train one LSTM per window type on the LLM's training windows, then forecast the test windows."""
        import model

        predictions: list = [None] * len(tests)
        figures = {}
        if cutoff is None:  # no adapter: the same rule as `build_dataset`, on the days before the test period
            all_dates = [d for f in prices.values() for d in f.index]
            cutoff = dataset.split_cutoff(all_dates, train_data.val_fraction) if len(set(all_dates)) > 1 else None
        for window in windows:
            train, val = training_windows(prices, window, fields, train_data.stride, cutoff)
            train_x = [ev.window_features(past) for _, past, _ in train]
            train_y = [ev.window_targets(future, float(past["Close"].iloc[-1])) for _, past, future in train]
            val_x = [ev.window_features(past) for _, past, _ in val]
            val_y = [ev.window_targets(future, float(past["Close"].iloc[-1])) for _, past, future in val]
            index = [i for i, w in enumerate(tests) if w.window == window]
            if not index:
                continue
            if not train_x:
                log.warning("LSTM %s: no training window; its forecasts count as failures", window.name)
                continue
            fitted = model.fit_lstm(
                train_x, train_y, val_x, val_y, model.LstmSettings(epochs=cfg.lstm_epochs, seed=cfg.seed)
            )
            figures[window.name] = fitted["figures"]
            out = model.predict_lstm(fitted, [ev.window_features(tests[i].past) for i in index])
            for i, pred in zip(index, out, strict=True):
                predictions[i] = ev.targets_to_candles(pred, tests[i].last_close)
            log.info("LSTM %s: %s", window.name, fitted["figures"])
        return predictions, figures

    def _generator(self, name: str, batch_size: int):
        """fn(prompts, max_new_tokens) -> answers for the tuned or the untuned model, loaded on first use."""
        import model

        self._release()
        state: dict = {}

        def generate(prompts, max_new_tokens):
            if "loaded" not in state:
                state["loaded"] = model.load_for_inference(self.model_cfg.model_dir, adapter=name == "tuned")
            return model.generate(state["loaded"], prompts, max_new_tokens, batch_size=batch_size)

        return generate

    def _model_identity(self, name: str, adapter: dict | None, generators: dict | None) -> str:
        """What the cached answers depend on: the adapter's weights file (tuned) or the base model's name."""
        if generators and name in generators:
            return f"{name}:injected"
        if name == "tuned":
            weights = Path(self.model_cfg.model_dir) / "adapter_model.safetensors"
            stat = weights.stat() if weights.is_file() else None
            return f"tuned:{weights.resolve()}:{stat.st_size if stat else 0}:{stat.st_mtime_ns if stat else 0}"
        return f"base:{(adapter or {}).get('base_model')}"

    def _release(self) -> None:
        import gc

        self._loaded = None
        gc.collect()
        if "torch" in sys.modules and sys.modules["torch"].cuda.is_available():
            sys.modules["torch"].cuda.empty_cache()


def training_windows(prices: dict, window, fields, stride: int, cutoff: pd.Timestamp | None):
    """([(code, past, future)] train, [...] validation): exactly the windows `build_dataset` gives the LLM
    (same spans, same cutoff rule), as frames for the LSTM."""
    train, val = [], []
    split_at = cutoff if cutoff is not None else pd.Timestamp.max
    for code, frame in prices.items():
        spans, _ = dataset.window_spans(frame, window, fields, stride)
        for start, mid, end in spans:
            past, future = frame.iloc[start:mid], frame.iloc[mid:end]
            if future.index[-1] < split_at:
                train.append((code, past, future))
            elif past.index[0] >= split_at:
                val.append((code, past, future))
    return train, val


class AnswerCache:
    """Generated answers, appended as each chunk finishes, so an interrupted evaluation resumes where it
    stopped instead of generating everything again. Keys cover the model's identity, the prompt and the
    token budget; a torn last line (a crash mid-write) is ignored."""

    def __init__(self, path: Path, identity: str):
        self.path, self.identity = path, identity
        self.answers: dict[str, str] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                self.answers[row["key"]] = row["answer"]

    def key(self, prompt: list[dict], max_new_tokens: int) -> str:
        text = json.dumps([self.identity, max_new_tokens, prompt], ensure_ascii=False)
        return hashlib.sha1(text.encode("utf-8")).hexdigest()

    def add(self, keys: list[str], answers: list[str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            for key, answer in zip(keys, answers, strict=True):
                fh.write(json.dumps({"key": key, "answer": answer}, ensure_ascii=False) + "\n")
                self.answers[key] = answer
            fh.flush()
            os.fsync(fh.fileno())


def _llm_forecasts(name: str, tests, fields, generate, cache: AnswerCache, context, chunk: int = 256):
    """Prompt (with the as-of context), generate (batched, one window type at a time, cached chunk by
    chunk), parse strictly. A failure stays a failure."""
    import time

    predictions, answers = [None] * len(tests), []
    started, generated, reused = time.perf_counter(), 0, 0
    for window in sorted({w.window for w in tests}, key=lambda w: (w.future, w.past)):
        index = [i for i, w in enumerate(tests) if w.window == window]
        max_new = dataset.answer_token_budget(window.future, fields)
        contexts = [context(tests[i].code)(tests[i].origin) for i in index]
        prompts = [
            [{"role": "user", "content": dataset.user_prompt(tests[i].name, tests[i].past, window.future, fields, c)}]
            for i, (c, _) in zip(index, contexts, strict=True)
        ]
        keys = [cache.key(p, max_new) for p in prompts]
        missing = [j for j, k in enumerate(keys) if k not in cache.answers]
        reused += len(prompts) - len(missing)
        for c in range(0, len(missing), chunk):
            part = missing[c : c + chunk]
            cache.add([keys[j] for j in part], generate([prompts[j] for j in part], max_new))
            generated += len(part)
        for i, key, (_, kind) in zip(index, keys, contexts, strict=True):
            w, raw, problem = tests[i], cache.answers[key], ""
            try:
                parsed = dataset.parse_answer(raw, fields, expected=window.future)
                problems = dataset.validate_forecast(parsed, w.origin)
                if problems:
                    problem = "invalid: " + "; ".join(problems[:3])
                else:
                    predictions[i] = parsed[ev.OHLC].to_numpy(dtype=float)
            except dataset.ForecastParseError as exc:
                problem = f"unparseable: {exc}"
            answers.append(
                {
                    "model": name,
                    "code": w.code,
                    "window": window.name,
                    "origin": f"{w.origin:%Y-%m-%d}",
                    "context": kind,
                    "valid": predictions[i] is not None,
                    "problem": problem,
                    "answer": raw,
                }
            )
        log.info("%s %s: %d forecasts", name, window.name, len(index))
    seconds = time.perf_counter() - started
    valid = sum(p is not None for p in predictions)
    rate = generated / seconds if generated and seconds > 0 else None
    print(
        f"{name}: {generated:,} forecasts generated in {seconds:.1f} s"
        + (f" ({rate:.1f}/s)" if rate else "")
        + (f", {reused:,} reused from an interrupted run" if reused else "")
        + f"; {valid:,} of {len(tests):,} usable"
    )
    timing = {"forecasts": generated, "reused": reused, "seconds": round(seconds, 2), "valid": valid}
    return predictions, answers, timing | {"forecasts_per_s": round(rate, 2) if rate else None}


def _parse_models(text: str) -> list[str]:
    models = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in models if m not in EVAL_MODELS]
    if unknown:
        raise StockToolError(f"--eval-models: unknown {unknown}; choose from {', '.join(EVAL_MODELS)}")
    return models


def _adapter_windows(adapter: dict | None) -> str | None:
    names = (adapter or {}).get("dataset", {}).get("windows")
    return ",".join(names) if names else None


def _data_config_from(saved: dict) -> DataConfig:
    """An adapter's saved data settings; adapters from before signals and news had neither in their prompts."""
    known = {f for f in DataConfig.__dataclass_fields__}
    return DataConfig(**({"signals": False, "news": False} | {k: v for k, v in saved.items() if k in known}))


def _date(text: str, flag: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise StockToolError(f"{flag} {text!r} is not a date YYYY-MM-DD") from exc


def _parse_mix(text: str) -> dict:
    """'news:0.6,market:0.4' → {"news": 0.6, "market": 0.4}."""
    out = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        kind, _, weight = part.partition(":")
        if kind not in ("news", "market"):
            raise StockToolError(f"--instruct-mix {part!r}: kinds are news and market (earnings needs data we lack)")
        try:
            out[kind] = float(weight)
        except ValueError:
            raise StockToolError(f"--instruct-mix {part!r}: the share after ':' is not a number") from None
    if not out or sum(out.values()) <= 0:
        raise StockToolError("--instruct-mix needs a positive share, e.g. news:0.6,market:0.4")
    return out


def _comparison_markdown(eval_file, rows, results: dict, skipped: int) -> str:
    def ci(pair):
        return f" [{pair[0]:.3f}, {pair[1]:.3f}]" if pair else ""

    lines = [f"# Comparison on {eval_file}", "", f"{len(rows):,} rows ({skipped} bad rows skipped).", "",
             "| model | task | n | score [95% CI] | notes |", "| --- | --- | ---: | ---: | --- |"]  # fmt: skip
    for label, result in results.items():
        for task, s in result["scores"].items():
            if task == "free_text":
                score, notes = f"ROUGE-L {s['rouge_l']:.3f}{ci(s['rouge_l_ci95'])}", ""
            else:
                score = f"accuracy {s['accuracy']:.3f}{ci(s['accuracy_ci95'])}"
                notes = (
                    f"macro-F1 {s['macro_f1']:.3f}; majority class {s['majority_class_accuracy']:.3f}; "
                    f"{s['unlabelled_answers']} answers name no label"
                    if task == "sentiment"
                    else "exact letters"
                )
            lines.append(f"| {label} | {task} | {s['n']:,} | {score} | {notes} |")
    lines += ["", "## Side by side", ""]
    for i, row in enumerate(rows[:5]):
        lines += [f"### {i + 1}. {row.question[:300]}", "", f"- gold: {(row.gold or row.output)[:300]}"]
        lines += [f"- {label}: {result['answers'][i][:300]!r}" for label, result in results.items()]
        lines.append("")
    return "\n".join(lines) + "\n"


def _is_common_stock(code: str) -> bool:
    """A listed common stock per twstock's table (not an ETF, warrant or bond)."""
    from twstock.codes import codes

    info = codes.get(code)
    return info is not None and info.type == "股票"


def _from_market(frame: pd.DataFrame, company: Company, start: dt.date, end: dt.date) -> pd.DataFrame:
    sliced = frame.loc[pd.Timestamp(start) : pd.Timestamp(end)]
    if sliced.empty:
        raise StockToolError(f"the market CSV has no prices for {company.code} between {start} and {end}")
    return sliced


def _read_forecast(company: Company, history: pd.DataFrame, raw: str, fields: list[str], future: int) -> Forecast:
    """Parse and validate one answer; problems are recorded, never repaired."""
    result = Forecast(company.code, company.name_zh, history, raw)
    try:
        result.forecast = dataset.parse_answer(raw, fields, expected=future)
    except dataset.ForecastParseError as exc:
        result.problems = [f"unparseable answer: {exc}"]
        return result
    result.problems = dataset.validate_forecast(result.forecast, history.index[-1])
    result.notes = [
        f"{d:%Y-%m-%d} is a {d:%A}: the exchange does not trade on weekends"
        for d in result.forecast.index
        if d.weekday() >= 5
    ]
    return result


def _with_english_name(company: Company) -> Company:
    """Add the English name from the shipped company list (twstock has none), for chart titles."""
    try:
        entries = json.loads(DEFAULT_COMPANY_FILE.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return company
    names = {str(e.get("code")): e.get("name_en", "") for e in entries if isinstance(e, dict)}
    return replace(company, name_en=names.get(company.code, "")) if names.get(company.code) else company


def _parse(parser, text: str, flag: str):
    try:
        return parser(text)
    except ValueError as exc:
        raise StockToolError(f"{flag}: {exc}") from exc


def forecast_table(forecast: Forecast) -> str:
    frame = forecast.forecast
    return frame.to_string(float_format=lambda v: f"{v:,.2f}") if frame is not None else ""


def plot_forecast(past: pd.DataFrame, forecast: pd.DataFrame, company: Company, out_dir: Path) -> Path:
    """Candles of the known days then the forecast days (blue/orange, after a dashed line), with volume."""
    import matplotlib

    matplotlib.use("Agg")
    import mplfinance as mpf

    columns = ["Open", "High", "Low", "Close", "Volume"]
    volume = "Volume" in forecast.columns
    combined = pd.concat([past[columns], forecast.reindex(columns=columns)])
    known = [None] * len(past)
    predicted = ["tab:blue" if r.Close >= r.Open else "tab:orange" for r in forecast.itertuples()]
    style = mpf.make_mpf_style(base_mpf_style="yahoo")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{company.code}_{past.index[-1]:%Y%m%d}_{len(past)}to{len(forecast)}.png"
    tmp = path.with_name(f".{path.name}.tmp.png")
    boundary = past.index[-1] + (forecast.index[0] - past.index[-1]) / 2
    title = f"{company.code} {company.name_en or ''}: {len(past)} known + {len(forecast)} forecast days".replace(
        "  ", " "
    )
    mpf.plot(
        combined,
        type="candle",
        volume=volume and not combined["Volume"].isna().any(),
        style=style,
        marketcolor_overrides=known + predicted,
        vlines={"vlines": [boundary], "linestyle": "--", "colors": "gray", "linewidths": 1},
        title=title + "\n(forecast: blue up / orange down, right of the dashed line)",
        figsize=(10, 6),
        savefig={"fname": str(tmp), "dpi": 110, "bbox_inches": "tight"},
    )
    tmp.replace(path)
    return path


def print_forecast(result: Forecast) -> None:
    print(f"{result.code} {result.name}: last known day {result.past.index[-1]:%Y-%m-%d}")
    if result.forecast is not None:
        print(forecast_table(result))
    for note in result.notes:
        print(f"note: {note}")
    if result.problems:
        print("The answer is not a usable forecast:")
        for problem in result.problems:
            print(f"  - {problem}")
        print("Raw model answer:\n" + result.raw_answer)
    if result.chart:
        print(f"chart: {result.chart}")
