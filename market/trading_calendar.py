"""The exchange's calendar: on which days a market trades, from the maintained `exchange-calendars` package.

`--calendar` names one of its calendars: `XTAI` (the Taiwan Stock Exchange, the default; TPEx keeps the same
days), `XNYS` (New York), `XTKS` (Tokyo), ... Live forecasts are dated on its sessions: the next `future`
sessions after the last known day are the dates the answer grammar fixes, the chart draws and the files
carry, so a forecast made after 2026-04-30 starts on 2026-05-04, not on Labour Day. Walk-forward evaluations
need no calendar: their target dates are the real trading days of the price data.

exchange-calendars knows a calendar from about 20 years back to about a year after today (its default
bounds); a date beyond them is refused with a message, never guessed. It (and pandas) is imported on first
use only: the command line imports this module for --calendar's check.
"""

from __future__ import annotations

import typing

from config.data_args import DEFAULT_CALENDAR as DEFAULT
from config.data_args import is_calendar_name
from config.data_args import unknown_calendar as unknown_name
from utils import StockToolError

if typing.TYPE_CHECKING:
    import pandas as pd


def calendar(name: str = DEFAULT, start: pd.Timestamp | None = None):
    """exchange-calendars' calendar `name` (the library caches it), over its default bounds or from `start`."""
    import exchange_calendars as xc

    if not is_calendar_name(name):
        raise StockToolError(unknown_name(name))
    try:
        return xc.get_calendar(name) if start is None else xc.get_calendar(name, start=start)
    except (ValueError, xc.errors.CalendarError) as exc:  # a start before the calendar's earliest possible day
        raise StockToolError(
            f"the {name} calendar of exchange-calendars cannot start on {start:%Y-%m-%d}: {exc}"
        ) from None


def _day(value) -> pd.Timestamp:
    import pandas as pd

    day = pd.Timestamp(value)
    return (day.tz_localize(None) if day.tz is not None else day).normalize()


def _covering(name: str, day: pd.Timestamp):
    """The calendar `name`, extended back to `day` when its default bounds start after it."""
    import pandas as pd

    cal = calendar(name)
    if day < cal.first_session:
        cal = calendar(name, start=day - pd.Timedelta(days=7))
    return cal


def next_trading_days(last_day, count: int, name: str = DEFAULT) -> pd.DatetimeIndex:
    """The next `count` sessions of the calendar `name` after `last_day`: the dates of a live forecast."""
    import exchange_calendars as xc
    import pandas as pd

    day = _day(last_day)
    cal = _covering(name, day)
    sessions = cal.sessions[cal.sessions > day][:count]
    if len(sessions) < count:
        raise StockToolError(
            f"the {name} calendar of exchange-calendars {xc.__version__} knows trading days only up to "
            f"{cal.last_session:%Y-%m-%d} (about a year after today), so it cannot date {count} trading day(s) after "
            f"{day:%Y-%m-%d}; forecast fewer days (--future) or update exchange-calendars"
        )
    return pd.DatetimeIndex(sessions.to_numpy(), name="Date")


def closed_days(dates, name: str = DEFAULT) -> list[pd.Timestamp]:
    """The days among `dates` on which the calendar `name` has no session (days outside its bounds are left
    out: nothing is known of them)."""
    days = [_day(d) for d in dates]
    if not days:
        return []
    cal = _covering(name, min(days))
    return [d for d in days if d <= cal.last_session and d not in cal.sessions]
