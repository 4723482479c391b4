"""The data settings: where prices are and which companies and days (`DataConfig`), how the examples' windows and
prompts are cut (`ExamplesConfig`); and the types their flags are parsed into once (window types, price fields,
the canonical frame's columns)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from config.defaults import DEFAULT_WINDOWS, FIRST_YEAR
from config.flags import AT_LEAST_0, AT_LEAST_1, SHARE, between, existing_file, folder, option, settle
from utils import taipei_today

# The canonical price frame's columns (mplfinance's, plus twstock's extras), by the field names prompts use.
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
OHLC = ["Open", "High", "Low", "Close"]


@dataclass(frozen=True)
class WindowType:
    """A window of `past` known trading days and the `future` ones to forecast (the spec's 1:1, 5:5, 20:5, 60:20)."""

    past: int
    future: int

    @property
    def name(self) -> str:
        return f"{self.past}:{self.future}"


def parse_windows(text: str) -> tuple[WindowType, ...]:
    """'1:1,5:5,20:5,60:20' → WindowTypes. Any positive past:future pair is allowed."""
    windows = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", part)
        if not match or int(match[1]) < 1 or int(match[2]) < 1:
            raise ValueError(f"window {part!r} is not 'past:future' in trading days, e.g. 5:5")
        windows.append(WindowType(int(match[1]), int(match[2])))
    if len(set(windows)) != len(windows):
        raise ValueError(f"windows {text!r} repeat a window type")
    return tuple(windows)


def windows_text(windows) -> str:
    return ",".join(w.name for w in windows)


# How prompts and answers write prices (`prompts.prompt_format`): the spec's NTD prices, % changes from the last
# close, candles (close and open as % changes, then unsigned wicks), or candles in units of volatility.
ANSWER_FORMATS = ("absolute", "change", "candle", "scaled")
# field name → (label in the prompt, canonical frame column (the price cache's), integer?)
INTEGER_FIELDS = ("capacity", "turnover", "transaction")
FIELDS = {name: (name.capitalize(), column, name in INTEGER_FIELDS) for name, column in FRAME_COLUMNS.items()}
# The spec's prompt example (ohlcv) and the three column sets of its experiments (all, turnover, basic).
FIELD_SETS = {
    "ohlcv": ("open", "high", "low", "close", "capacity"),
    "all": ("capacity", "turnover", "open", "high", "low", "close", "change", "transaction"),
    "turnover": ("turnover", "open", "high", "low", "close", "transaction"),
    "basic": ("open", "high", "low", "close", "transaction"),
}
PRICE_FIELDS = ("open", "high", "low", "close")


def parse_fields(text: str) -> tuple[str, ...]:
    """A field-set name (ohlcv, all, turnover, basic) or a comma list of field names."""
    if text in FIELD_SETS:
        return FIELD_SETS[text]
    fields = [f.strip().lower() for f in text.split(",") if f.strip()]
    unknown = [f for f in fields if f not in FIELDS]
    if unknown or not fields:
        raise ValueError(
            f"fields {text!r}: unknown {unknown}; use one of {sorted(FIELD_SETS)} or a comma list of {list(FIELDS)}"
        )
    missing = [f for f in PRICE_FIELDS if f not in fields]
    if missing:
        raise ValueError(f"fields {text!r} must include {list(PRICE_FIELDS)} (a forecast is a candle)")
    return tuple(fields)


def fields_text(fields) -> str:
    """Fields as --fields writes them: a set's name, else a comma list."""
    return next((name for name, chosen in FIELD_SETS.items() if tuple(fields) == chosen), ",".join(fields))


DEFAULT_CALENDAR = "XTAI"  # the Taiwan Stock Exchange's sessions (TPEx keeps the same days)
LIST_CALENDARS = 'python3 -c "import exchange_calendars as xc; print(xc.get_calendar_names())"'
CALENDAR_RULE = f"a calendar of exchange-calendars, e.g. XTAI (Taiwan), XNYS (New York); list them: {LIST_CALENDARS}"


def unknown_calendar(name: str) -> str:
    """The one-line refusal of a calendar name exchange-calendars does not have."""
    return f"--calendar {name}: must be {CALENDAR_RULE}"


def is_calendar_name(name: str) -> bool:
    """Whether exchange-calendars has a calendar (or an alias, e.g. NYSE) of that name."""
    import exchange_calendars as xc

    return name in xc.get_calendar_names(include_aliases=True)


def _year_rule() -> tuple:
    this_year = taipei_today().year
    what = f"a year from {FIRST_YEAR} (the exchange opened) to this year, not in the future"
    return between(FIRST_YEAR, this_year, what)


@dataclass(frozen=True)
class DataConfig:
    """Where prices are and where outputs go, which companies, which days."""

    data_dir: str = option(
        "data",
        "where prices (<data-dir>/prices/<code>.csv) and examples are kept; a folder of price CSVs works as the "
        "cache too",
        group="data",
        path=folder,
    )
    output_dir: str = option(
        "outputs", "checkpoints, TensorBoard runs (<output-dir>/runs), charts, reports", group="data", path=folder
    )
    company_list_file: str | None = option(
        None,
        "JSON list of companies to train on, by name_zh or code (default: the spec's 41, data/companies.json)",
        group="data",
        path=existing_file,
    )
    year: int = option(2024, "collect prices from this year ...", group="data", check=_year_rule())
    month: int = option(12, "... and month, up to --end-date", group="data", check=("1-12", lambda v: 1 <= v <= 12))
    end_date: str | None = option(
        None, "last day of prices to use, YYYY-MM-DD (default: today in Taipei)", group="data", check="date"
    )
    offline: bool = option(False, "never call the exchanges: use the price cache as it is", group="data", switch=True)
    calendar: str = option(
        DEFAULT_CALENDAR,
        "the exchange's trading calendar (exchange-calendars' name) that dates live forecasts: XTAI, the Taiwan "
        "Stock Exchange; e.g. XNYS for New York prices",
        group="data",
        check=(CALENDAR_RULE, is_calendar_name),
        more=True,
    )
    choose_stock: int = option(
        0,
        "instead of a company list, pick N listed stocks for each of twstock's four buy and four sell points",
        group="data",
        check=AT_LEAST_0,
    )
    price_source: str = option(
        "twstock",
        "where missing prices come from: the exchanges (twstock) or the trading server (--api-url)",
        group="data",
        choices=["twstock", "server"],
        more=True,
    )
    market_csv: str | None = option(
        None,
        "market-wide daily CSV (code + twstock columns) for --choose-stock and --universe market",
        group="data",
        path=existing_file,
        more=True,
    )
    universe: str = option(
        "companies",
        "what training windows come from: companies (the company list's) or market (also every other listed common "
        "stock: --market-csv, or online the exchanges' daily reports; evaluations stay on the company list)",
        group="data",
        choices=["companies", "market"],
    )
    universe_stride: int = option(
        20,
        "with --universe market, trading days between the other stocks' consecutive windows",
        group="data",
        check=AT_LEAST_1,
        more=True,
    )

    def __post_init__(self):
        settle(self)


@dataclass(frozen=True)
class ExamplesConfig:
    """How training examples are cut from prices: window types, prompt fields, the answer format, the split."""

    windows: tuple[WindowType, ...] = option(
        parse_windows(DEFAULT_WINDOWS),
        "window types past:future in trading days",
        group="examples",
        cpu="1:1",
        parse=parse_windows,
        text=windows_text,
    )
    fields: tuple[str, ...] = option(
        FIELD_SETS["ohlcv"],
        "price fields in prompts: ohlcv, all, turnover, basic (the spec's column sets) or a comma list",
        group="examples",
        parse=parse_fields,
        text=fields_text,
    )
    answer_format: str = option(
        "change",
        "how prompts and answers write prices: change (%% from the last close, measured better: docs/measured.md), "
        "candle (close and open as %% changes, then unsigned wicks: every answer a possible candle), "
        "scaled (the candle format as log changes in units of the stock's 20-day daily volatility: one unit the "
        "same move for every stock) or absolute (the spec's NTD prices)",
        group="examples",
        choices=list(ANSWER_FORMATS),
    )
    stride: int = option(1, "trading days between consecutive windows", group="examples", check=AT_LEAST_1, more=True)
    val_fraction: float = option(
        0.1, "latest share of trading days held out for validation", group="examples", check=SHARE, more=True
    )
    max_val_examples: int = option(
        200,
        "validation examples evaluated, spread over the held-out days",
        group="examples",
        cpu=4,
        check=AT_LEAST_1,
        more=True,
    )

    def __post_init__(self):
        settle(self)
