"""Self-contained HTML pages: a small markdown converter, images inlined, one page shell."""

from __future__ import annotations

import base64
import datetime as dt
import html
import re
from collections.abc import Callable
from pathlib import Path

from utils import TAIPEI, atomic_write_text

REPORT_PAGE = "report.html"


IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}


SHORT_CELL = 24  # characters: a table cell this short never wraps (the table scrolls instead)


CSS = """
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%;text-size-adjust:100%}
body{margin:0;background:#eef0f3;color:#1b1f24;font:16px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,
"Noto Sans TC","PingFang TC","Microsoft JhengHei",sans-serif}
main{max-width:64rem;margin:0 auto;padding:1rem 1rem 3rem;background:#fff;min-height:100vh}
h1{font-size:1.45rem;line-height:1.25;margin:.5rem 0 1rem}
h2{font-size:1.2rem;line-height:1.3;margin:2.2rem 0 .6rem;padding-bottom:.3rem;border-bottom:2px solid #e3e6ea}
h3{font-size:1.05rem;margin:1.5rem 0 .5rem}
p,li{overflow-wrap:anywhere}
ul,ol{padding-left:1.3rem}
li{margin:.2rem 0}
.table{overflow-x:auto;-webkit-overflow-scrolling:touch;margin:.8rem 0;border:1px solid #e3e6ea;border-radius:6px}
table{border-collapse:collapse;font-size:.86rem;min-width:100%}
th,td{padding:.4rem .6rem;border-bottom:1px solid #e3e6ea;vertical-align:top;text-align:left}
th{background:#f3f5f7;font-weight:600}
tbody tr:last-child td{border-bottom:0}
td.r,th.r{text-align:right;font-variant-numeric:tabular-nums}
td.c,th.c{text-align:center}
td.n,th.n{white-space:nowrap}
td:not(.n),th:not(.n){min-width:11rem}
figure{margin:1rem 0}
img{display:block;max-width:100%;height:auto;border:1px solid #e3e6ea;border-radius:6px}
figcaption{font-size:.85rem;color:#57606a;margin-top:.3rem}
code{font:.88em/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#f3f5f7;padding:.05em .3em;
border-radius:4px}
pre{overflow-x:auto;background:#f3f5f7;padding:.75rem;border-radius:6px;font-size:.85rem}
pre code{background:none;padding:0}
.missing{color:#b42318}
footer{margin-top:2.5rem;font-size:.8rem;color:#57606a}
@media (max-width:480px){body{font-size:15px}main{padding:.75rem .75rem 2rem}h1{font-size:1.25rem}}
"""


_FENCE = re.compile(r"^\s*(```|~~~)")


_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


_ITEM = re.compile(r"^(\s*)([-*+]|\d+[.)])\s+(.*)$")


_RULE = re.compile(r"^\s*(-{3,}|\*{3,}|_{3,})\s*$")


_TABLE_SEPARATOR = re.compile(r"^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")


_ONLY_IMAGE = re.compile(r"^!\[([^\]]*)\]\(([^)\s]+)\)$")


_CELL_SPLIT = re.compile(r"(?<!\\)\|")


_ESCAPED = re.compile(r"\\([\\`*_\[\]()|!#<>-])")


def markdown_html(text: str, image: Callable[[str], str | None] = lambda src: src) -> str:
    """HTML for the markdown `text`. `image(src)` gives an image's URL (e.g. a data URI), or None when it is
    missing, which is then said in words instead of drawn as a broken image."""
    lines = text.replace("\r\n", "\n").split("\n")
    out: list[str] = []
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            joined = "\n".join(line.strip() for line in paragraph)
            alone = _ONLY_IMAGE.match(joined)
            out.append(_figure(alone[1], alone[2], image) if alone else f"<p>{_inline(joined, image)}</p>")
            paragraph.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            flush()
            i += 1
        elif _FENCE.match(line):
            flush()
            block, i = _fenced(lines, i)
            out.append(block)
        elif _HEADING.match(line):
            flush()
            level, words = len(_HEADING.match(line)[1]), _HEADING.match(line)[2]
            out.append(f"<h{level}>{_inline(words, image)}</h{level}>")
            i += 1
        elif "|" in line and i + 1 < len(lines) and _TABLE_SEPARATOR.match(lines[i + 1]) and "-" in lines[i + 1]:
            flush()
            block, i = _table_at(lines, i, image)
            out.append(block)
        elif _RULE.match(line) and not paragraph:
            out.append("<hr>")
            i += 1
        elif _ITEM.match(line):
            flush()
            block, i = _list_at(lines, i, image)
            out.append(block)
        else:
            paragraph.append(line)
            i += 1
    flush()
    return "\n".join(out)


