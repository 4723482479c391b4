"""A teacher model behind any OpenAI-compatible chat endpoint (`POST {url}/chat/completions`).

Used to write the training answers of the news-driven analysis dataset. The key comes from
TEACHER_API_KEY and is sent only as the Authorization header. Calls have a timeout and
are retried with backoff (a chat completion has no side effect), and every answer is cached by the caller.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from utils import Retry, StockToolError, with_retries


@dataclass
class TeacherClient:
    url: str
    model: str
    api_key: str = field(default_factory=lambda: os.environ.get("TEACHER_API_KEY", ""), repr=False)
    timeout: float = 120.0
    retries: int = 3
    backoff: float = 5.0
    sleep: object = None  # None: time.sleep
    calls: int = 0

    def chat(self, system: str, user: str) -> str:
        import requests

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        body = {
            "model": self.model,
            "temperature": 0,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        }

        def attempt() -> str:
            self.calls += 1
            try:
                response = requests.post(
                    f"{self.url.rstrip('/')}/chat/completions", json=body, headers=headers, timeout=self.timeout
                )
            except requests.RequestException as exc:
                raise Retry(type(exc).__name__) from None
            if response.status_code in (401, 403):
                raise StockToolError(f"the teacher endpoint refused the key (HTTP {response.status_code})")
            if response.status_code != 200:
                raise Retry(f"HTTP {response.status_code}")
            try:
                return str(response.json()["choices"][0]["message"]["content"])
            except (ValueError, KeyError, IndexError, TypeError):
                raise Retry("a reply that is not a chat completion") from None

        def failure(last: str) -> StockToolError:
            return StockToolError(f"the teacher endpoint {self.url} failed {self.retries} time(s): {last}")

        return with_retries(attempt, self.retries, self.backoff, self.sleep or time.sleep, failure)
