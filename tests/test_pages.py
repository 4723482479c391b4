"""The pages a person looks at (pages.py): the markdown converter on literal inputs, report.html and index.html
made by the real code paths on small synthetic inputs (a fake model), and both opened in a real headless
Chromium (Debian's, driven by playwright), which must show them without a console error, a broken image or an
empty table, on a phone and on a desktop."""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import model
from config import data_args
from config.evaluation_args import EvalConfig
from config.inference_args import InferenceConfig
from config.model_args import ModelConfig
from conftest import WordTokenizer, argv, candles, fake_pool, write_price_csv
from forecasting import calibrated, chart, forecast_page
from forecasting import html as html_
from llm import generation
from prompts import prompt_format
from stock_predictor import DataConfig, Settings, StockPredictor

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = argv(
    "--headless --no-sandbox --disable-gpu --disable-quic --no-first-run "
    "--disable-background-networking --disable-component-update --disable-sync"
)
VIEWPORTS = {"phone": {"width": 390, "height": 844}, "desktop": {"width": 1280, "height": 900}}
OHLCV = data_args.FIELD_SETS["ohlcv"]
PNG_1PX = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


# --------------------------------------------------------------------------- the converter


def test_headings_paragraphs_inline_marks_and_escapes():
    out = html_.markdown_html("# A `x<y` title\n\nSome **bold**, *italic* and `a*b*c` text,\nsecond line & <b>.")
    assert out.splitlines()[0] == "<h1>A <code>x&lt;y</code> title</h1>"
    assert "<strong>bold</strong>, <em>italic</em> and <code>a*b*c</code> text, second line &amp; &lt;b&gt;." in out
    assert html_.markdown_html("1 − MAPE * 2 and file_name_here") == "<p>1 − MAPE * 2 and file_name_here</p>"
    assert html_.markdown_html(html_.escape_markdown("a *b* | [c](d) `e`")) == "<p>a *b* | [c](d) `e`</p>"


def test_nested_lists_with_continuation_lines():
    text = "- one\n  - one.a **x**\n  - one.b\n    continued\n- two\n\n1. first\n2. second"
    assert html_.markdown_html(text) == (
        "<ul><li>one<ul><li>one.a <strong>x</strong></li><li>one.b continued</li></ul></li><li>two</li></ul>\n"
        "<ol><li>first</li><li>second</li></ol>"
    )


def test_pipe_tables_keep_every_row_and_alignment_and_scroll_in_a_box():
    long = "a verdict too long to keep on one line"
    text = f"| window | model | MAPE % |\n| --- | :---: | ---: |\n| 1:1 | LLM \\| tuned | 1.234 |\n| 5:5 | {long} |"
    out = html_.markdown_html(text)
    assert out.startswith('<div class="table"><table><thead><tr><th class="n">window</th><th class="c n">model</th>')
    assert '<td class="n">1:1</td><td class="c n">LLM | tuned</td><td class="r n">1.234</td>' in out
    assert f'<td class="c">{long}</td><td class="r n"></td>' in out  # a long cell may wrap; a short row is padded
    assert out.count("<tr>") == 3


def test_images_are_inlined_as_data_uris_and_a_missing_one_is_said(tmp_path):
    (tmp_path / "chart.png").write_bytes(PNG_1PX)
    out = html_.markdown_html("![a chart](chart.png)\n\nsee ![gone](gone.png)", html_.embedded(tmp_path))
    data = "data:image/png;base64," + base64.b64encode(PNG_1PX).decode()
    figure = (
        f'<figure><a href="chart.png"><img src="{data}" alt="a chart"></a><figcaption>a chart</figcaption></figure>'
    )
    assert out.startswith(figure)  # a tap opens the file beside the page
    assert '<span class="missing">[image gone.png not found]</span>' in out
    assert html_.embedded(tmp_path)("../outside.png") is None  # only files of the page's folder


def test_fenced_code_is_literal():
    out = html_.markdown_html("```\n| not | a table |\n**raw** <answer>\n```\nafter")
    assert out == "<pre><code>| not | a table |\n**raw** &lt;answer&gt;</code></pre>\n<p>after</p>"


