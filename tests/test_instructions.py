"""Financial instruction tuning: readers on real slices, templates, mixing, the overlap guard, the scorers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import main as cli
import utils
from instruct import instruction_data, scorers
from utils import StockToolError


def head(shared: Path, name: str, n: int, tmp_path: Path, start: int = 0) -> Path:
    """The rows start..start+n of a real instruction file, copied to a temp file."""
    path = shared / "instructions" / name
    if not path.is_file():
        pytest.skip(f"{path} not found")
    lines = path.read_text(encoding="utf-8").splitlines()[start : start + n]
    out = tmp_path / name
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def test_real_files_of_each_kind_are_read(shared_data, tmp_path):
    rows, skipped = instruction_data.read_rows(head(shared_data, "zh_cornucopia_samples.jsonl", 5, tmp_path))
    assert skipped == 0 and rows[0].kind == "alpaca" and rows[0].task == "free_text" and rows[0].output
    mcq, _ = instruction_data.read_rows(head(shared_data, "zh_fineval_mcq.jsonl", 5, tmp_path))
    assert mcq[0].task == "multiple_choice" and mcq[0].gold == "B" and "A. 会计主体" in mcq[0].question
    sent, _ = instruction_data.read_rows(head(shared_data, "sent_en_fpb.jsonl", 5, tmp_path))
    assert sent[0].task == "sentiment" and sent[0].labels == ("negative", "neutral", "positive")
    assert sent[0].instruction.endswith("negative, neutral, positive.") and sent[0].input.startswith("According")
    zh, _ = instruction_data.read_rows(head(shared_data, "sent_zh_bbt_finfe.jsonl", 3, tmp_path))
    assert zh[0].instruction.startswith("判断以下文本的情感倾向") and zh[0].gold in zh[0].labels


def test_json_arrays_and_trl_conversations(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(
        json.dumps(
            [
                {"instruction": "Q", "input": "", "output": "A"},
                {
                    "messages": [
                        {"role": "system", "content": "S"},
                        {"role": "user", "content": "U"},
                        {"role": "assistant", "content": "R"},
                    ]
                },
            ]
        )
    )
    rows, _ = instruction_data.read_rows(path)
    assert [r.kind for r in rows] == ["alpaca", "messages"]
    example = instruction_data.to_example(rows[1], "chat")
    assert example["prompt"] == [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    assert example["completion"] == [{"role": "assistant", "content": "R"}]


def test_bad_rows_stop_with_file_and_line_or_are_counted(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"instruction": "Q", "output": "A"}\n{"instruction": "Q2", "out\n{"instruction": "Q3"}\n')
    with pytest.raises(StockToolError, match=r"bad.jsonl line 2: not valid JSON"):
        instruction_data.read_rows(path)
    rows, skipped = instruction_data.read_rows(path, skip_bad_rows=True)
    assert len(rows) == 1 and skipped == 2
    only_bad = tmp_path / "empty.jsonl"
    only_bad.write_text('{"instruction": "Q3"}\n')
    with pytest.raises(StockToolError, match=r"row 1: missing field\(s\) \['output'\]"):
        instruction_data.read_rows(only_bad)
    with pytest.raises(StockToolError, match="no usable rows"):
        instruction_data.read_rows(only_bad, skip_bad_rows=True)


def test_templates_are_the_same_at_training_and_inference():
    row = instruction_data.Row("可转债风险大吗？", "", "风险较小。", "alpaca")
    example = instruction_data.to_example(row, "cornucopia")
    assert example == {
        "prompt": "下面是一个问题，运用金融财经知识来正确回答问题。\n### 问题:\n可转债风险大吗？\n### 回答:\n",
        "completion": "风险较小。",
    }
    assert instruction_data.to_example(row, "chat")["prompt"] == [{"role": "user", "content": "可转债风险大吗？"}]


def test_weights_mix_and_a_split_by_question():
    assert utils.parse_file_weights("a.jsonl, b.jsonl:0.5,c.json:2") == [
        ("a.jsonl", 1.0),
        ("b.jsonl", 0.5),
        ("c.json", 2.0),
    ]
    with pytest.raises(StockToolError, match="positive"):
        utils.parse_file_weights("a.jsonl:0")
    a = [instruction_data.Row(f"a{i}", "", "x", "alpaca") for i in range(10)]
    b = [instruction_data.Row(f"b{i}", "", "y", "alpaca") for i in range(10)]
    mixed = instruction_data.mix([(a, 2), (b, 0.5)], seed=1)
    assert (
        sum(r.instruction.startswith("a") for r in mixed) == 20
        and sum(r.instruction.startswith("b") for r in mixed) == 5
    )
    assert instruction_data.mix([(a, 2), (b, 0.5)], seed=1) == mixed
    train, val = instruction_data.split(mixed, 0.2, seed=1)
    assert {instruction_data.fingerprint(r) for r in train}.isdisjoint(
        {instruction_data.fingerprint(r) for r in val}
    ) and val


def test_scorers_on_literal_answers():
    assert scorers.choice_letters("BD") == "BD" and scorers.choice_letters("D、B") == "BD"
    assert scorers.choice_letters("答案：C。因为……") == "C" and scorers.choice_letters("B. 会计分期") == "B"
    assert scorers.choice_letters("I think it is B") == "" and scorers.choice_letters("Because") == ""
    assert scorers.sentiment_label("The sentiment is Positive, not negative", ("negative", "neutral", "positive")) == (
        "positive"
    )
    assert scorers.sentiment_label("unclear", ("negative", "positive")) == ""
    assert scorers.rouge_l("the cat sat", "the cat sat") == 1.0 and scorers.rouge_l("dog", "the cat") == 0.0
    assert scorers.rouge_l("a b c d", "a c") == pytest.approx(2 * 0.5 * 1.0 / 1.5)
    assert scorers.rouge_l("风险较小", "风险较大") == pytest.approx(0.75)
    assert scorers.macro_f1(["p", "n", "p"], ["p", "p", "p"], ("n", "p")) == pytest.approx((0 + 0.8) / 2)
    assert scorers.bootstrap_ci([1.0] * 10) == [1.0, 1.0] and scorers.bootstrap_ci([1.0]) is None
    row = instruction_data.Row
    rows = [
        row("Q?", "A. x\nB. y", "B", "alpaca", gold="B"),
        row("Q2", "", "B", "alpaca", gold="BD"),
        row("s", "t", "positive", "sentiment", gold="positive", labels=("negative", "positive")),
        row("f", "", "the cat sat", "alpaca"),
    ]
    scores = scorers.score(rows, ["B", "B", "negative", "the cat"], n_boot=50)
    assert scores["multiple_choice"]["accuracy"] == 0.5 and scores["sentiment"]["accuracy"] == 0.0
    assert scores["sentiment"]["majority_class_accuracy"] == 1.0
    assert scores["free_text"]["rouge_l"] == pytest.approx(0.8)


def test_compare_refuses_rows_an_adapter_was_trained_on(tmp_path, capsys):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    seen = instruction_data.Row("What are business fundamentals?", "", "x", "alpaca")
    (adapter / "train_questions.txt").write_text(instruction_data.fingerprint(seen) + "\n")
    evalf = tmp_path / "eval.jsonl"
    evalf.write_text(json.dumps({"instruction": "What are business fundamentals?", "input": "", "output": "y"}) + "\n")
    args = [
        "--train",
        "0",
        "--task",
        "instruct",
        "--eval-file",
        str(evalf),
        "--compare",
        f"base,{adapter}",
        "--output-dir",
        str(tmp_path / "out"),
    ]
    assert cli.main(args) == 2
    assert "1 of 1 eval rows were in" in capsys.readouterr().err
    assert cli.main(["--train", "1", "--task", "instruct", "--output-dir", str(tmp_path / "out")]) == 2
    assert "needs --dataset-file" in capsys.readouterr().err
    assert cli.main(["--train", "0", "--task", "instruct"]) == 2
    assert "needs --eval-file" in capsys.readouterr().err


@pytest.mark.slow
def test_instruction_tuning_and_comparison_with_the_real_model(shared_data, tmp_path, capsys):
    """One real LoRA step on SmolLM2 over a mix of real files, then base vs adapter on rows kept apart."""
    train_a = head(shared_data, "zh_cornucopia_samples.jsonl", 8, tmp_path)
    train_b = head(shared_data, "sent_en_fpb.jsonl", 8, tmp_path)
    (tmp_path / "e").mkdir()
    evalf = head(shared_data, "sent_en_fpb.jsonl", 3, tmp_path / "e", start=500)  # rows never trained on
    common = ["--task", "instruct", "--output-dir", str(tmp_path / "out"), "--model-dir", str(tmp_path / "adapter")]
    assert (
        cli.main(
            [
                "--train",
                "1",
                "--dataset-file",
                f"{train_a},{train_b}:0.5",
                "--max-steps",
                "1",
                "--batch-size",
                "2",
                "--max-seq-length",
                "512",
                "--val-fraction",
                "0.5",
                "--report-to",
                "none",
                *common,
            ]
        )
        == 0
    )
    info = json.loads((tmp_path / "adapter" / "training_info.json").read_text())
    assert info["global_step"] == 1 and info["adapter_bytes"] > 0 and info["val_loss"] > 0
    assert (tmp_path / "adapter" / "train_questions.txt").read_text().strip()
    assert (
        cli.main(
            [
                "--train",
                "0",
                "--eval-file",
                str(evalf),
                "--compare",
                f"base,{tmp_path / 'adapter'}",
                "--max-new-tokens",
                "8",
                *common,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "| base | sentiment | 3 |" in out and "| adapter | sentiment | 3 |" in out
    answers = (tmp_path / "out" / "compare_sent_en_fpb" / "answers_adapter.jsonl").read_text().splitlines()
    assert len(answers) == 3 and json.loads(answers[0])["gold"] in ("negative", "neutral", "positive")


def test_the_row_bootstrap_is_the_evaluations_bootstrap_in_blocks_of_one_row():
    low, high = scorers.bootstrap_ci([0.0, 1.0] * 15, n_boot=500, seed=1)
    assert low < 0.5 < high and 0.2 < low and high < 0.8
    assert scorers.bootstrap_ci([0.0, 1.0] * 15, n_boot=0) is None  # --bootstrap 0: no interval, not a crash
