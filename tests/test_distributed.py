"""Several processes (torchrun, gloo on the CPU): sharding arithmetic, and two real processes that train and
evaluate SmolLM2 exactly as one process does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import argv
from llm import distributed
from utils import StockToolError

ROOT = Path(__file__).resolve().parents[1]


def test_shards_cover_every_item_once_and_come_back_in_order():
    items = list(range(11))
    for size in (1, 2, 3, 4, 16):
        parts = [distributed.shard(items, rank, size) for rank in range(size)]
        assert sorted(x for p in parts for x in p) == items
        assert max(map(len, parts)) - min(map(len, parts)) <= 1  # balanced
        assert distributed.unshard(parts) == items


def test_world_reads_the_launchers_variables(monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.world() == distributed.World(0, 0, 1) and distributed.world().main
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.world() == distributed.World(5, 1, 4) and not distributed.world().main
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(StockToolError, match="whole numbers"):
        distributed.world()


def test_one_process_pool_is_the_factory_and_releases_models():
    built = []

    def factory(key):
        built.append(key)
        return lambda prompts, max_new_tokens, regexes=None: [f"{key[1]}:{p}" for p in prompts]

    pool = distributed.Pool(factory)
    assert pool.processes == 1
    assert pool.generator(("eval", "tuned"))(["a", "b"], 4) == ["tuned:a", "tuned:b"]
    assert pool.generator(("eval", "tuned"))(["c"], 4) == ["tuned:c"] and built == [("eval", "tuned")]  # loaded once
    pool.release(("eval", "tuned"))
    pool.generator(("eval", "tuned"))
    assert built == [("eval", "tuned")] * 2  # released, so loaded again
    assert distributed.on_main(lambda: 42) == 42


def torchrun(args: list[str], processes: int, env: dict) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        str(ROOT / "main.py"),
        *args,
    ]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture
def work(shared_data, tmp_path):
    (tmp_path / "prices").mkdir()
    for code in ("2330", "6569"):
        shutil.copy(shared_data / "prices" / f"{code}.csv", tmp_path / "prices")
    (tmp_path / "companies.json").write_text(json.dumps([{"code": "2330"}, {"code": "6569"}]), encoding="utf-8")
    return tmp_path


@pytest.mark.slow
def test_two_processes_train_and_evaluate_as_one_does(work):
    """Two gloo processes with batch 1 each take the same steps as one process with batch 2: the same adapter
    (to float32 rounding) and, sharding the evaluation, the same answers in the same order."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    env["PYTHONPATH"] = str(ROOT)

    def train_args(name: str, batch: int, steps: int = 2) -> list[str]:
        return [
            "--train",
            "1",
            "--company-list-file",
            str(work / "companies.json"),
            "--windows",
            "1:1",
            "--max-seq-length",
            "256",
            "--max-steps",
            str(steps),
            "--batch-size",
            str(batch),
            "--gradient-accumulation-steps",
            "1",
            "--max-val-examples",
            "2",
            "--save-steps",
            "1",
            "--report-to",
            "none",
            "--data-dir",
            str(work),
            "--offline",
            "--end-date",
            "2026-04-17",
            "--output-dir",
            str(work / f"out-{name}"),
            "--model-dir",
            str(work / f"adapter-{name}"),
            "--code",
            "2330",
            "--past",
            "1",
            "--future",
            "1",
        ]

    two = torchrun(train_args("two", 1), 2, env)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "data parallel: 2 processes × batch 1 × accumulation 1 = 2 examples per step" in two.stdout
    assert two.stdout.count("adapter saved to") == 1  # rank 0 alone reports and saves
    assert "chart: " in two.stdout or "Raw model answer:" in two.stdout  # the forecast after training, once
    one = subprocess.run(
        [sys.executable, "main.py", *train_args("one", 2)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert one.returncode == 0, one.stderr[-3000:]

    from safetensors.torch import load_file

    a = load_file(work / "adapter-one" / "adapter_model.safetensors")
    b = load_file(work / "adapter-two" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    import torch

    lora_b = [k for k in a if "lora_B" in k]
    moved = torch.cat([a[k].flatten() for k in lora_b])
    assert float(moved.abs().max()) > 1e-5  # B starts at zero: the two steps moved it
    # the same steps up to float32 rounding (Adam's first steps amplify it where a gradient is near zero)
    difference = torch.cat([(a[k] - b[k]).flatten() for k in lora_b])
    assert float(difference.norm() / moved.norm()) < 1e-4  # measured 5.6e-6
    assert max(float((a[k] - b[k]).abs().max()) for k in a if "lora_A" in k) < 1e-5
    info = json.loads((work / "adapter-two" / "training_info.json").read_text())
    single = json.loads((work / "adapter-one" / "training_info.json").read_text())
    assert info["processes"] == 2 and info["effective_batch"] == 2 and info["global_step"] == 2
    assert info["useful_tokens"] == single["useful_tokens"]  # both processes' tokens counted
    assert info["train_loss"] == pytest.approx(single["train_loss"], abs=1e-4)

    # transformers cannot resume several CPU processes (the GPU path is measured on two H100s: docs/gpu.md)
    resumed = torchrun([*train_args("two", 1, steps=3), "--resume"], 2, env)
    assert resumed.returncode != 0 and "--resume with several processes needs CUDA GPUs" in resumed.stderr
    assert json.loads((work / "adapter-two" / "training_info.json").read_text())["global_step"] == 2  # kept

    def eval_args(name: str) -> list[str]:
        return [
            "--train",
            "0",
            "--evaluate",
            "1",
            "--eval-models",
            "tuned",
            "--test-start",
            "2026-04-24",
            "--bootstrap",
            "10",
            "--eval-batch-size",
            "2",
            "--data-dir",
            str(work),
            "--offline",
            "--end-date",
            "2026-04-30",
            "--model-dir",
            str(work / "adapter-one"),
            "--output-dir",
            str(work / f"eval-{name}"),
        ]

    sharded = torchrun(eval_args("two"), 2, env)
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    alone = subprocess.run(
        [sys.executable, "main.py", *eval_args("one")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert alone.returncode == 0, alone.stderr[-3000:]
    run = "eval_2026-04-24_2026-04-30"
    answers = [(work / f"eval-{n}" / run / "answers.jsonl").read_text().splitlines() for n in ("one", "two")]
    assert len(answers[0]) == 10 and answers[0] == answers[1]  # 2 companies × 5 days, in the same order


@pytest.mark.slow
def test_a_refusal_on_rank_0_stops_every_process(work):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    (work / "bad.json").write_text('[{"code": "9999"}]', encoding="utf-8")
    args = argv(
        "--train 1 --company-list-file {work}/bad.json --data-dir {work} --offline --output-dir "
        "{work}/out --model-dir {work}/adapter",
        work=work,
    )
    result = torchrun(args, 2, env)
    assert result.returncode != 0
    assert result.stderr.count("unknown stock code '9999'") == 1  # said once, by rank 0
    assert not (work / "adapter").exists()
