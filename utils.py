"""Small helpers shared by every module: the project error type, atomic writes, logging, dates."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from zoneinfo import ZoneInfo

TAIPEI = ZoneInfo("Asia/Taipei")

log = logging.getLogger("stock")


class StockToolError(Exception):
    """A failure the user can fix; `main()` prints it without a traceback and exits non-zero."""


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )


def taipei_today() -> dt.date:
    """The exchange's calendar day (the market closes in Taipei, not in the user's time zone)."""
    return dt.datetime.now(TAIPEI).date()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write to a temporary file beside `path`, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=2, default=str) + "\n")


def write_jsonl(path: str | os.PathLike, rows) -> Path:
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def append_jsonl(path: str | os.PathLike, rows) -> Path:
    """Append JSON lines and sync them to disk: what is written survives a crash right after."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows))
        fh.flush()
        os.fsync(fh.fileno())
    return path


# How a user's text file may be encoded: UTF-8 (with or without a BOM) first, then what Taiwanese files come in.
# UTF-16 is taken only with its BOM; without one, its NUL bytes are refused below.
TEXT_ENCODINGS = ("utf-8", "cp950", "big5hkscs")
_BOMS = ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))


def read_user_text(path: str | os.PathLike, what: str) -> str:
    """The text of a file the user gives (`what` names it in errors: "news CSV"), whatever its encoding.

    A BOM decides (UTF-8, UTF-16 LE/BE); without one the file is read as UTF-8, else as Big5 (CP950, then
    Big5-HKSCS), which spreadsheets in Taiwan save. A file none of them reads is refused with its line and the
    encodings tried; so is a folder, a missing file or a binary one."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise StockToolError(f"{what} {path} is a folder, not a file") from None
    except FileNotFoundError:
        raise StockToolError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise StockToolError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    tried = [encoding for bom, encoding in _BOMS if data.startswith(bom)][:1] or list(TEXT_ENCODINGS)
    first_error = None
    for encoding in tried:
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError as exc:
            first_error = first_error or exc
            continue
        if "\x00" in text:
            line = text.count("\n", 0, text.index("\x00")) + 1
            raise StockToolError(
                f"{what} {path} line {line}: a NUL character: a binary file, or UTF-16 without a BOM? Save it as UTF-8"
            )
        if encoding not in ("utf-8", "utf-8-sig"):
            log.info("%s %s read as %s", what, path, encoding)
        return text.removeprefix("\ufeff")
    line = data.count(b"\n", 0, first_error.start) + 1
    raise StockToolError(
        f"{what} {path} line {line}: not readable as text (tried {', '.join(tried)}): save it as UTF-8"
    )


def is_writable_dir(path: str | os.PathLike) -> bool:
    """True when files can be created in `path` (creating it if needed)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK)


class Retry(Exception):
    """Raised by one attempt of `with_retries` that may be tried again; its text says what went wrong."""


def with_retries(attempt, retries: int, backoff: float, sleep, failure):
    """`attempt()`'s result, trying up to `retries` times and sleeping `backoff` × 2^(k-1) s before the k-th
    retry, while it raises `Retry`; any other exception ends it at once. After the last attempt the exception
    `failure(what went wrong last)` is raised. The one retry loop of the exchange, trading-server and teacher
    clients."""
    last = "no attempt"
    for k in range(retries):
        if k:
            sleep(backoff * 2 ** (k - 1))
        try:
            return attempt()
        except Retry as exc:
            last = str(exc)
    raise failure(last)


def parse_file_weights(text: str) -> list[tuple[str, float]]:
    """'a.jsonl,b.jsonl:0.5' → [(path, weight)]; a weight multiplies a file's rows (0.5: a seeded half)."""
    out = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        path, _, weight = part.rpartition(":") if re.search(r":[0-9.]+$", part) else (part, "", "1")
        try:
            w = float(weight)
        except ValueError:
            raise StockToolError(f"--dataset-file {part!r}: the weight after ':' is not a number") from None
        if w <= 0:
            raise StockToolError(f"--dataset-file {part!r}: the weight must be positive")
        out.append((path, w))
    if not out:
        raise StockToolError("--dataset-file names no file")
    return out