def _fenced(lines: list[str], i: int) -> tuple[str, int]:
    """(the fenced code block opening at line `i`, the line after its closing fence)."""
    fence, body = _FENCE.match(lines[i])[1], []
    i += 1
    while i < len(lines) and not lines[i].strip().startswith(fence):
        body.append(lines[i])
        i += 1
    return f"<pre><code>{html.escape(chr(10).join(body))}</code></pre>", i + 1


def _table_at(lines: list[str], i: int, image) -> tuple[str, int]:
    """(the table whose header is line `i`, the line after its last row)."""
    rows = [lines[i], lines[i + 1]]
    i += 2
    while i < len(lines) and lines[i].strip() and "|" in lines[i]:
        rows.append(lines[i])
        i += 1
    return _table(rows, image), i


def _list_at(lines: list[str], i: int, image) -> tuple[str, int]:
    """(the list whose first item is line `i`, the line after it)."""
    items = []
    while i < len(lines) and lines[i].strip():
        item = _ITEM.match(lines[i])
        if item:
            items.append([len(item[1].expandtabs(4)), item[2][0].isdigit(), item[3]])
        elif lines[i][:1].isspace() or not _starts_block(lines[i]):
            items[-1][2] += "\n" + lines[i].strip()  # a continuation of the item above
        else:
            break
        i += 1
    return _list(items, image), i


def _starts_block(line: str) -> bool:
    return bool(_HEADING.match(line) or _FENCE.match(line) or line.lstrip().startswith("|"))


def _list(items: list, image) -> str:
    """Nested <ul>/<ol> from (indent, ordered, text) items: a deeper indent opens a list inside the item above."""
    out, open_lists = [], []  # open_lists: (indent, tag)
    for indent, ordered, text in items:
        tag = "ol" if ordered else "ul"
        if not open_lists or indent > open_lists[-1][0]:
            out.append(f"<{tag}>")
            open_lists.append((indent, tag))
        else:
            while len(open_lists) > 1 and indent < open_lists[-1][0]:
                out.append(f"</li></{open_lists.pop()[1]}>")
            out.append("</li>")
        out.append(f"<li>{_inline(text, image)}")
    while open_lists:
        out.append(f"</li></{open_lists.pop()[1]}>")
    return "".join(out)


def _cells(line: str) -> list[str]:
    line = line.strip()
    line = line[1:] if line.startswith("|") else line
    line = line[:-1] if line.endswith("|") and not line.endswith("\\|") else line
    return [cell.strip() for cell in _CELL_SPLIT.split(line)]


