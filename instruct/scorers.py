"""Scorers of instruction answers, each with a typed score record: accuracy and macro-F1 for choices and
sentiment, ROUGE-L for free text, the FinGPT-forecaster rows' sections and movement bins.
"""

from __future__ import annotations

import re
from typing import TypedDict

from instruct.instruction_data import SECTIONS, Row, _bin_index
from utils import StockToolError, parse_file_weights, read_user_text  # noqa: F401 (parse_file_weights: its home was here)


def choice_letters(answer: str) -> str:
    """The letters an answer commits to: a leading run like 'BD', 'B、D' or '答案：B' (sorted, unique)."""
    text = answer.strip().upper()
    match = re.match(r"^(?:答案[是为：:]*\s*|ANSWER[:：]?\s*)?([A-F](?:[\s,、，和及]*[A-F])*)(?![A-Z])", text)
    return "".join(sorted(set(re.findall(r"[A-F]", match[1])))) if match else ""


def sentiment_label(answer: str, labels: tuple[str, ...]) -> str:
    """The label the answer names first (case-insensitive); '' when it names none."""
    text = answer.lower()
    found = [(text.find(label.lower()), label) for label in labels if label.lower() in text]
    return min(found)[1] if found else ""


def _tokens(text: str) -> list[str]:
    """Characters for Chinese, lower-cased words otherwise (ROUGE-L on either)."""
    return re.findall(r"[\u4e00-\u9fff]|[a-z0-9]+", text.lower())


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 from the longest common subsequence of tokens."""
    a, b = _tokens(candidate), _tokens(reference)
    if not a or not b:
        return 0.0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(a), lcs / len(b)
    return 2 * precision * recall / (precision + recall)


def macro_f1(gold: list[str], predicted: list[str], labels: tuple[str, ...]) -> float:
    scores = []
    for label in labels:
        tp = sum(g == label and p == label for g, p in zip(gold, predicted, strict=True))
        fp = sum(g != label and p == label for g, p in zip(gold, predicted, strict=True))
        fn = sum(g == label and p != label for g, p in zip(gold, predicted, strict=True))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores) if scores else 0.0


def bootstrap_ci(values: list[float], n_boot: int = 1000, seed: int = 0) -> list[float] | None:
    """95% percentile interval of the mean over rows resampled with replacement: the evaluation's bootstrap
    (`evaluation.block_bootstrap_indices`) in blocks of one row, since the rows are independent questions.
    None with fewer than two rows or no resamples (--bootstrap 0)."""
    import numpy as np

    from evaluation.metrics import block_bootstrap_indices

    if len(values) < 2 or n_boot < 1:
        return None
    means = np.asarray(values, dtype=float)[block_bootstrap_indices(len(values), n_boot, 1, seed)].mean(axis=1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


class ChoiceScore(TypedDict):
    """Multiple-choice exams: exact letters."""

    n: int
    accuracy: float
    accuracy_ci95: list[float] | None


class SentimentScore(ChoiceScore):
    macro_f1: float
    majority_class_accuracy: float  # the baseline: always the commonest gold label
    unlabelled_answers: int  # answers that name no label (counted wrong)


class TextScore(TypedDict):
    """Free-text answers against the reference: ROUGE-L F1."""

    n: int
    rouge_l: float
    rouge_l_ci95: list[float] | None


class ForecasterScore(TypedDict):
    """News-driven analyses (FinGPT-Forecaster style): the predicted week's move, its sections, its text."""

    n: int
    section_validity: float
    direction_accuracy: float  # an unreadable prediction counts as wrong
    direction_accuracy_ci95: list[float] | None
    majority_class_accuracy: float
    mean_bin_error: float | None
    persistence_mean_bin_error: float | None  # the baseline: last week's bin again
    rouge_l: float | None


TaskScore = ChoiceScore | SentimentScore | TextScore | ForecasterScore


