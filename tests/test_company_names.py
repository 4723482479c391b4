"""Company names as users type them (issue "What a user sees"): simplified characters, 臺 for 台, longer names
than the listed ones, and an input method's homophone slips find the company, or suggest it first."""

from __future__ import annotations

import pytest

from market import company_list, company_names
from utils import StockToolError


@pytest.mark.parametrize(
    ("typed", "code"),
    [
        ("台積電", "2330"),
        ("台积电", "2330"),  # simplified
        ("臺積電", "2330"),  # 臺 for 台
        ("台积", "2330"),  # a simplified prefix
        ("联发科", "2454"),
        ("聯發科技", "2454"),  # the longest listed name it begins with, not 聯發 (1459)
        ("聯發", "1459"),  # which is a company of its own
        ("鸿海", "2317"),
        ("中华电", "2412"),
        ("国泰金", "2882"),
        ("長榮航", "2618"),
        ("长荣航", "2618"),
        (" 台積電 ", "2330"),
        ("日月光", "3711"),  # listed as 日月光投控
        ("益登科技", "3048"),  # listed as 益登
    ],
)
def test_a_name_as_typed_finds_the_company(typed, code):
    assert company_list.resolve_company({"name_zh": typed}).code == code


@pytest.mark.parametrize(
    ("typed", "first"),
    [
        ("台積店", "台積電 (2330)"),  # a wrong character
        ("台基電", "台積電 (2330)"),  # an input method's homophone (tai ji dian), not 台達電 or 台聯電
        ("台机电", "台積電 (2330)"),  # the same in simplified characters
        ("台灣積體電路", "台積電 (2330)"),  # the full name
        ("臺灣積體電路", "台積電 (2330)"),
        ("聯花科", "聯發科 (2454)"),
    ],
)
def test_a_near_miss_suggests_the_intended_company_first(typed, first):
    with pytest.raises(StockToolError, match=f"unknown company name '{typed}'") as refused:
        company_list.resolve_company({"name_zh": typed})
    assert str(refused.value).split("Close matches: ")[1].startswith(first), str(refused.value)


def test_an_ambiguous_prefix_lists_the_spec_company_first():
    with pytest.raises(StockToolError, match="company name '台達' is ambiguous: 台達電 \\(2308\\), 台達化 \\(1309\\)"):
        company_list.resolve_company({"name_zh": "台達"})


def test_a_name_far_from_every_company_suggests_nothing():
    with pytest.raises(StockToolError) as refused:
        company_list.resolve_company({"name_zh": "不存在公司"})
    assert "Close matches" not in str(refused.value)


def test_spellings_try_the_name_as_typed_first_then_in_traditional_characters():
    assert list(company_names.spellings("台积电")) == ["台积电", "台積電"]
    assert list(company_names.spellings("臺積電")) == ["台積電"]
    assert company_names.fold("Ｔ ＳＭＣ") == "TSMC"