def _table(rows: list[str], image) -> str:
    """A pipe table in a horizontally scrolling box; `---:` columns right-aligned, `:---:` centred, and a short
    cell (a number, a date, a model's name) kept on one line."""
    head = _cells(rows[0])
    aligns = []
    for spec in _cells(rows[1]):
        right, left = spec.endswith(":"), spec.startswith(":")
        aligns.append("c" if left and right else "r" if right else "")
    aligns += [""] * (len(head) - len(aligns))

    def cell(tag: str, text: str, align: str) -> str:
        classes = " ".join(c for c in (align, "n" if len(_ESCAPED.sub(r"\1", text)) <= SHORT_CELL else "") if c)
        attribute = f' class="{classes}"' if classes else ""
        return f"<{tag}{attribute}>{_inline(text, image)}</{tag}>"

    out = ['<div class="table"><table><thead><tr>']
    out += [cell("th", c, a) for c, a in zip(head, aligns, strict=False)]
    out.append("</tr></thead><tbody>")
    for row in rows[2:]:
        cells = (_cells(row) + [""] * len(head))[: len(head)]
        out.append("<tr>" + "".join(cell("td", c, a) for c, a in zip(cells, aligns, strict=False)) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _figure(alt: str, src: str, image) -> str:
    """An image alone in its paragraph: a figure, captioned by its alt text; a tap opens the image file beside
    the page at full size (the page itself still shows it when moved alone)."""
    shown = _image(alt, src, image)
    if "<img" in shown and not src.startswith("data:"):
        shown = f'<a href="{html.escape(src)}">{shown}</a>'
    return f"<figure>{shown}<figcaption>{_inline(alt, image)}</figcaption></figure>"


def _image(alt: str, src: str, image) -> str:
    url = image(html.unescape(src))
    alt_text = html.escape(html.unescape(_ESCAPED.sub(r"\1", alt)))
    if url is None:
        return f'<span class="missing">[image {html.escape(src)} not found]</span>'
    return f'<img src="{html.escape(url)}" alt="{alt_text}">'


def _inline(text: str, image) -> str:
    """Code spans, backslash escapes, images, links, bold and italics (asterisks only: underscores stay, as in
    file names) of one block's text, everything else escaped."""
    kept: list[str] = []

    def keep(fragment: str) -> str:
        kept.append(fragment)
        return f"\x00{len(kept) - 1}\x00"

    text = _ESCAPED.sub(lambda m: keep(html.escape(m[1])), text)
    text = re.sub(r"`([^`]+)`", lambda m: keep(f"<code>{html.escape(m[1])}</code>"), text)
    text = re.sub(r"!\[([^\]]*)\]\(([^)\s]+)\)", lambda m: keep(_image(m[1], m[2], image)), text)
    text = html.escape(text)
    text = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", lambda m: f'<a href="{m[2]}">{m[1]}</a>', text)
    text = re.sub(r"\*\*(?=\S)(.+?)(?<=\S)\*\*", r"<strong>\1</strong>", text)
    text = re.sub(r"(?<![*\w])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![*\w])", r"<em>\1</em>", text)
    text = text.replace("\n", " ")
    return re.sub(r"\x00(\d+)\x00", lambda m: kept[int(m[1])], text)


def escape_markdown(text: str) -> str:
    """`text` (a name, a note, a model's problem) as literal markdown: its special characters backslash-escaped."""
    return re.sub(r"([\\`*_\[\]|!#<>])", r"\\\1", str(text))


def embedded(folder: Path) -> Callable[[str], str | None]:
    """An `image` for `markdown_html`: a relative path to an image file in `folder` → its bytes as a data URI."""
    folder = Path(folder).resolve()

    def data_uri(src: str) -> str | None:
        if src.startswith("data:"):
            return src
        path = (folder / src).resolve()
        kind = IMAGE_TYPES.get(path.suffix.lower())
        if kind is None or folder not in path.parents or not path.is_file():
            return None
        return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"

    return data_uri


def page(title: str, body: str, footer: str = "") -> str:
    """One self-contained HTML document: viewport for phones, CSS inline, no script, no external resource."""
    foot = f"<footer>{footer}</footer>" if footer else ""
    return (
        "<!doctype html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<link rel="icon" href="data:,">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n"
        f"<body>\n<main>\n{body}\n{foot}\n</main>\n</body>\n</html>\n"
    )


def _title(markdown: str, default: str) -> str:
    found = re.search(r"^#\s+(.+)$", markdown, flags=re.MULTILINE)
    return found[1].strip().replace("`", "") if found else default


def _made() -> str:
    return f"Made {dt.datetime.now(TAIPEI):%Y-%m-%d %H:%M} Taipei time by this project's `main.py`."


def write_report_page(folder: Path, markdown: str) -> Path:
    """`folder/report.html`: the report's markdown as a page, its charts (PNGs in `folder`) inline."""
    body = markdown_html(markdown, embedded(folder))
    foot = markdown_html(_made() + " The same report as `report.md`; figures in `metrics.json`.")
    return atomic_write_text(Path(folder) / REPORT_PAGE, page(_title(markdown, "Evaluation report"), body, foot))