def test_a_page_is_self_contained_and_fits_a_phone():
    html = html_.page("T", "<p>x</p>")
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    assert "max-width" in html and "overflow-x:auto" in html
    assert not re.search(r"(src|href)=\"(https?:)?//", html) and "<script" not in html


# --------------------------------------------------------------------------- pages from the real code paths


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict:
    """The pages of three forecast runs and of one evaluation, by the real code paths on synthetic prices (made
    once for the module: the evaluation takes most of the time)."""
    root = tmp_path_factory.mktemp("pages")
    prices = root / "prices"
    prices.mkdir()
    rng = np.random.default_rng(0)
    for code in ("2330", "2317", "6569"):  # 2026-01-02 → 2026-04-30
        closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, 86)))
        write_price_csv(prices, code, candles(np.round(closes, 1), start="2026-01-02"))
    with pytest.MonkeyPatch.context() as monkeypatch:
        made = forecast_pages(prices, root / "out", monkeypatch)
    made["report"] = evaluation_page(prices, root / "eval")
    made["root"] = root
    return made


def _predictor(prices: Path, out: Path, cfg: EvalConfig | None = None, **decoding) -> StockPredictor:
    data = DataConfig(data_dir=str(prices), output_dir=str(out), offline=True, end_date="2026-04-30")
    settings = Settings(
        data=data,
        model=ModelConfig(model_dir=str(out / "adapter")),
        inference=InferenceConfig(**decoding),
        evaluation=cfg or EvalConfig(),
    )
    return StockPredictor(settings)


def _answer(prompt: str, shift: float) -> str:
    """A fake model's answer: the prompt's last close moved `shift` % a day over the asked days."""
    rows = [line for line in prompt.splitlines() if line.startswith("Date: ")]
    last = dict(re.findall(r"(\w+): ([-\d.]+)", rows[-1].replace(",", "")))
    future = int(re.search(r"next (\d+) day", prompt)[1]) if "next date" not in prompt else 1
    days = pd.bdate_range(pd.Timestamp(rows[-1][6:16]) + pd.offsets.BDay(), periods=future, name="Date")
    close = float(last["Close"]) * (1 + shift / 100) ** np.arange(1, future + 1)
    frame = pd.DataFrame(
        {"Open": close, "High": close * 1.01, "Low": close * 0.99, "Close": close, "Volume": float(last["Capacity"])},
        index=days,
    )
    return prompt_format.answer_text(frame, OHLCV)


def _fake_model(monkeypatch, broken=()):
    """Inference with an injected model: samples shifted by −0.7 … +1.3 % a day; stocks named in `broken` get
    an answer that does not parse."""
    loaded = model.LoadedModel(model=None, tokenizer=WordTokenizer(), cuda=False, config={"dataset": {"fields": OHLCV}})
    monkeypatch.setattr(model, "load_for_inference", lambda model_dir, cfg=None: loaded)

    def generate(_, prompts, max_new_tokens, how=None, regexes=None, stats=None):
        samples = how.samples if how else 1
        out = []
        for p in prompts:
            text = p[0]["content"]
            if any(name in text for name in broken):
                out.append(["I think it goes up!"] * samples)
            else:
                out.append([_answer(text, shift) for shift in np.linspace(-1, 1, samples) + 0.3])
        return out

    monkeypatch.setattr(generation, "generate_samples", generate)


def _calibration(window: str, steps: int, weight: float) -> calibrated.Calibration:
    errors = [list(np.linspace(-2, 2, 41)) for _ in range(steps)]  # in units of the stock's volatility
    return calibrated.Calibration(
        {window: errors},
        start="2026-02-02",
        end="2026-03-31",
        windows=50,
        usable=41,
        point="calibrated",
        weights={window: weight},
        scaled=True,
    )


