"""The trainer's settings, named as TRL's `SFTConfig` (a `TrainingArguments`) names them, so that
`llm.sft.sft_arguments` copies them by name; the spec's flags (`--batch-size`, `--num-epochs`) keep theirs.

Defaults. CUDA: the spec's total batch of 32 and 60 steps, as 16 x 2 rather than 8 x 4 because padding-free
batches of 16 measured fastest on the H100 (docs/measured.md). CPU: a short, labelled demonstration of next-day
forecasts (a full run there would take days: ~40 tokens/s for SmolLM2 LoRA on two cores), 16 steps of 4 at a
higher learning rate: enough for SmolLM2 to write possible candles (measured: six of six stocks), so the main job
ends with a chart."""

from __future__ import annotations

from dataclasses import dataclass

from config.defaults import OPTIMIZERS, SCHEDULERS
from config.flags import AT_LEAST_0, AT_LEAST_1, between, option, settle, shared


def parse_report_to(text: str) -> tuple[str, ...]:
    """'tensorboard' → ('tensorboard',); 'none' → (); a comma list of transformers' integrations."""
    return tuple(r.strip() for r in text.split(",") if r.strip() and r.strip() != "none")


def report_to_text(value) -> str:
    return ",".join(value) or "none"


@dataclass(frozen=True)
class TrainConfig:
    per_device_train_batch_size: int = option(
        16, "per-device batch size", group="trainer", flag="--batch-size", cpu=4, check=AT_LEAST_1
    )
    gradient_accumulation_steps: int = option(2, "batches per optimizer step", group="trainer", cpu=1, check=AT_LEAST_1)
    num_train_epochs: float = option(
        1.0,
        "epochs (used when --max-steps is 0)",
        group="trainer",
        flag="--num-epochs",
        check=("more than 0, at most 1000", lambda v: 0 < v <= 1000),
    )
    max_steps: int = option(
        60,
        "optimizer steps; 0: train --num-epochs",
        group="trainer",
        cpu=16,
        check=("0 (train --num-epochs) or more", lambda v: v >= 0),
    )
    learning_rate: float = option(
        2e-4, "peak learning rate", group="trainer", cpu=1e-3, check=("more than 0, at most 1", lambda v: 0 < v <= 1)
    )
    logging_steps: int = option(1, "log the training loss every N steps", group="trainer", check=AT_LEAST_1)
    optim: str | None = option(
        None,
        "optimizer: one of transformers' OptimizerNames, e.g. adamw_torch, adafactor, sgd "
        "(default adamw_8bit on CUDA, adamw_torch on a CPU)",
        group="trainer",
        choices=list(OPTIMIZERS),
        metavar="NAME",
    )
    weight_decay: float = option(0.01, "AdamW weight decay", group="trainer", check=between(0, 1))
    lr_scheduler_type: str = option(
        "linear",
        f"learning-rate schedule: {', '.join(SCHEDULERS)}",
        group="trainer",
        choices=list(SCHEDULERS),
        metavar="NAME",
    )
    warmup_steps: int = option(5, "learning-rate warm-up steps", group="trainer", check=AT_LEAST_0, more=True)
    output_dir: str = shared("outputs", "output_dir")  # checkpoints go under --output-dir
    report_to: tuple[str, ...] = option(
        ("tensorboard",),
        "tensorboard, none, or any transformers integration",
        group="trainer",
        parse=parse_report_to,
        text=report_to_text,
    )
    save_steps: int = option(
        50, "checkpoint every N steps (for --resume)", group="trainer", check=AT_LEAST_1, more=True
    )
    eval_steps: int = option(
        0, "validation loss every N steps (0: once at the end)", group="trainer", check=AT_LEAST_0, more=True
    )
    padding_free: bool | None = option(
        None, "1/0: padding-free batches (default on with CUDA)", group="trainer", more=True
    )
    packing: bool = option(False, "1/0: pack examples into full-length rows", group="trainer", more=True)
    resume: bool = option(False, "continue from the last checkpoint in --output-dir", group="trainer", switch=True)
    run_name: str | None = None
    torch_compile: bool = False  # measured no faster for the default (docs/measured.md)

    def __post_init__(self):
        settle(self)
