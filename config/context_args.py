"""What a prompt says besides prices: twstock's best four points and the stored news, as of each window's last
day, and where that news comes from (a CSV import, newsapi.org)."""

from __future__ import annotations

from dataclasses import dataclass

from config.flags import AT_LEAST_0, between, existing_file, option, settle


@dataclass(frozen=True)
class ContextConfig:
    signals: bool = option(
        False,
        "1/0: twstock's best four points in the prompt (0 by default: measured better without them)",
        group="context",
    )
    news: bool = option(
        True, "1/0: stored news in the prompt; when training online with NEWSAPI_KEY, collect it first", group="context"
    )
    news_languages: str = option(
        "both", "news languages used", group="context", flag="--news-language", choices=["zh", "en", "both"], more=True
    )
    news_max_articles: int = option(5, "headlines per prompt at most", group="context", check=AT_LEAST_0, more=True)
    # estimated: one token per CJK character, one per four other characters
    news_max_tokens: int = option(
        300, "estimated tokens of news per prompt at most", group="context", check=AT_LEAST_0, more=True
    )
    news_days: int = option(
        30, "collect articles of the last N days (free plan ~30)", group="context", check=between(1, 3650), more=True
    )
    news_daily_limit: int = option(
        100, "newsapi requests a day (free plan 100)", group="context", check=AT_LEAST_0, more=True
    )
    news_csv: str | None = option(
        None,
        "import headlines (code,date,title[,description,source,url]); UTF-8, UTF-16 or Big5",
        group="context",
        path=existing_file,
        more=True,
    )

    def __post_init__(self):
        settle(self)

    @property
    def languages(self) -> tuple[str, ...]:
        return ("zh", "en") if self.news_languages == "both" else (self.news_languages,)
