"""The pipeline as a straight line: companies → price cache → examples JSONL → adapter → forecast + chart.

`StockPredictor` holds the read-only configs built once by `main.py` and runs each stage; every
stage leaves a file behind, so any one can be rerun without refetching or retraining.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pandas as pd

import dataset
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
    ):
        self.data, self.model_cfg, self.lora, self.train_settings = data, model, lora, train_settings
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
            raise StockToolError(
                "--choose-stock needs market-wide data and is not available in this version; "
                "pass --company-list-file (the default is the spec's 41 companies)"
            )
        return market_data.load_company_list(self.data.company_list_file or DEFAULT_COMPANY_FILE)

    def client(self) -> ExchangeClient | None:
        if self.data.offline:
            return None
        if self._client is None:
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
        for company in tqdm(companies, desc="examples", unit="company", disable=len(companies) < 3):
            frame = prices[company.code]
            for window in self.windows:
                if len(frame) < window.past + window.future:
                    log.warning("%s has %d trading days, too few for window %s", company.code, len(frame), window.name)
                    continue
                built, bad = dataset.build_examples(
                    frame, company.name_zh, company.code, window, self.fields, self.data.stride
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
            "windows": [w.name for w in self.windows],
            "fields": self.fields,
            "companies": [c.code for c in companies],
            "train_examples": len(train),
            "val_examples": len(val),
            "dropped_straddling_cutoff": straddling,
            "skipped_blank_fields": skipped,
            "per_window": {w.name: sum(e["meta"]["window"] == w.name for e in train) for w in self.windows},
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
        import model

        if past < 1 or future < 1:
            raise StockToolError("--past and --future must be at least 1")
        loaded = self._model()
        fields = loaded.config.get("dataset", {}).get("fields", self.fields)
        company = _with_english_name(market_data.resolve_company({"code": code}))
        end = self.date_range()[1]
        start = end - dt.timedelta(days=max(60, past * 3))  # calendar days covering `past` trading days
        frame = market_data.update_prices(company, self.cache, start, end, self.client())
        if len(frame) < past:
            raise StockToolError(f"{code} has only {len(frame)} trading days cached before {frame.index[-1]:%Y-%m-%d}")
        history = frame.iloc[-past:]
        prompt = [{"role": "user", "content": dataset.user_prompt(company.name_zh, history, future, fields, context)}]
        max_new = 24 + future * 64
        raw = model.generate(loaded, [prompt], max_new_tokens=max_new)[0]
        result = Forecast(code, company.name_zh, history, raw)
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
        if not result.problems:  # an impossible candle is reported, never drawn as if it were a forecast
            result.chart = plot_forecast(
                history, result.forecast, company, Path(self.train_settings.output_dir) / "forecasts"
            )
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
