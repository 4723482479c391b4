"""Companies: resolving a company list's names and codes with twstock's TWSE and TPEx code tables."""

from __future__ import annotations

import datetime as dt
import difflib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from market import company_names
from market.price_files import PriceCache
from utils import (
    StockToolError,
    read_user_text,
)

log = logging.getLogger("stock.prices")


DEFAULT_COMPANY_FILE = Path(__file__).resolve().parents[1] / "data" / "companies.json"  # the spec's 41 companies


@dataclass(frozen=True)
class Company:
    code: str
    name_zh: str
    market: str  # "twse" (上市) or "tpex" (上櫃)
    name_en: str = ""
    listed: dt.date | None = None

    @classmethod
    def from_saved(cls, saved: dict) -> Company:
        """Back from `asdict` + JSON (as in an adapter's stock_config.json)."""
        listed = saved.get("listed")
        listed = dt.date.fromisoformat(listed) if isinstance(listed, str) else listed
        return cls(saved["code"], saved["name_zh"], saved["market"], saved.get("name_en", ""), listed)


def _code_table() -> dict[str, object]:
    """twstock's bundled TWSE + TPEx code tables (no network)."""
    from twstock.codes import codes

    return codes


def listed_common_stock(code: str) -> Company | None:
    """The Company of a listed common stock by its code (twstock's table), or None (an ETF, a warrant, a code the
    table does not have)."""
    row = _code_table().get(code)
    return _company_from_row(row) if row is not None and row.type == "股票" else None


def _parse_listing_date(text: str) -> dt.date | None:
    try:
        return dt.datetime.strptime(text, "%Y/%m/%d").date()
    except (TypeError, ValueError):
        return None


def _company_from_row(row, name_en: str = "") -> Company:
    return Company(
        code=row.code,
        name_zh=row.name,
        market=row.data_source,
        name_en=name_en,
        listed=_parse_listing_date(row.start),
    )


def _normalize_code(raw) -> str:
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        raise StockToolError(f"company code {raw!r} must be a string or an integer")
    code = str(raw).strip()
    # JSON integers lose leading zeros (0050 -> 50); exchange codes have at least four characters.
    if isinstance(raw, int) and len(code) < 4:
        code = code.zfill(4)
    return code


def resolve_company(entry: dict, cache: PriceCache | None = None) -> Company:
    """Turn a company-list entry (`{"name_zh": ...}` and/or `{"code": ...}`) into a Company.

    Names match twstock's table exactly, or by a unique prefix either way ("日月光" is listed as
    "日月光投控"; the spec writes "益登科技" for the listed "益登"), as typed or in traditional characters
    (`company_names`: 台积电 is 台積電). Only common stocks match by name.
    A code twstock does not know is another market's when `cache` holds its prices in the common layout
    (market "csv"; its name is the entry's `name_zh`, else the code).
    """
    table = _code_table()
    name_en = str(entry.get("name_en", "") or "")
    if entry.get("code") not in (None, ""):
        code = _normalize_code(entry["code"])
        if code not in table and cache is not None and cache.is_given(code):
            return Company(code, str(entry.get("name_zh") or "").strip() or code, "csv", name_en)
        if code not in table:
            close = difflib.get_close_matches(code, list(table), n=3)
            hint = f" Close codes: {', '.join(close)}." if close else ""
            raise StockToolError(f"unknown stock code {code!r} (not in twstock's TWSE/TPEx tables).{hint}")
        company = _company_from_row(table[code], name_en)
        given = str(entry.get("name_zh") or "").strip()
        if given and not (given.startswith(company.name_zh) or company.name_zh.startswith(given)):
            log.warning("code %s is %s in twstock's table, not %s; using the code", code, company.name_zh, given)
        return company
    name = str(entry.get("name_zh") or "").strip()
    if not name:
        raise StockToolError(f"company entry {entry!r} has neither 'code' nor 'name_zh'")
    stocks = [row for row in table.values() if row.type == "股票"]
    matches = company_names.matches(name, stocks)  # as typed, or in traditional characters (台积电 → 台積電)
    if len(matches) == 1:
        return _company_from_row(matches[0], name_en)
    if len(matches) > 1:
        listed = ", ".join(f"{r.name} ({r.code})" for r in company_names.by_prominence(matches)[:8])
        raise StockToolError(f"company name {name!r} is ambiguous: {listed}. Give its 'code' instead.")
    close = company_names.suggestions(name, stocks)
    hint = f" Close matches: {', '.join(f'{r.name} ({r.code})' for r in close)}." if close else ""
    raise StockToolError(f"unknown company name {name!r} (not a listed stock in twstock's tables).{hint}")


def load_company_list(path: str | os.PathLike, cache: PriceCache | None = None) -> list[Company]:
    """Read and resolve a company-list JSON file (the spec's format). Every problem is reported at once. Codes
    of other markets resolve when `cache` holds their prices in the common layout (`resolve_company`)."""
    path = Path(path)
    if not path.is_file():
        raise StockToolError(f"company list file {str(path)!r} does not exist")
    try:
        entries = json.loads(read_user_text(path, "company list file"))  # UTF-8, UTF-16 or Big5
    except json.JSONDecodeError as exc:
        raise StockToolError(f"company list file {str(path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise StockToolError(
            f"company list file {str(path)!r} must be a non-empty JSON array of objects such as "
            '{"name_zh": "台積電"} or {"code": "2330"}'
        )
    companies, errors = [], []
    for entry in entries:
        try:
            companies.append(resolve_company(entry, cache))
        except StockToolError as exc:
            errors.append(str(exc))
    if errors:
        raise StockToolError(f"{len(errors)} problem(s) in {path}:\n  " + "\n  ".join(errors))
    unique = list({c.code: c for c in companies}.values())
    if len(unique) < len(companies):
        log.warning("company list names %d companies twice; using each once", len(companies) - len(unique))
    return unique