def score(rows: list[Row], answers: list[str], n_boot: int = 1000) -> dict[str, TaskScore]:
    """Per task: accuracy (exams: exact letters; sentiment: label) or ROUGE-L, with 95% intervals."""
    out: dict[str, TaskScore] = {}
    forecaster = [(r, a) for r, a in zip(rows, answers, strict=True) if r.task == "forecaster"]
    if forecaster:
        out["forecaster"] = forecaster_scores([r for r, _ in forecaster], [a for _, a in forecaster])
    for task in ("multiple_choice", "sentiment", "free_text"):
        pairs = [(r, a) for r, a in zip(rows, answers, strict=True) if r.task == task]
        if not pairs:
            continue
        if task == "multiple_choice":
            hits = [float(choice_letters(a) == "".join(sorted(set(r.gold)))) for r, a in pairs]
            out[task] = ChoiceScore(
                n=len(hits), accuracy=sum(hits) / len(hits), accuracy_ci95=bootstrap_ci(hits, n_boot)
            )
        elif task == "sentiment":
            predicted = [sentiment_label(a, r.labels) for r, a in pairs]
            hits = [float(p == r.gold) for (r, _), p in zip(pairs, predicted, strict=True)]
            labels = tuple(sorted({label for r, _ in pairs for label in r.labels}))
            majority = max(labels, key=lambda label: sum(r.gold == label for r, _ in pairs))
            out[task] = SentimentScore(
                n=len(hits),
                accuracy=sum(hits) / len(hits),
                accuracy_ci95=bootstrap_ci(hits, n_boot),
                macro_f1=macro_f1([r.gold for r, _ in pairs], predicted, labels),
                majority_class_accuracy=sum(r.gold == majority for r, _ in pairs) / len(pairs),
                unlabelled_answers=sum(p == "" for p in predicted),
            )
        else:
            values = [rouge_l(a, r.output) for r, a in pairs]
            out[task] = TextScore(
                n=len(values), rouge_l=sum(values) / len(values), rouge_l_ci95=bootstrap_ci(values, n_boot)
            )
    return out


def parse_prediction(answer: str) -> str | None:
    """The bin an answer predicts ('Prediction: Up by 2-3%' → 'U3'), or None without a readable prediction."""
    match = re.search(r"Prediction:\s*(Up|Down)\s+by\s+(?:more than\s+5\s*%|(\d)\s*-\s*(\d)\s*%)", answer, re.I)
    if not match:
        return None
    side = "U" if match[1].lower() == "up" else "D"
    return f"{side}5+" if match[2] is None else f"{side}{int(match[3])}"


def sections_valid(answer: str) -> bool:
    """All three sections, in order, and a readable prediction."""
    positions = [answer.find(s) for s in SECTIONS]
    return all(p >= 0 for p in positions) and positions == sorted(positions) and parse_prediction(answer) is not None


def forecaster_scores(rows: list[Row], answers: list[str]) -> ForecasterScore:
    """Up/down accuracy against the majority class, bin error against persistence, section validity, ROUGE-L."""
    n = len(rows)
    predicted = [parse_prediction(a) for a in answers]
    valid = [sections_valid(a) for a in answers]
    right = [p is not None and p[0] == r.gold[0] for r, p in zip(rows, predicted, strict=True)]
    ups = sum(r.gold[0] == "U" for r in rows)
    bin_errors = [abs(_bin_index(p) - _bin_index(r.gold)) for r, p in zip(rows, predicted, strict=True) if p]
    persistence = [abs(_bin_index(r.labels[0]) - _bin_index(r.gold)) for r in rows if r.labels]
    with_reference = [(r, a) for r, a in zip(rows, answers, strict=True) if r.output]
    return ForecasterScore(
        n=n,
        section_validity=sum(valid) / n,
        direction_accuracy=sum(right) / n,
        direction_accuracy_ci95=bootstrap_ci([float(x) for x in right]),
        majority_class_accuracy=max(ups, n - ups) / n,
        mean_bin_error=sum(bin_errors) / len(bin_errors) if bin_errors else None,
        persistence_mean_bin_error=sum(persistence) / len(persistence) if persistence else None,
        rouge_l=sum(rouge_l(a, r.output) for r, a in with_reference) / len(with_reference) if with_reference else None,
    )
