"""The settings every stage reads, and the adapter's saved settings read back in one place.

`main.py` builds these from the command line; `stock_predictor` and `walk_forward` import them
from here, so no stage module needs the `StockPredictor` facade for its settings.
"""

from __future__ import annotations

from dataclasses import dataclass

import dataset
from utils import StockToolError


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
    answer_format: str = "change"  # "absolute": the spec's NTD prices; "change": % from the last close
    stride: int = 1
    val_fraction: float = 0.1
    max_val_examples: int = 200
    price_source: str = "twstock"  # or "server": the trading server's price history
    signals: bool = False  # twstock's best four points in the prompt; off: measured better
    news: bool = True  # stored news (as of each window's last day) in the prompt; collected with NEWSAPI_KEY
    news_languages: str = "both"  # zh, en or both
    news_max_articles: int = 5
    news_max_tokens: int = 300  # estimated: one token per CJK character, one per four other characters
    news_days: int = 30  # how far back to collect (newsapi's free plan: ~30 days)
    news_daily_limit: int = 100  # newsapi requests a day (the free plan's limit)
    news_csv: str | None = None  # headlines to import into the store: code,date,title[,description,source,url]
    market_csv: str | None = None  # market-wide daily CSV for --choose-stock instead of the exchanges


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


def trained_answer_format(config: dict) -> str:
    """The answer format an adapter was trained with; adapters from before the change format wrote prices."""
    return config.get("dataset", {}).get("answer_format", "absolute")


def data_config_from(saved: dict) -> DataConfig:
    """An adapter's saved data settings; adapters from before signals and news had neither in their prompts."""
    known = {f for f in DataConfig.__dataclass_fields__}
    old = {"signals": False, "news": False, "answer_format": "absolute"}
    return DataConfig(**(old | {k: v for k, v in saved.items() if k in known}))


def parse_flag(parser, text: str, flag: str):
    """A flag's text through its parser; a ValueError becomes one error line naming the flag."""
    try:
        return parser(text)
    except ValueError as exc:
        raise StockToolError(f"{flag}: {exc}") from exc
