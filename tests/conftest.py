"""Shared fixtures: the real data in ../shared/data (skipped when absent) and a local exchange server."""

from __future__ import annotations

import http.server
import json
import sys
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Converted models go to one cache per test session, never to the user's ~/.cache."""
    monkeypatch.setenv("STOCK_LLM_CACHE", str(tmp_path_factory.getbasetemp() / "model-cache"))


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED / "prices").is_dir():
        pytest.skip(f"real market data not found at {SHARED} (the project's ../shared/data is absent)")
    return SHARED


def recorded(name: str) -> str:
    path = SHARED / "twse_responses" / name
    if not path.is_file():
        pytest.skip(f"recorded exchange response {path} not found (../shared/data is absent)")
    return path.read_text(encoding="utf-8")


class ExchangeServer:
    """A real HTTP server on 127.0.0.1 answering STOCK_DAY / tradingStock requests from a routing table.

    `routes[(endpoint, key)]` is a body (str), an int HTTP status, or a list of those (one per call);
    key is `stockNo|YYYYMM01` for TWSE and `code|YYYY/MM/01` for TPEx.
    """

    def __init__(self):
        self.routes: dict[tuple[str, str], object] = {}
        self.calls: list[tuple[str, str]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                url = urlparse(self.path)
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path.endswith("/exchangeReport/STOCK_DAY"):
                    key = ("STOCK_DAY", f"{q.get('stockNo')}|{q.get('date')}")
                else:
                    key = ("tradingStock", f"{q.get('code')}|{q.get('date')}")
                server.calls.append(key)
                answer = server.routes.get(key, json.dumps({"stat": "很抱歉，沒有符合條件的資料!"}))
                if isinstance(answer, list):
                    answer = answer.pop(0) if len(answer) > 1 else answer[0]
                if isinstance(answer, int):
                    self.send_response(answer)
                    self.end_headers()
                    return
                body = answer.encode("utf-8")
                self.send_response(200)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def exchange():
    server = ExchangeServer()
    yield server
    server.close()


@pytest.fixture
def client_for(exchange):
    """An ExchangeClient pointed at the local server, with no real waiting."""
    from market_data import ExchangeClient, Throttle

    def make(**kwargs):
        return ExchangeClient(
            twse_url=exchange.url,
            tpex_url=exchange.url,
            timeout=kwargs.pop("timeout", 5.0),
            throttle=Throttle(0.0),
            sleep=lambda s: None,
            **kwargs,
        )

    return make
