"""Company news: collection from newsapi.org, a per-company JSON store, import from CSV, as-of lookup.

The store is `<data-dir>/news/<code>.json` in the spec's format:
    {"name_zh": "宏碁", "name_en": "Acer", "news_zh": [...], "news_en": [...], "code": "2353"}
each article {"publishedAt", "title", "description", "source", "url"}. Refetching merges and
de-duplicates (by url, else by day + title); every write is atomic, and nothing is written for a
failed request, so stored news is never lost.

newsapi.org's free plan allows 100 requests a day and articles of the last ~30 days. Requests are
counted per UTC day in `<data-dir>/news/.requests.json`; collection stops before the budget and says
what it skipped. The key comes from NEWSAPI_KEY (or a flag) and is never logged or written.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import math
import os
import re
from pathlib import Path

from config.defaults import DEFAULT_WINDOWS  # noqa: F401 (the default of --windows, kept beside its flag)
from utils import TAIPEI, StockToolError, read_user_text, write_json

log = logging.getLogger("stock.news")


NEWSAPI_BASE_URL = "https://newsapi.org"


FREE_PLAN_DAYS = 30


DAILY_LIMIT = 100


_CJK = re.compile(r"[\u3400-\u9fff]")


def normalize_article(raw: dict) -> dict | None:
    """newsapi's article (or an imported row) → the store's fields; None without a title or a date."""
    title = (raw.get("title") or "").strip()
    published = (raw.get("publishedAt") or "").strip()
    if not title or not published or title == "[Removed]":
        return None
    source = raw.get("source")
    if isinstance(source, dict):
        source = source.get("name") or source.get("id")
    return {
        "publishedAt": published,
        "title": title,
        "description": (raw.get("description") or "").strip(),
        "source": (source or "").strip(),
        "url": (raw.get("url") or "").strip(),
    }


def taipei_time(published: str) -> dt.datetime:
    """A timestamp in Taiwan time (one without a zone is taken as Taiwan time)."""
    stamp = dt.datetime.fromisoformat(published.replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=TAIPEI)
    return stamp.astimezone(TAIPEI)


def taipei_date(published: str) -> dt.date:
    """The Taiwan calendar day of a timestamp (`2026-03-12T23:30:00Z` is 2026-03-13 in Taipei)."""
    return taipei_time(published).date()


def _key(article: dict) -> str:
    return article["url"] or f"{article['publishedAt'][:10]}|{article['title']}"


class NewsStore:
    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)

    def path(self, code: str) -> Path:
        return self.directory / f"{code}.json"

    def load(self, code: str) -> dict | None:
        path = self.path(code)
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StockToolError(f"news file {path} is not valid UTF-8 JSON ({exc}); fix or delete it") from exc
        if not isinstance(record, dict):
            raise StockToolError(f"news file {path} is not the spec's object (name_zh, news_zh, news_en, code)")
        return record

    def check(self, codes) -> None:
        """Read every company's file before a step writes any of them: a bad file stops the step while all
        files are still as they were (no half-merged store)."""
        for code in codes:
            self.load(code)

    def merge(self, company, language: str, articles: list[dict]) -> int:
        """Add articles to news_<language> of the company's file; returns how many were new."""
        record = self.load(company.code) or {
            "name_zh": company.name_zh,
            "name_en": company.name_en,
            "news_zh": [],
            "news_en": [],
            "code": company.code,
        }
        if company.name_en and not record.get("name_en"):
            record["name_en"] = company.name_en
        field = f"news_{language}"
        known = {_key(a): a for a in record.get(field, [])}
        before = len(known)
        for article in articles:
            if article is not None:
                known.setdefault(_key(article), article)
        record[field] = sorted(known.values(), key=lambda a: a["publishedAt"], reverse=True)
        write_json(self.path(company.code), record)
        return len(known) - before

    def articles(self, code: str, languages: tuple[str, ...]) -> list[dict]:
        """The stored articles of the chosen languages, with their Taipei publication day."""
        record = self.load(code) or {}
        out = []
        for language in languages:
            for article in record.get(f"news_{language}", []):
                try:
                    when = taipei_time(article["publishedAt"])
                    out.append({**article, "taipei_time": when, "taipei_date": when.date()})
                except (KeyError, ValueError):
                    log.warning("news of %s: an article without a readable publishedAt is ignored", code)
        return out


