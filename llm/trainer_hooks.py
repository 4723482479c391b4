"""What the trainer is given and asked about during a run: the collator that counts useful tokens, the throughput
callback, TensorBoard's writer under --output-dir, the run's own loss, and the check that only answers carry loss.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from utils import StockToolError

log = logging.getLogger("stock.model")


class CountingCollator:
    """Wraps the trainer's collator to count useful (non-padding) tokens in every batch it builds."""

    def __init__(self, inner):
        self.inner = inner
        self.tokens = 0
        self.trained_tokens = 0  # tokens that carry loss (the answers)

    def __call__(self, features):
        batch = self.inner(features)
        if "attention_mask" in batch:
            self.tokens += int(batch["attention_mask"].sum())
        else:  # padding-free: one flat row, every position is a real token
            self.tokens += int(batch["input_ids"].numel())
        if "labels" in batch:
            self.trained_tokens += int((batch["labels"] != -100).sum())
        return batch


def throughput_callback(counter: CountingCollator, warmup: int):
    from transformers import TrainerCallback

    from llm import distributed

    class Throughput(TrainerCallback):
        """Useful tokens/s after `warmup` steps (compilation and autotuning excluded)."""

        def __init__(self):
            self.marks: list[tuple[int, float, int]] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.marks.append((state.global_step, time.perf_counter(), counter.tokens))

        def figures(self) -> dict:
            marks = [m for m in self.marks if m[0] >= warmup]
            if len(marks) < 3:  # too short to time: the dataloader builds a batch ahead of each step
                return {}
            (s0, t0, n0), (s1, t1, n1) = marks[0], marks[-1]
            tokens = distributed.total(n1 - n0)  # all processes' tokens over the same steps
            return {
                "measured_steps": s1 - s0,
                "useful_tokens_per_s": round(tokens / (t1 - t0), 1),
                "seconds_per_step": round((t1 - t0) / (s1 - s0), 3),
            }

    return Throughput()


def tensorboard(logdir: Path):
    """transformers' TensorBoard callback writing to `logdir` (its writer made here, not from ./runs)."""
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    return TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(logdir)))


def run_loss(trainer, result, resumed_from: str | None) -> float:
    """The mean training loss of this run's steps. After a resume transformers divides the new steps' loss by
    every step since the start (measured: 0.052 for 20 steps of loss 0.57 resumed at step 200); the mean of
    the losses logged after the checkpoint is the figure meant."""
    if resumed_from:
        start = int(Path(resumed_from).name.split("-")[-1])
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h and h.get("step", 0) > start]
        if losses:
            return round(sum(losses) / len(losses), 4)
    return round(result.training_loss, 4)


def last_logged(trainer, key: str) -> float | None:
    values = [h[key] for h in trainer.state.log_history if key in h]
    return round(values[-1], 4) if values else None


def check_answer_only_loss(trainer) -> None:
    """Fail loudly if the prompt tokens would be trained on (a silent format collapse otherwise)."""
    sample = [trainer.train_dataset[i] for i in range(min(2, len(trainer.train_dataset)))]
    batch = trainer.data_collator.inner(sample)
    labels = batch["labels"]
    trained = int((labels != -100).sum())
    real = int(batch["attention_mask"].sum()) if "attention_mask" in batch else labels.numel()
    if trained == 0 or trained >= real:
        raise StockToolError(
            f"answer-only loss is not in effect ({trained} of {real} tokens carry loss); refusing to train"
        )
    log.info("answer-only loss: %d of %d tokens (%.0f%%) carry loss", trained, real, 100 * trained / real)