def forecast_pages(prices: Path, out: Path, monkeypatch) -> dict:
    """Three runs of the real `forecast_many`: sampled bands for two codes and a failed third; greedy with no
    calibration (no band) from one known day; a calibration that weighs the model's change 0 (persistence)."""
    _fake_model(monkeypatch, broken=("鴻海",))
    sampled = _predictor(prices, out / "sampled", samples=5, temperature=0.7)
    made = {"sampled": sampled.forecast_many(["2330", "6569", "2317"], past=5, future=3)}
    made["greedy"] = _predictor(prices, out / "greedy").forecast_many(["2330"], past=1, future=1)
    weighed = _predictor(prices, out / "weighed")
    from forecasting import latest

    monkeypatch.setattr(latest, "band_calibration", lambda *args: _calibration("20:5", 5, 0.0))
    made["weighed"] = weighed.forecast_many(["6569"], past=20, future=5)
    return made


def evaluation_page(prices: Path, out: Path) -> dict:
    """An evaluation by the real walk-forward code over April 2026, with a fake tuned LLM that answers
    persistence (so its calibrated weight is 0), an untuned one that never answers, and the baselines."""
    adapter = out / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    config = {
        "base_model": "fake",
        "data": {"year": 2026, "month": 1, "end_date": "2026-03-31", "stride": 1, "val_fraction": 0.3},
        "dataset": {"fields": OHLCV, "windows": ["1:1", "5:5"], "cutoff": "2026-02-16", "last_date": "2026-03-31"},
        "companies": [
            {"code": "2330", "name_zh": "台積電", "market": "twse"},
            {"code": "2317", "name_zh": "鴻海", "market": "twse"},
        ],
    }
    (adapter / "stock_config.json").write_text(json.dumps(config, ensure_ascii=False))
    cfg = EvalConfig(test_end="2026-04-30", bootstrap=50, stride=1, models="tuned,base")
    pool = fake_pool(
        tuned=lambda prompts, n: [_answer(p[0]["content"], 0.0) for p in prompts],
        base=lambda prompts, n: ["no idea"] * len(prompts),
    )
    return _predictor(prices, out, cfg).evaluate(pool)["paths"]


def test_a_forecast_run_writes_one_page_listing_every_code(made):
    sampled, greedy, weighed = made["sampled"], made["greedy"], made["weighed"]
    assert [r.ok for r in sampled] == [True, True, False] and sampled[0].band_kind == "sampled"
    assert {r.page for r in sampled} == {made["root"] / "out" / "sampled" / "forecasts" / "index.html"}
    page = sampled[0].page.read_text(encoding="utf-8")
    for words in (
        "2330 台積電",
        "6569",
        "2317 鴻海",
        "No usable forecast",
        "I think it goes up!",
        "80% band (sampled)",
    ):
        assert words in page
    assert page.count('<img src="data:image/png;base64,') == 2  # the two charts, inline
    assert greedy[0].bands is None and "no calibration" in chart.no_band_reason(greedy[0])
    page = greedy[0].page.read_text(encoding="utf-8")
    assert "No band: see below." in page and "<li>No band: no calibration for this adapter" in page
    assert weighed[0].weight == 0 and weighed[0].band_kind == "calibrated" and weighed[0].bands is not None
    page = weighed[0].page.read_text(encoding="utf-8")
    assert f"Note: {forecast_page.PERSISTENCE}." in page and "80% band (calibrated) from errors of 41 held-out" in page
    assert not list((made["root"] / "out").rglob(".*tmp*"))  # atomic writes leave no temporary file


def test_a_chart_shows_a_month_of_history_even_from_one_known_day(made):
    (result,) = made["greedy"]
    shown = chart.chart_history(result)
    assert len(result.past) == 1 and len(shown) >= chart.CHART_DAYS and shown.index[-1] == result.past.index[-1]
    assert result.chart.name == f"2330_{result.past.index[-1]:%Y%m%d}_1to1.png"  # named by the prompt's days


