"""Financial instruction data: loading (Alpaca, TRL conversational, sentiment rows), prompt templates,
mixing, the overlap guard, and the scorers of a base-vs-tuned comparison.

Pure functions except the file readers. The same `to_example` builds training examples and inference
prompts, so a template is identical at training and at inference.

Row kinds:
- Alpaca: `instruction`, `input`, `output` (Cornucopia's format; exams add `choices`/`answer` letters);
- TRL conversational: `messages` [{role, content}, ...], the last one the assistant's answer;
- sentiment: `text`, `label`, `label_set` (turned into an instruction that lists the labels).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from utils import StockToolError, parse_file_weights, read_user_text  # noqa: F401 (parse_file_weights: its home was here)

# Cornucopia's plain template (seed 004), used as is at training and inference with --prompt-template cornucopia.
CORNUCOPIA = "下面是一个问题，运用金融财经知识来正确回答问题。\n### 问题:\n{question}\n### 回答:\n"


TEMPLATES = ("chat", "cornucopia")


@dataclass(frozen=True)
class Row:
    instruction: str
    input: str
    output: str
    kind: str  # alpaca, messages, sentiment
    gold: str = ""  # exam letters (e.g. "BD") or a sentiment label; empty for free text
    labels: tuple[str, ...] = ()
    messages: tuple = ()  # the conversation before the answer, for TRL conversational rows
    origin: str = ""  # file:line

    @property
    def question(self) -> str:
        return self.instruction if not self.input else f"{self.instruction}\n{self.input}"

    @property
    def task(self) -> str:
        if self.kind == "forecaster":
            return "forecaster"
        if self.labels:
            return "sentiment"
        if self.gold and re.fullmatch(r"[A-F]+", self.gold):
            return "multiple_choice"
        return "free_text"


def fingerprint(row: Row) -> str:
    """The identity of a question for the overlap guard (answer excluded)."""
    text = json.dumps([row.question.strip(), [list(m) for m in row.messages]], ensure_ascii=False)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def parse_row(record: dict, origin: str) -> Row:
    """One JSON object → Row; a ValueError says what is missing."""
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    if "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list) or len(messages) < 2 or messages[-1].get("role") != "assistant":
            raise ValueError("`messages` must be a list ending with the assistant's answer")
        turns = tuple((str(m["role"]), str(m["content"])) for m in messages[:-1])
        user = next((c for r, c in reversed(turns) if r == "user"), "")
        return Row(user, "", str(messages[-1]["content"]), "messages", messages=turns, origin=origin)
    if "movement" in record:  # a news-driven analysis row: gold bin, last week's bin (persistence)
        return Row(
            str(record["prompt"]),
            "",
            str(record.get("answer") or ""),
            "forecaster",
            gold=str(record["movement"]),
            labels=(str(record["last_movement"]),),
            origin=origin,
        )
    if "text" in record and "label" in record:
        labels = tuple(str(x) for x in record.get("label_set") or [])
        if not labels or str(record["label"]) not in labels:
            raise ValueError("a sentiment row needs `label_set` containing its `label`")
        instruction = f"What is the sentiment of this text? Answer with one of: {', '.join(labels)}."
        if any("\u4e00" <= ch <= "\u9fff" for ch in "".join(labels)):
            instruction = f"判断以下文本的情感倾向，只回答其中之一：{'、'.join(labels)}。"
        label = str(record["label"])
        return Row(instruction, str(record["text"]), label, "sentiment", gold=label, labels=labels, origin=origin)
    missing = [k for k in ("instruction", "output") if not isinstance(record.get(k), str)]
    if missing:
        raise ValueError(f"missing field(s) {missing} (Alpaca rows need instruction, input, output)")
    gold = str(record.get("answer") or "") if record.get("choices") else ""
    return Row(
        record["instruction"], str(record.get("input") or ""), record["output"], "alpaca", gold=gold, origin=origin
    )


def read_rows(path: str | Path, skip_bad_rows: bool = False) -> tuple[list[Row], int]:
    """A JSON array or JSONL file → (rows, skipped). A bad row stops with its file and line, unless skipped."""
    path = Path(path)
    text = read_user_text(path, "dataset file")  # UTF-8, UTF-16 or Big5
    records: list[tuple[int, object]] = []
    if text.lstrip().startswith("["):
        try:
            records = list(enumerate(json.loads(text), start=1))
        except json.JSONDecodeError as exc:
            raise StockToolError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from exc
    else:
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append((number, json.loads(line)))
            except json.JSONDecodeError as exc:
                if not skip_bad_rows:
                    raise StockToolError(
                        f"{path} line {number}: not valid JSON ({exc.msg}); fix it or pass --skip-bad-rows"
                    ) from exc
                records.append((number, None))
    rows, skipped = [], 0
    for number, record in records:
        try:
            if record is None:
                raise ValueError("not valid JSON")
            rows.append(parse_row(record, f"{path.name}:{number}"))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            if not skip_bad_rows:
                raise StockToolError(f"{path} row {number}: {exc}; fix it or pass --skip-bad-rows") from exc
            skipped += 1
    if not rows:
        raise StockToolError(f"{path}: no usable rows" + (f" ({skipped} bad rows skipped)" if skipped else ""))
    return rows, skipped


def mix(files: list[tuple[list[Row], float]], seed: int) -> list[Row]:
    """Rows of each file repeated int(weight) times plus a seeded sample of the fraction, then shuffled."""
    rng = random.Random(seed)
    mixed = []
    for rows, weight in files:
        whole, part = int(weight), weight - int(weight)
        mixed += rows * whole + rng.sample(rows, round(len(rows) * part))
    rng.shuffle(mixed)
    return mixed


def split(rows: list[Row], val_fraction: float, seed: int) -> tuple[list[Row], list[Row]]:
    """A seeded split by question, so that the same question never sits on both sides."""
    by_question: dict[str, list[Row]] = {}
    for row in rows:
        by_question.setdefault(fingerprint(row), []).append(row)
    keys = sorted(by_question)
    random.Random(seed).shuffle(keys)
    n_val = max(1, int(len(keys) * val_fraction)) if len(keys) > 1 else 0
    val = [r for k in keys[:n_val] for r in by_question[k]]
    train = [r for k in keys[n_val:] for r in by_question[k]]
    return train, val


def to_example(row: Row, template: str) -> dict:
    """TRL prompt-completion: conversational for `chat` (the model's chat template adds its tokens),
    plain text for `cornucopia`."""
    if template == "cornucopia":
        return {"prompt": CORNUCOPIA.format(question=row.question), "completion": row.output}
    prompt = [{"role": r, "content": c} for r, c in row.messages] or [{"role": "user", "content": row.question}]
    return {"prompt": prompt, "completion": [{"role": "assistant", "content": row.output}]}


SECTIONS = ("[Positive Developments]:", "[Potential Concerns]:", "[Prediction & Analysis]:")


def movement_bin(ret: float) -> str:
    """FinGPT-Forecaster's bins: U1…U5 / D1…D5 by whole percent, U5+ / D5+ beyond 5%."""
    pct = abs(ret) * 100
    side = "U" if ret >= 0 else "D"
    return f"{side}5+" if pct >= 5 else f"{side}{int(pct) + 1}"


def bin_words(label: str) -> str:
    direction = "Up" if label[0] == "U" else "Down"
    return f"{direction} by more than 5%" if label.endswith("+") else f"{direction} by {int(label[1]) - 1}-{label[1]}%"


def _bin_index(label: str) -> int:
    size = 6 if label.endswith("+") else int(label[1])
    return size if label[0] == "U" else -size


def forecaster_prompt(name: str, code: str, weeks: list[dict], next_week: tuple[str, str]) -> str:
    """Company introduction, the past weeks' moves and each week's headlines (as of its end), then the ask.

    `weeks`: [{"start", "end", "open_close": (first, last close), "headlines": [str]}], oldest first.
    """
    lines = [f"[Company Introduction]:\n{name} (stock code {code}) is listed in Taiwan.", ""]
    for w in weeks:
        first, last = w["open_close"]
        verb = "increased" if last >= first else "decreased"
        lines.append(
            f"From {w['start']} to {w['end']}, {name}'s stock price {verb} from {first:g} to {last:g}. "
            "Company news during this period are listed below:"
        )
        lines += [f"[Headline]: {h}" for h in w["headlines"]] or ["[Headline]: (none)"]
        lines.append("")
    lines.append(
        f"Based on all the information before {next_week[0]}, let's first analyze the positive developments and "
        f"potential concerns for {name}. Come up with 2-4 most important factors respectively and keep them "
        "concise. Most factors should be inferred from company related news. Then make your prediction of the "
        f"{name} stock price movement for next week ({next_week[0]} to {next_week[1]}). Provide a summary "
        "analysis to support your prediction."
    )
    return "\n".join(lines)
