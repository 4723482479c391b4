"""What a prompt says besides prices: twstock's best four points and the stored news, as of each window's
last day, and collecting that news (a --news-csv import, then newsapi.org with a key).

`builder` is a pure function of the data settings, the prices and the news store; the prompts themselves
are written in `dataset.py`.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import replace

import pandas as pd

from config.context_args import ContextConfig
from market import news, twstock_signals
from market.company_list import DEFAULT_COMPANY_FILE, Company

log = logging.getLogger("stock.news")


def builder(context: ContextConfig, prices: dict[str, pd.DataFrame], store=None):
    """fn(code) → fn(as_of_date) → (context text, kind): the as-of context of `context`'s settings; `store`: the
    `news.NewsStore` (None: no news)."""
    languages = context.languages
    signals = {code: dict(zip(f.index, twstock_signals.best_four_points(f), strict=True)) for code, f in prices.items()}

    def for_code(code: str):
        articles = store.articles(code, languages) if store else []
        points = signals.get(code, {})

        def context_for(as_of) -> tuple[str, str]:
            parts, kind = [], "prices"
            if context.signals:
                parts.append(twstock_signals.signal_text(points.get(pd.Timestamp(as_of))))
                kind += "+signals"
            day = pd.Timestamp(as_of).date()
            most = (context.news_max_articles, context.news_max_tokens)
            lines = news.news_lines(articles, day, *most) if articles else []
            if lines:
                parts.append(f"News up to {pd.Timestamp(as_of):%Y-%m-%d} (newest first):\n" + "\n".join(lines))
                kind += "+news"
            return "\n".join(parts), kind

        return context_for

    return for_code


def collect_news(context: ContextConfig, offline: bool, store, companies: list[Company], newsapi_key) -> None:
    """Import --news-csv, then fetch newsapi.org (with a key, and not `offline`) into `store`."""

    store.check(c.code for c in companies)
    if context.news_csv:
        counts = news.import_csv(context.news_csv, store, {c.code: with_english_name(c) for c in companies})
        print(
            f"news: imported {counts['imported']:,} new of {counts['rows']:,} rows from {context.news_csv} "
            f"({counts['unknown_code']:,} for other companies, {counts['bad_rows']:,} unreadable) "
            f"→ {store.directory}"
        )
    if not context.news or offline:
        return
    if not newsapi_key:
        log.warning("no NEWSAPI_KEY: news is not collected; prompts use the news already stored (if any)")
        return
    collector = news.NewsCollector(newsapi_key, store, context.news_daily_limit)
    summary = collector.collect([with_english_name(c) for c in companies], context.news_days)
    print(
        f"news: {summary['requests']} newsapi request(s), {summary['new_articles']:,} new article(s) → "
        f"{store.directory}"
        + (f"; daily budget reached, skipped: {', '.join(summary['skipped'])}" if summary["skipped"] else "")
    )


@functools.cache
def _shipped_english_names() -> dict[str, str]:
    try:
        entries = json.loads(DEFAULT_COMPANY_FILE.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return {str(e.get("code")): e.get("name_en", "") for e in entries if isinstance(e, dict) and e.get("name_en")}


def with_english_name(company: Company) -> Company:
    """Add the English name from the shipped company list (twstock has none) when the company has none."""
    name = _shipped_english_names().get(company.code)
    return replace(company, name_en=name) if name and not company.name_en else company
