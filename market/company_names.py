"""Company names as users type them, matched against twstock's listed names (`market_data.resolve_company`).

A name may come in simplified characters (台积电), with 臺 for 台, in full-width forms, or as a longer name than
the listed one (聯發科技 for 聯發科): it is tried as typed, then in traditional characters (OpenCC, Taiwan
phrases and characters), each with 臺 folded to 台 as the exchange's tables write it. A name that matches
nothing gets suggestions ranked by how close they are in characters and in sound (pinyin without tones, so that
an input method's homophone, 台基電 for 台積電, still finds the company), the spec's 41 companies first among
equals. OpenCC and pypinyin are imported only when a name is not found as typed.
"""

from __future__ import annotations

import difflib
import functools
import json
import unicodedata
from collections.abc import Iterator
from pathlib import Path

BUNDLED = Path(__file__).resolve().parents[1] / "data" / "companies.json"  # the spec's 41 companies
_FOLD = str.maketrans({"臺": "台"})  # twstock writes 台積電, 台達電; 臺 appears only in warrants' names
CONVERSIONS = ("s2twp", "s2tw")  # OpenCC: simplified → traditional with Taiwan's phrases, then characters only
MIN_SCORE = 0.4  # below it a name is no suggestion


def fold(text: str) -> str:
    """A name as it is compared: NFKC (full-width letters and digits as ASCII), no spaces, 臺 as 台."""
    return "".join(unicodedata.normalize("NFKC", text).split()).translate(_FOLD)


@functools.cache
def _converter(config: str):
    import opencc

    return opencc.OpenCC(config)


def spellings(name: str) -> Iterator[str]:
    """`name` folded as typed, then in traditional characters; each spelling once."""
    seen = []
    for spelling in (name, *(_converter(config).convert(name) for config in CONVERSIONS)):
        folded = fold(spelling)
        if folded and folded not in seen:
            seen.append(folded)
            yield folded


def matches(name: str, rows) -> list:
    """The rows (twstock's code rows) whose name is `name` in one of its spellings; else those whose name begins
    with it ("日月光" → 日月光投控); else the longest listed name it begins with ("聯發科技" → 聯發科, not 聯發)."""
    typed = fold(name)
    names = [(fold(row.name), row) for row in rows]
    exact = [row for listed, row in names if listed == typed]
    if exact:
        return exact
    forms = list(spellings(name))
    exact = [row for listed, row in names if listed in forms]
    if exact:
        return exact
    starts = [row for listed, row in names if any(listed.startswith(form) for form in forms)]
    if starts:
        return starts
    within = [(len(listed), row) for listed, row in names if any(form.startswith(listed) for form in forms)]
    longest = max((length for length, _ in within), default=0)
    return [row for length, row in within if length == longest]


@functools.cache
def _bundled_codes() -> frozenset[str]:
    try:
        return frozenset(str(entry["code"]) for entry in json.loads(BUNDLED.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return frozenset()


def by_prominence(rows) -> list:
    """The spec's companies first, then shorter names, then by code."""
    return sorted(rows, key=lambda row: (row.code not in _bundled_codes(), len(row.name), row.code))


@functools.cache
def _sound(text: str) -> tuple[str, ...]:
    from pypinyin import lazy_pinyin

    return tuple(lazy_pinyin(text))


def similarity(typed: str, listed: str) -> float:
    """From 0 to 1: the mean of how alike two (folded) names are in characters and in sound."""
    chars = difflib.SequenceMatcher(None, typed, listed).ratio()
    sound = difflib.SequenceMatcher(None, _sound(typed), _sound(listed)).ratio()
    return (chars + sound) / 2


def suggestions(name: str, rows, n: int = 5) -> list:
    """Up to `n` rows whose names are closest to `name` in any of its spellings, the closest first; among equals
    the spec's companies, then shorter names."""
    forms = list(spellings(name))
    scored = []
    for row in rows:
        listed = fold(row.name)
        score = max(similarity(form, listed) for form in forms)
        if score >= MIN_SCORE:
            scored.append((-score, row.code not in _bundled_codes(), len(row.name), row.code, row))
    return [entry[-1] for entry in sorted(scored, key=lambda entry: entry[:4])[:n]]
