"""The data settings: which companies, which days, how windows and prompts are cut; and the types they are
parsed into once (window types, price fields, the canonical frame's columns).
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass

from config.defaults import (
    DEFAULT_WINDOWS,  # noqa: F401 (the default of --windows, kept beside its flag)
)
from utils import (
    taipei_today,
)

if typing.TYPE_CHECKING:
    pass
from config.defaults import FIRST_YEAR
from config.flags import AT_LEAST_0, AT_LEAST_1, SHARE, between, existing_file, folder, option

FRAME_COLUMNS = {
    "open": "Open",
    "high": "High",
    "low": "Low",
    "close": "Close",
    "capacity": "Volume",
    "turnover": "Turnover",
    "change": "Change",
    "transaction": "Transaction",
}


@dataclass(frozen=True)
class WindowType:
    past: int
    future: int

    @property
    def name(self) -> str:
        return f"{self.past}:{self.future}"


def parse_windows(text: str) -> list[WindowType]:
    """'1:1,5:5,20:5,60:20' → WindowTypes. Any positive past:future pair is allowed."""
    windows = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", part)
        if not match or int(match[1]) < 1 or int(match[2]) < 1:
            raise ValueError(f"window {part!r} is not 'past:future' in trading days, e.g. 5:5")
        windows.append(WindowType(int(match[1]), int(match[2])))
    if len(set(windows)) != len(windows):
        raise ValueError(f"windows {text!r} repeat a window type")
    return windows


# How prompts and answers write prices (`prompts.prompt_format`): the spec's NTD prices, % changes from the last
# close, or candles (close and open as % changes, then unsigned wicks).
ANSWER_FORMATS = ("absolute", "change", "candle")

# field name → (label in the prompt, canonical frame column (the price cache's), integer?)
INTEGER_FIELDS = ("capacity", "turnover", "transaction")


FIELDS = {name: (name.capitalize(), column, name in INTEGER_FIELDS) for name, column in FRAME_COLUMNS.items()}


# The spec's prompt example (ohlcv) and the three column sets of its experiments (all, turnover, basic).
FIELD_SETS = {
    "ohlcv": ["open", "high", "low", "close", "capacity"],
    "all": ["capacity", "turnover", "open", "high", "low", "close", "change", "transaction"],
    "turnover": ["turnover", "open", "high", "low", "close", "transaction"],
    "basic": ["open", "high", "low", "close", "transaction"],
}


PRICE_FIELDS = ("open", "high", "low", "close")


def parse_fields(text: str) -> list[str]:
    """A field-set name (ohlcv, all, turnover, basic) or a comma list of field names."""
    if text in FIELD_SETS:
        return list(FIELD_SETS[text])
    fields = [f.strip().lower() for f in text.split(",") if f.strip()]
    unknown = [f for f in fields if f not in FIELDS]
    if unknown or not fields:
        raise ValueError(
            f"fields {text!r}: unknown {unknown}; use one of {sorted(FIELD_SETS)} or a comma list of {list(FIELDS)}"
        )
    missing = [f for f in PRICE_FIELDS if f not in fields]
    if missing:
        raise ValueError(f"fields {text!r} must include {list(PRICE_FIELDS)} (a forecast is a candle)")
    return fields


OHLC = ["Open", "High", "Low", "Close"]


DEFAULT = "XTAI"


LIST_NAMES = 'python3 -c "import exchange_calendars as xc; print(xc.get_calendar_names())"'


# what --calendar must be, as the command line's check says it
NAME_RULE = f"a calendar of exchange-calendars, e.g. XTAI (Taiwan), XNYS (New York); list them: {LIST_NAMES}"


def unknown_name(name: str) -> str:
    """The one-line refusal of a calendar name exchange-calendars does not have."""
    return f"--calendar {name}: must be {NAME_RULE}"


def is_calendar_name(name: str) -> bool:
    """Whether exchange-calendars has a calendar (or an alias, e.g. NYSE) of that name."""
    import exchange_calendars as xc

    return name in xc.get_calendar_names(include_aliases=True)


@dataclass(frozen=True)
class DataConfig:
    data_dir: str = option(
        "data",
        "where prices (<data-dir>/prices/<code>.csv) and examples are kept; a folder of price CSVs works as the "
        "cache too",
        group="data",
        check=folder,
    )
    company_list_file: str | None = option(
        None,
        "JSON list of companies to train on, by name_zh or code (default: the spec's 41, data/companies.json)",
        group="data",
        check=existing_file,
    )
    year: int = option(
        2024,
        "collect prices from this year ...",
        group="data",
        check=between(
            FIRST_YEAR,
            taipei_today().year,
            f"a year from {FIRST_YEAR} (the exchange opened) to {taipei_today().year}, not in the future",
        ),
    )
    month: int = option(12, "... and month, up to --end-date", group="data", check=("1-12", lambda v: 1 <= v <= 12))
    end_date: str | None = option(
        None, "last day of prices to use, YYYY-MM-DD (default: today in Taipei)", group="data", check="date"
    )
    offline: bool = option(False, "never call the exchanges: use the price cache as it is", group="data", switch=True)
    calendar: str = option(
        DEFAULT,
        "the exchange's trading calendar (exchange-calendars' name) that dates live forecasts: XTAI, the Taiwan "
        "Stock Exchange; e.g. XNYS for New York prices",
        group="data",
        check=(NAME_RULE, is_calendar_name),
    )
    choose_stock: int = option(
        0,
        "instead of a company list, pick N listed stocks for each of twstock's four buy and four sell points",
        group="data",
        check=AT_LEAST_0,
    )
    windows: str = option(DEFAULT_WINDOWS, "window types past:future in trading days", group="data", cpu="1:1")
    fields: str = option(
        "ohlcv",
        "price fields in prompts: ohlcv, all, turnover, basic (the spec's column sets) or a comma list",
        group="data",
    )
    answer_format: str = option(
        "change",
        "how prompts and answers write prices: change (%% from the last close, measured better: README), "
        "candle (close and open as %% changes, then unsigned wicks: every answer a possible candle) "
        "or absolute (the spec's NTD prices)",
        group="data",
        choices=["change", "candle", "absolute"],
    )
    stride: int = option(1, "trading days between consecutive windows", group="data", check=AT_LEAST_1)
    val_fraction: float = option(0.1, "latest share of trading days held out for validation", group="data", check=SHARE)
    max_val_examples: int = option(
        200,
        "validation examples evaluated, spread over the held-out days",
        group="data",
        cpu=4,
        check=AT_LEAST_1,
    )
    price_source: str = option(
        "twstock",
        "where missing prices come from: the exchanges (twstock) or the trading server (--api-url)",
        group="data",
        choices=["twstock", "server"],
    )
    signals: bool = option(
        False,
        "1/0: twstock's best four points in the prompt (0 by default: measured better without them)",
        group="context",
    )
    news: bool = option(
        True, "1/0: stored news in the prompt; when training online with NEWSAPI_KEY, collect it first", group="context"
    )
    news_languages: str = option(
        "both", "news languages used", group="context", flag="--news-language", choices=["zh", "en", "both"]
    )
    news_max_articles: int = option(5, "headlines per prompt at most", group="context", check=AT_LEAST_0)
    # estimated: one token per CJK character, one per four other characters
    news_max_tokens: int = option(300, "estimated tokens of news per prompt at most", group="context", check=AT_LEAST_0)
    news_days: int = option(
        30, "collect articles of the last N days (free plan ~30)", group="context", check=between(1, 3650)
    )
    news_daily_limit: int = option(100, "newsapi requests a day (free plan 100)", group="context", check=AT_LEAST_0)
    news_csv: str | None = option(
        None,
        "import headlines (code,date,title[,description,source,url]); UTF-8, UTF-16 or Big5",
        group="context",
        check=existing_file,
    )
    market_csv: str | None = option(
        None,
        "market-wide daily CSV (code + twstock columns) for --choose-stock offline",
        group="context",
        check=existing_file,
    )