class RequestBudget:
    """Requests made today (UTC, newsapi's day) across runs."""

    def __init__(self, directory: Path, limit: int, today: dt.date | None = None):
        self.path = directory / ".requests.json"
        self.limit = limit
        self.today = today or dt.datetime.now(dt.UTC).date()
        state = {}
        if self.path.is_file():
            try:
                state = json.loads(self.path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                state = {}
        self.used = int(state.get("requests", 0)) if state.get("day") == self.today.isoformat() else 0

    @property
    def left(self) -> int:
        return max(0, self.limit - self.used)

    def spend(self) -> None:
        self.used += 1
        write_json(self.path, {"day": self.today.isoformat(), "requests": self.used})


class _BaseUrlSession:
    """A requests session for newsapi-python that sends its calls to another base URL (a local test
    server, a proxy): newsapi-python takes a session object, so its own request code runs unchanged."""

    def __init__(self, base_url: str):
        import requests

        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()

    def get(self, url: str, **kwargs):
        return self.session.get(url.replace(NEWSAPI_BASE_URL, self.base_url, 1), **kwargs)


class NewsCollector:
    """Fetch each company's recent articles by Chinese and by English name into the store."""

    def __init__(self, api_key: str, store: NewsStore, daily_limit: int = DAILY_LIMIT, base_url: str | None = None):
        from newsapi import NewsApiClient

        base_url = base_url or os.environ.get("NEWSAPI_BASE_URL", NEWSAPI_BASE_URL)
        self.client = NewsApiClient(api_key=api_key, session=_BaseUrlSession(base_url))
        self.store = store
        self.budget = RequestBudget(store.directory, daily_limit)

    def collect(self, companies, days: int = FREE_PLAN_DAYS, today: dt.date | None = None) -> dict:
        today = today or dt.datetime.now(TAIPEI).date()
        since = today - dt.timedelta(days=days)
        summary = {"requests": 0, "new_articles": 0, "skipped": []}
        for company in companies:
            for language, name in (("zh", company.name_zh), ("en", company.name_en)):
                if not name:
                    continue
                if self.budget.left == 0:
                    summary["skipped"].append(f"{company.code} {language}")
                    continue
                articles = self._everything(name, language, since, today)
                summary["requests"] += 1
                summary["new_articles"] += self.store.merge(company, language, articles)
        return summary

    def _everything(self, name: str, language: str, since: dt.date, today: dt.date) -> list[dict]:
        import requests
        from newsapi.newsapi_exception import NewsAPIException

        self.budget.spend()  # counted before the call: a request that fails still used the quota
        try:
            body = self.client.get_everything(
                q=f'"{name}"',
                language=language,
                from_param=since.isoformat(),
                to=today.isoformat(),
                sort_by="publishedAt",
                page_size=100,
            )
        except NewsAPIException as exc:
            raise _api_error(exc, name) from None
        except (requests.exceptions.JSONDecodeError, ValueError) as exc:  # an HTML error page, read as JSON
            raise StockToolError(
                f"newsapi.org answered something that is not JSON ({type(exc).__name__}); stored news is unchanged"
            ) from None
        except requests.RequestException as exc:
            raise StockToolError(
                f"newsapi.org could not be reached ({type(exc).__name__}); stored news is unchanged. "
                "Check the network, or import headlines with --news-csv"
            ) from None
        return [normalize_article(a) for a in body.get("articles", [])]


def _api_error(exc, name: str) -> StockToolError:
    body = exc.get_exception() if isinstance(exc.get_exception(), dict) else {}
    code, message = str(body.get("code") or ""), str(body.get("message") or "")
    if code.startswith("apiKey"):
        return StockToolError(f"newsapi.org refused the key ({code}): check NEWSAPI_KEY; stored news is unchanged")
    if code in ("rateLimited",) or "too many" in message.lower():
        return StockToolError(
            f"newsapi.org rate limit reached ({code}: the free plan allows {DAILY_LIMIT} requests a day); "
            "stored news is unchanged, collect again tomorrow"
        )
    if "too far in the past" in message or "upgrade" in message.lower():
        return StockToolError(
            f"newsapi.org: the date range is outside your plan ({message[:200]}); use a smaller --news-days "
            f"(the free plan covers about {FREE_PLAN_DAYS} days)"
        )
    return StockToolError(f"newsapi.org error for {name!r}: {code}: {message[:200]}")


def import_csv(path: str | os.PathLike, store: NewsStore, companies: dict) -> dict:
    """Headlines from a CSV with at least code,date,title (optional description, source, url) into the store.

    `companies` maps code → Company for names; rows for other codes are counted and skipped. A date
    without a time is taken as that Taipei day. Chinese titles go to news_zh, others to news_en.
    """
    path = Path(path)
    handle = io.StringIO(read_user_text(path, "news CSV"), newline="")  # UTF-8, UTF-16 or Big5
    grouped: dict[tuple[str, str], list[dict]] = {}
    counts = {"rows": 0, "imported": 0, "unknown_code": 0, "bad_rows": 0}
    with handle:
        reader = csv.DictReader(handle)
        missing = {"code", "date", "title"} - set(reader.fieldnames or [])
        if missing:
            raise StockToolError(f"news CSV {path} lacks column(s) {sorted(missing)}; needs code,date,title")
        try:
            rows = list(reader)
        except csv.Error as exc:
            raise StockToolError(f"news CSV {path} line {reader.line_num}: {exc}") from None
        for line, row in enumerate(rows, start=2):
            counts["rows"] += 1
            code = (row.get("code") or "").strip()
            if code not in companies:
                counts["unknown_code"] += 1
                continue
            date = (row.get("date") or "").strip()
            try:
                published = dt.datetime.fromisoformat(date)
            except ValueError:
                log.warning("%s line %d: date %r is not ISO; row skipped", path, line, date)
                counts["bad_rows"] += 1
                continue
            if published.tzinfo is None:
                published = published.replace(tzinfo=TAIPEI)
            article = normalize_article({**row, "publishedAt": published.isoformat()})
            if article is None:
                counts["bad_rows"] += 1
                continue
            language = "zh" if _CJK.search(article["title"]) else "en"
            grouped.setdefault((code, language), []).append(article)
    for (code, language), articles in grouped.items():
        counts["imported"] += store.merge(companies[code], language, articles)
    return counts


def approx_tokens(text: str) -> int:
    """A tokenizer-free estimate: one token per CJK character, one per four other characters."""
    cjk = sum(1 for ch in text if "\u3400" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff")
    return cjk + math.ceil((len(text) - cjk) / 4)


def articles_as_of(articles: list[dict], as_of: dt.date, since: dt.date | None = None) -> list[dict]:
    """What was known on `as_of`: the articles published on or before it (Taipei date), and on or after `since`,
    newest first. The one as-of selection of headlines (the prompts' news lines, the forecaster's weeks)."""
    return sorted(
        (a for a in articles if a["taipei_date"] <= as_of and (since is None or since <= a["taipei_date"])),
        key=lambda a: (a["taipei_date"], a.get("taipei_time") or dt.datetime.min.replace(tzinfo=dt.UTC)),
        reverse=True,
    )


def news_lines(articles: list[dict], as_of: dt.date, max_articles: int, max_tokens: int) -> list[str]:
    """Headlines published on or before `as_of` (Taipei date), newest first, within a count and a token budget.

    `articles` carry `taipei_date` (datetime.date), `taipei_time` (for the order within a day) and `title`
    (optional `description`, `source`). Nothing dated after `as_of` can pass: that is what keeps a
    window's prompt free of later news.
    """
    known = articles_as_of(articles, as_of)
    lines, used = [], 0
    for article in known[:max_articles]:
        text = f"- {article['taipei_date']:%Y-%m-%d}"
        if article.get("source"):
            text += f" [{article['source']}]"
        text += f" {article['title'].strip()}"
        if article.get("description"):
            text += f": {article['description'].strip()}"
        cost = approx_tokens(text)
        if used + cost > max_tokens:
            break
        lines.append(text)
        used += cost
    return lines
