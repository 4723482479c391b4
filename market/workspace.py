"""What every stage shares, as one small value: the data settings, the examples' and the context's, where files
go, the price cache, the exchange client and the news store. `StockPredictor` builds one and passes it to each
stage (training data, forecast, walk-forward evaluation, instruction tasks), so a stage depends on these and
nothing else.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from config.context_args import ContextConfig
from config.data_args import DataConfig, ExamplesConfig
from config.defaults import SEED
from market import company_list, daily_reports, exchanges, price_files, prompt_context
from market.company_list import Company
from market.exchanges import ExchangeClient
from utils import StockToolError, is_writable_dir, taipei_today

log = logging.getLogger("stock.workspace")


@dataclass
class Workspace:
    """The data, examples and context settings, the price cache under --data-dir, the exchange client (`exchange`,
    or made on first use by `make_client`: the exchanges' by default, the trading server's as the facade asks; none
    with --offline), the news store and the seed of every random choice."""

    data: DataConfig = field(default_factory=DataConfig)
    examples: ExamplesConfig = field(default_factory=ExamplesConfig)
    context: ContextConfig = field(default_factory=ContextConfig)
    exchange: ExchangeClient | None = None
    newsapi_key: str | None = field(default=None, repr=False)  # kept out of the configs: they are saved
    seed: int = SEED
    make_client: Callable = ExchangeClient

    def __post_init__(self):
        self.output_dir = Path(self.data.output_dir)
        self.cache = price_files.PriceCache(price_files.resolve_price_dir(self.data.data_dir))
        self._chosen: list[Company] | None = None
        self._market_prices: dict[str, pd.DataFrame] = {}

    @property
    def windows(self):
        return self.examples.windows

    @property
    def fields(self) -> tuple[str, ...]:
        return self.examples.fields

    # ----------------------------------------------------------------- the period and the companies

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
                self._chosen = self._choose_stocks()
            return self._chosen
        return company_list.load_company_list(
            self.data.company_list_file or company_list.DEFAULT_COMPANY_FILE, self.cache
        )

    def company(self, code: str) -> Company:
        """The company of `code`: twstock's, or one of another market whose price file the cache holds in the
        common Date,Open,High,Low,Close,Volume layout."""
        return company_list.resolve_company({"code": code}, self.cache)

    def _choose_stocks(self) -> list[Company]:
        """N listed stocks for each of twstock's four buy and four sell points on the latest market day."""
        client = None if self.data.offline or self.data.market_csv else self.client()
        chosen, market_prices = daily_reports.choose_stocks(
            self.data, self.date_range()[1], client, self.store_dir("market"), self.seed
        )
        if market_prices is not None:  # the market CSV is also the chosen stocks' price history (used offline)
            self._market_prices = market_prices
        return chosen

    def market_stocks(self, exclude) -> dict:
        """{code: (Company, frame)} of every other listed common stock over the period (`--universe market`)."""
        from market import universe

        client = None if self.data.offline or self.data.market_csv else self.client()
        return universe.market_stocks(self.data, self.date_range(), exclude, client, self.store_dir("market"))

    # ----------------------------------------------------------------- where files go

    def store_dir(self, name: str) -> Path:
        """`<data-dir>/<name>`, or `<output-dir>/<name>` when --data-dir is a folder of price CSVs."""
        if self.cache.directory == Path(self.data.data_dir):
            return self.output_dir / name
        return Path(self.data.data_dir) / name

    def examples_dir(self) -> Path:
        """`<data-dir>/examples`; `<output-dir>/examples` when --data-dir is someone else's folder of price
        CSVs (it is only read) or cannot be written."""
        fallback = self.output_dir / "examples"
        if self.cache.directory == Path(self.data.data_dir):
            return fallback
        preferred = Path(self.data.data_dir) / "examples"
        if is_writable_dir(preferred):
            return preferred
        log.info("%s is not writable; writing examples to %s", preferred, fallback)
        return fallback

    # ----------------------------------------------------------------- news and the prompt context

    def news_store(self):
        from market import news

        return news.NewsStore(self.store_dir("news"))

    def collect_news(self, companies: list[Company]) -> None:
        """Import --news-csv, then fetch newsapi.org (with a key, online) into the store."""
        prompt_context.collect_news(self.context, self.data.offline, self.news_store(), companies, self.newsapi_key)

    def context_builder(self, context: ContextConfig, prices: dict[str, pd.DataFrame]):
        """fn(code) → fn(as_of_date) → (context text, kind): the as-of context of `context`'s settings (an
        adapter's, as it was trained)."""
        return prompt_context.builder(context, prices, self.news_store() if context.news else None)

    # ----------------------------------------------------------------- prices

    def client(self) -> ExchangeClient | None:
        """Where missing months come from: the exchanges through twstock, or the trading server."""
        if self.data.offline:
            return None
        if self.exchange is None:
            self.exchange = self.make_client()
        return self.exchange

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
                prices[company.code] = self.update_prices(company, start, end)
        rows = sum(len(f) for f in prices.values())
        requests = self.exchange.requests_made if self.exchange else 0
        print(
            f"prices: {len(prices)} companies, {rows:,} trading days ({start} → {end}); "
            f"{requests} exchange request(s); cache {self.cache.directory}"
        )
        return prices

    def update_prices(
        self, company: Company, start: dt.date, end: dt.date, fields: list[str] | None = None
    ) -> pd.DataFrame:
        """One company's prices from `start` to `end`: the cache, topped up from the client. A price file in the
        common layout (no turnover, change or transaction) is refused for prompt `fields` (default --fields)
        that need them."""
        self.cache.check_fields(company.code, self.fields if fields is None else fields)
        return exchanges.update_prices(company, self.cache, start, end, self.client())


def _from_market(frame: pd.DataFrame, company: Company, start: dt.date, end: dt.date) -> pd.DataFrame:
    sliced = frame.loc[pd.Timestamp(start) : pd.Timestamp(end)]
    if sliced.empty:
        raise StockToolError(f"the market CSV has no prices for {company.code} between {start} and {end}")
    return sliced