def test_the_evaluation_page_is_report_md_with_its_charts_inline(made):
    html = made["report"]["page"].read_text(encoding="utf-8")
    report = made["report"]["report"].read_text(encoding="utf-8")
    for heading in re.findall(r"^#+ (.+)$", report, flags=re.MULTILINE):
        assert html_.markdown_html(heading).removeprefix("<p>").removesuffix("</p>") in html
    table_lines = re.findall(r"^\|.*$", report, flags=re.MULTILINE)
    separators = [line for line in table_lines if re.fullmatch(r"\|[ :|-]+\|", line)]
    assert html.count("<tr>") == len(table_lines) - len(separators) > 20  # every row of every table
    assert len(re.findall(r"<img src=\"data:image/png;base64,", html)) == len(re.findall(r"!\[", report)) == 3
    assert "this point forecast is persistence" in report and "this point forecast is persistence" in html


# --------------------------------------------------------------------------- in a real browser


def _browser():
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium; setup.sh does where apt is available)")
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements-dev)")
    return playwright.sync_playwright()


def look(browser, path: Path, shots: Path) -> list[str]:
    """Open `path` on a phone and a desktop viewport; the problems seen (console errors, broken images, empty
    tables, a page wider than a phone, requests leaving the file); full-page screenshots into `shots`."""
    problems = []
    for name, viewport in VIEWPORTS.items():
        tab = browser.new_page(viewport=viewport)
        tab.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        tab.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        tab.on("requestfailed", lambda r: problems.append(f"request failed: {r.url[:80]}"))
        tab.on("request", lambda r: None if r.url.startswith(("file:", "data:")) else problems.append(f"fetch {r.url}"))
        tab.goto(path.as_uri(), wait_until="load")
        seen = tab.evaluate(
            """() => ({
                images: [...document.images].map(i => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0})),
                tables: [...document.querySelectorAll('table')].map(t => ({
                    head: t.tHead ? t.tHead.innerText.trim().slice(0, 60) : '',
                    cells: [...t.querySelectorAll('tbody td')].filter(td => td.innerText.trim()).length})),
                wide: document.documentElement.scrollWidth - window.innerWidth,
            })"""
        )
        problems.extend(f"{name}: broken image {i['alt']!r}" for i in seen["images"] if not i["ok"])
        problems.extend(f"{name}: empty table {t['head']!r}" for t in seen["tables"] if not t["cells"])
        if seen["wide"] > 0:
            problems.append(f"{name}: the page is {seen['wide']} px wider than the screen")
        if not seen["tables"] or not seen["images"]:
            problems.append(f"{name}: no table or no image at all")
        shots.mkdir(parents=True, exist_ok=True)
        tab.screenshot(path=str(shots / f"{path.parent.parent.name}-{path.stem}-{name}.png"), full_page=True)
        tab.close()
    return problems


@pytest.mark.slow
def test_both_pages_show_in_a_real_browser(made, tmp_path):
    paths = [made["report"]["page"], *(made[run][0].page for run in ("sampled", "greedy", "weighed"))]
    with _browser() as p:
        started = time.monotonic()
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            problems = [
                f"{path.parent.parent.name}/{path.name}: {x}" for path in paths for x in look(browser, path, tmp_path)
            ]
        finally:
            browser.close()
    assert not problems, "\n".join(problems)
    shots = sorted(tmp_path.glob("*.png"))
    assert len(shots) == 8 and all(s.read_bytes()[:4] == b"\x89PNG" for s in shots)
    print(f"browser: {time.monotonic() - started:.1f} s for 4 pages × 2 viewports; screenshots in {tmp_path}")


@pytest.mark.slow
def test_a_broken_page_is_caught(tmp_path):
    """The browser check itself: a broken image, an empty table and a script error are each reported."""
    (tmp_path / "x" / "y").mkdir(parents=True)
    bad = tmp_path / "x" / "y" / "bad.html"
    body = '<img src="data:image/png;base64,AAAA" alt="junk"><table><thead><tr><th>a</th></tr></thead></table>'
    bad.write_text(html_.page("bad", body + "<script>undefined_function()</script>"), encoding="utf-8")
    with _browser() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            problems = look(browser, bad, tmp_path)
        finally:
            browser.close()
    text = "\n".join(problems)
    assert "broken image 'junk'" in text and "empty table 'a'" in text and "undefined_function" in text
