"""Small helpers shared by every module: the project error type, atomic writes, logging, dates."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
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
