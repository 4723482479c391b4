"""AnswerCache"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from utils import append_jsonl


class AnswerCache:
    """Generated answers, appended as each chunk finishes, so an interrupted evaluation resumes where it
    stopped instead of generating everything again. Keys cover the model's identity, the prompt and the
    token budget; a torn last line (a crash mid-write) is ignored."""

    def __init__(self, path: Path, identity: str):
        self.path, self.identity = path, identity
        self.answers: dict[str, list[str]] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                self.answers[row["key"]] = row["answer"]

    def key(self, prompt: list[dict], max_new_tokens: int) -> str:
        text = json.dumps([self.identity, max_new_tokens, prompt], ensure_ascii=False)
        return hashlib.sha1(text.encode("utf-8")).hexdigest()

    def add(self, keys: list[str], answers: list) -> None:
        append_jsonl(self.path, [{"key": k, "answer": a} for k, a in zip(keys, answers, strict=True)])
        self.answers.update(zip(keys, answers, strict=True))
