"""News-driven analysis rows (FinGPT-Forecaster style): bins, parsing, scoring, and the teacher-built dataset
against a local OpenAI-compatible server."""

from __future__ import annotations

import json
import re
import shutil

import pytest

import main as cli
from conftest import LocalServer, argv
from instruct import instruction_data, scorers


def test_bins_words_and_predictions():
    bins = [instruction_data.movement_bin(r) for r in (0.0, 0.004, 0.019, -0.021, 0.07, -0.05)]
    assert bins == ["U1", "U1", "U2", "D3", "U5+", "D5+"]
    assert (
        instruction_data.bin_words("U3") == "Up by 2-3%" and instruction_data.bin_words("D5+") == "Down by more than 5%"
    )
    assert scorers.parse_prediction("...\nPrediction: Up by 2-3%\nAnalysis") == "U3"
    assert scorers.parse_prediction("Prediction: down by more than 5%") == "D5+"
    assert scorers.parse_prediction("I expect it to rise") is None
    good = (
        "[Positive Developments]:\n1. a\n[Potential Concerns]:\n1. b\n[Prediction & Analysis]:\nPrediction: Up by 0-1%"
    )
    assert scorers.sections_valid(good) and not scorers.sections_valid(good.replace("[Potential Concerns]:", ""))


def test_forecaster_scores_against_majority_and_persistence():
    rows = [
        instruction_data.Row("p", "", "", "forecaster", gold="U2", labels=("D1",)),
        instruction_data.Row("p", "", "", "forecaster", gold="D3", labels=("D3",)),
        instruction_data.Row("p", "", "", "forecaster", gold="U1", labels=("U1",)),
    ]
    answers = ["Prediction: Up by 1-2%", "Prediction: Up by 0-1%", "no idea"]
    s = scorers.forecaster_scores(rows, answers)
    assert s["direction_accuracy"] == pytest.approx(1 / 3) and s["majority_class_accuracy"] == pytest.approx(2 / 3)
    assert s["mean_bin_error"] == pytest.approx((0 + 4) / 2)  # U2 vs U2; U1 (+1) vs D3 (-3)
    assert s["persistence_mean_bin_error"] == pytest.approx((3 + 0 + 0) / 3)
    assert s["section_validity"] == 0.0 and s["rouge_l"] is None


class Teacher(LocalServer):
    """An OpenAI-compatible /chat/completions that answers in the format with the prediction it is told."""

    def __init__(self):
        self.calls = 0
        self.fail_after: int | None = None
        self.wrong_every = 0
        super().__init__()
        self.url = self.root + "/v1"

    def respond(self, method, path, headers, body):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            return 500, ""
        user = json.loads(body)["messages"][-1]["content"]
        told = re.search(r"must read 'Prediction: ([^']+)'", user)[1]
        if self.wrong_every and self.calls % self.wrong_every == 0:
            told = "Up by more than 5%" if "Down" in told else "Down by more than 5%"
        answer = (
            f"[Positive Developments]:\n1. Demand.\n[Potential Concerns]:\n1. Costs.\n"
            f"[Prediction & Analysis]:\nPrediction: {told}\nAnalysis: news-driven."
        )
        return 200, json.dumps({"choices": [{"message": {"role": "assistant", "content": answer}}]})


@pytest.fixture
def teacher():
    t = Teacher()
    yield t
    t.close()


def test_dataset_from_real_prices_and_headlines_with_resume(shared_data, tmp_path, teacher, capsys, monkeypatch):
    monkeypatch.setattr("instruct.teacher.time.sleep", lambda s: None)
    shutil.copytree(shared_data / "prices", tmp_path / "prices")
    (tmp_path / "c.json").write_text(json.dumps([{"code": "2330"}, {"code": "2317"}]))
    args = argv(
        "--train 0 --build-forecaster 1 --teacher-url {teacher_url} --teacher-model t --data-dir "
        "{tmp_path} --offline --company-list-file {tmp_path}/c.json --year 2024 --month 1 "
        "--end-date 2024-03-29 --forecaster-weeks 2 --forecaster-samples 12 --news-csv "
        "{shared_data}/news/headlines_2024-01.csv",
        teacher_url=teacher.url,
        tmp_path=tmp_path,
        shared_data=shared_data,
    )
    teacher.fail_after = 5  # the endpoint dies after five answers (each later call fails, with retries)
    assert cli.main(args) == 2
    assert "no dataset was written: rerun to resume" in capsys.readouterr().err
    out_dir = tmp_path / "instructions"
    assert not (out_dir / "forecaster_train.jsonl").exists()
    cached = len((out_dir / "forecaster_teacher_cache.jsonl").read_text().splitlines())
    assert cached == 5
    teacher.fail_after, teacher.calls, teacher.wrong_every = None, 0, 4
    assert cli.main(args) == 0
    assert teacher.calls == 12 - 5  # only the missing answers were asked for
    out = capsys.readouterr().out
    assert "rejected" in out
    train = [json.loads(x) for x in (out_dir / "forecaster_train.jsonl").read_text().splitlines()]
    test = [json.loads(x) for x in (out_dir / "forecaster_test.jsonl").read_text().splitlines()]
    assert len(train) + len(test) == 12 - 1  # one answer came back with the wrong prediction: rejected
    assert max(r["week_end"] for r in train) < min(r["week_end"] for r in test)  # split by date
    for r in train + test:
        assert scorers.parse_prediction(r["answer"]) == r["movement"] and "[Company Introduction]" in r["prompt"]
        assert "actually moved" not in r["prompt"]  # the hint went to the teacher only
    assert any("[Headline]: " in r["prompt"] and "(none)" not in r["prompt"] for r in train + test)
    rows, _ = instruction_data.read_rows(out_dir / "forecaster_test.jsonl")
    scores = scorers.score(rows, [r.output for r in rows])
    assert scores["forecaster"]["direction_accuracy"] == 1.0 and scores["forecaster"]["rouge_l"] == 1.0
