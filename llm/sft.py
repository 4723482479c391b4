"""SFT training with LoRA: which rows train, the trainer's arguments, resuming, throughput, saving the adapter.

`train(job)` is a short sequence of steps, each a helper tested on its own (tests/test_training.py), over one
frozen `Job` (what to train on, with which settings) and its `Setup` (what the hardware settled). On CUDA the
spec's path: unsloth `FastLanguageModel` + `get_peft_model` + TRL `SFTTrainer`; on a CPU the same flags drive
transformers + PEFT + TRL. Loading the model and LoRA are in `model.py`.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from config import manifest
from config.flags import as_text
from config.model_args import LoraConfig, ModelConfig
from config.training_args import TrainConfig
from llm import trainer_hooks
from llm.checkpoints import resolve_model_source
from llm.sft_data import TrainingData
from model import add_lora, cuda_available, default_model_name, load_base, trainable_parameters
from utils import StockToolError, write_json

log = logging.getLogger("stock.model")


@dataclass(frozen=True)
class Job:
    """One training run: the model, LoRA and trainer settings, the examples, and files to write beside the
    adapter (name → text)."""

    model: ModelConfig
    lora: LoraConfig
    train: TrainConfig
    data: TrainingData
    extra_files: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Setup:
    """What a run's hardware settled: CUDA, the data-parallel processes, the optimizer, padding-free batches, the
    model's name and where its weights come from."""

    cuda: bool
    processes: int
    optim: str
    padding_free: bool
    model_name: str = ""
    source: str = ""


def token_lengths(tokenizer, examples: list[dict]) -> list[int]:
    """Chat-template token count of each prompt + completion (what the trainer will see)."""
    texts = [tokenizer.apply_chat_template(e["prompt"] + e["completion"], tokenize=False) for e in examples]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [len(ids) for ids in encoded]


# --------------------------------------------------------------------------- training


def _resolve_train_flags(settings: TrainConfig, cuda: bool) -> tuple[str, bool]:
    optim = settings.optim or ("adamw_8bit" if cuda else "adamw_torch")
    if "8bit" in optim and not cuda:
        raise StockToolError(f"--optim {optim} needs bitsandbytes and a CUDA GPU; on a CPU use adamw_torch")
    padding_free = cuda if settings.padding_free is None else settings.padding_free
    if padding_free and not cuda:
        raise StockToolError("--padding-free needs CUDA (unsloth's varlen attention); it is off on a CPU")
    return optim, padding_free


def check_train_flags(settings: TrainConfig, cuda: bool) -> None:
    """Refuse the trainer flags this hardware cannot run before any data work (main.py)."""
    _resolve_train_flags(settings, cuda)


def effective_batch(settings: TrainConfig, processes: int = 1) -> int:
    """Examples per optimizer step: per-device batch × processes (GPUs) × accumulation."""
    return settings.per_device_train_batch_size * processes * settings.gradient_accumulation_steps


def _examples_for_steps(examples: list[dict], settings: TrainConfig, seed: int, processes: int = 1) -> list[dict]:
    """The training examples in a seeded random order, cut to what --max-steps can consume (+25% for the
    ones too long to keep): tokenizing 45k prompts to train on 5k of them costs minutes. Shuffled before the
    cut, so every company and window type keeps its share."""
    import dataset

    order = dataset.shuffled(examples, seed)
    if not settings.max_steps or settings.max_steps <= 0 or settings.packing:  # packed rows hold many examples
        return order
    needed = int(settings.max_steps * effective_batch(settings, processes) * 1.25) + 1
    if len(order) > needed:
        log.info("--max-steps %d uses at most %d of %d training examples", settings.max_steps, needed, len(order))
    return order[:needed]


def _last_checkpoint(output_dir: str) -> str | None:
    checkpoints = sorted(Path(output_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return str(checkpoints[-1]) if checkpoints else None


def fitting_examples(examples: list[dict], lengths: list[int], max_seq_length: int, kind: str) -> list[dict]:
    """The examples of at most `max_seq_length` tokens, in order; the others are left out with a warning, never
    truncated: a cut answer would teach a wrong format."""
    keep = [e for e, n in zip(examples, lengths, strict=True) if n <= max_seq_length]
    if len(keep) < len(examples):
        log.warning(
            "%d of %d %s examples exceed --max-seq-length %d tokens and are left out (never truncated: "
            "a cut answer would teach a wrong format); raise --max-seq-length to keep them",
            len(examples) - len(keep),
            len(examples),
            kind,
            max_seq_length,
        )
    return keep


# TrainConfig fields that are SFTConfig's own, copied by name (tests/test_training.py checks they are SFTConfig's)
COPIED = (
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_train_epochs",
    "learning_rate",
    "logging_steps",
    "weight_decay",
    "lr_scheduler_type",
    "warmup_steps",
    "output_dir",
    "save_steps",
    "packing",
    "torch_compile",
)


def sft_arguments(job: Job, setup: Setup, bf16: bool, evaluate: bool) -> dict:
    """The keyword arguments of TRL's `SFTConfig` for a run (all but `run_name`): the trainer settings that are
    SFTConfig's copied by name (`COPIED`), then what the run settles (the optimizer, padding-free batches, mixed
    precision, steps, evaluation) and what the tool always asks for (answer-only loss, two checkpoints kept)."""
    settings = job.train
    copied = {name: getattr(settings, name) for name in COPIED}
    return copied | dict(
        per_device_eval_batch_size=settings.per_device_train_batch_size,
        max_steps=settings.max_steps if settings.max_steps and settings.max_steps > 0 else -1,
        fp16=setup.cuda and not bf16,
        bf16=bf16,
        optim=setup.optim,
        seed=job.lora.random_state,
        report_to=list(settings.report_to) or "none",
        save_strategy="steps",
        save_total_limit=2,
        eval_strategy="steps" if settings.eval_steps > 0 and evaluate else "no",
        eval_steps=settings.eval_steps if settings.eval_steps > 0 else None,
        max_length=job.model.max_seq_length,
        padding_free=setup.padding_free,
        completion_only_loss=True,  # answer-only loss: the prompt's prices are context, not targets
        dataset_num_proc=2 if setup.cuda else None,
        use_cpu=not setup.cuda,
        dataloader_num_workers=0,
        # LoRA leaves the base weights frozen: DDP need not search the graph for unused parameters each step
        ddp_find_unused_parameters=False if setup.processes > 1 else None,
    )


def resume_point(settings: TrainConfig, processes: int, cuda: bool) -> str | None:
    """The checkpoint `--resume` continues from, or None (said plainly when there is none)."""
    if not settings.resume:
        return None
    if processes > 1 and not cuda:
        # transformers loads the optimizer state with map_location=args.device, and on several CPU processes
        # that device ("cpu:0") is one torch.load cannot map to: it would fail after the model has loaded
        raise StockToolError("--resume with several processes needs CUDA GPUs; on a CPU resume with one process")
    resume = _last_checkpoint(settings.output_dir)
    if resume:
        log.info("resuming from %s", resume)
    else:
        print(f"--resume: there is no checkpoint in {settings.output_dir}, so training starts from the beginning")
    return resume


def _training_rows(tokenizer, job: Job, setup: Setup) -> tuple[list[dict], list[dict]]:
    """(training rows, validation rows): shuffled and cut to what the steps consume, over-long ones left out."""
    settings, limit = job.train, job.model.max_seq_length
    rows = _examples_for_steps(list(job.data.train), settings, job.lora.random_state, setup.processes)
    keep = fitting_examples(rows, token_lengths(tokenizer, rows), limit, "training")
    if settings.max_steps and settings.max_steps > 0 and not settings.packing:
        keep = keep[: settings.max_steps * effective_batch(settings, setup.processes)]
    if not keep:
        raise StockToolError(f"no training example fits in --max-seq-length {limit} tokens")
    val = list(job.data.val)
    val_lengths = token_lengths(tokenizer, val) if val else []
    return keep, [e for e, n in zip(val, val_lengths, strict=True) if n <= limit]


def _sft_trainer(model, tokenizer, job: Job, setup: Setup, rows: tuple[list, list]):
    """TRL's SFTTrainer with the token-counting collator and the throughput callback installed. TensorBoard's
    run goes under <output-dir>/runs/<run> (the spec's `tensorboard --logdir outputs/runs`), given to the trainer
    as its own callback rather than through transformers' environment variable."""
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    def to_dataset(part):
        return Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in part])

    keep, val_keep = rows
    bf16 = setup.cuda and torch.cuda.is_bf16_supported()
    run_name = job.train.run_name or time.strftime("%Y%m%d-%H%M%S")
    kwargs = sft_arguments(job, setup, bf16, bool(val_keep))
    board = "tensorboard" in kwargs["report_to"]
    if board:
        kwargs["report_to"] = [r for r in kwargs["report_to"] if r != "tensorboard"] or "none"
    trainer = SFTTrainer(
        model=model,
        args=SFTConfig(**kwargs, run_name=run_name),
        train_dataset=to_dataset(keep),
        eval_dataset=to_dataset(val_keep) if val_keep else None,
        processing_class=tokenizer,
        callbacks=[trainer_hooks.tensorboard(Path(job.train.output_dir) / "runs" / run_name)] if board else None,
    )
    counter = trainer_hooks.CountingCollator(trainer.data_collator)
    trainer.data_collator = counter
    trainer_hooks.check_answer_only_loss(trainer)
    throughput = trainer_hooks.throughput_callback(counter, warmup=min(5, max(1, job.train.max_steps // 5)))
    trainer.add_callback(throughput)
    return trainer, counter, throughput


def _figures(trainer, result, run: dict, job: Job, setup: Setup) -> dict:
    """A finished run's figures: losses (validation included), steps, tokens summed over processes, speed, memory.
    `run`: its seconds, checkpoint resumed from, rows, token counter, throughput callback and parameter counts."""
    import torch

    from llm import distributed

    counter, throughput, parameters = run["counter"], run["throughput"], run["parameters"]
    tokens = distributed.total(counter.tokens)  # every process's share of each step
    figures = {
        "train_loss": trainer_hooks.run_loss(trainer, result, run["resume"]),
        "final_train_loss": trainer_hooks.last_logged(trainer, "loss"),
        "global_step": result.global_step,
        "train_seconds": round(run["seconds"], 1),
        "train_examples": run["rows"][0],
        "val_examples": run["rows"][1],
        "processes": setup.processes,
        "effective_batch": effective_batch(job.train, setup.processes),
        "useful_tokens": tokens,
        "trained_answer_tokens": distributed.total(counter.trained_tokens),
        "trainable_parameters": parameters[0],
        "total_parameters": parameters[1],
        "optim": setup.optim,
        "padding_free": setup.padding_free,
        "packing": job.train.packing,
        "device": torch.cuda.get_device_name(0) if setup.cuda else "cpu",
        "useful_tokens_per_s_overall": round(tokens / run["seconds"], 1),  # start-up included
        **throughput.figures(),
    }
    if run["rows"][1]:
        figures["val_loss"] = round(trainer.evaluate()["eval_loss"], 4)
    if setup.cuda:
        figures["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)  # this process's GPU
    return figures


def setup_for(job: Job, cuda: bool) -> Setup:
    """What the hardware settles for `job`: the optimizer and padding-free batches (refusing what it cannot run),
    the data-parallel processes, the model (the given one, or the default for this hardware)."""
    from llm import distributed

    optim, padding_free = _resolve_train_flags(job.train, cuda)
    given = job.model.model_name
    model_name, why = (given, "given by --model-name") if given else default_model_name(cuda)
    log.info("model: %s (%s)", model_name, why)
    return Setup(cuda, distributed.world().size, optim, padding_free, model_name, resolve_model_source(model_name))


def train(job: Job) -> dict:
    """Fine-tune with LoRA and save adapter, tokenizer and the resolved settings to `job.model.model_dir` (with
    `job.extra_files` beside them). Returns the training figures (losses, steps, useful tokens/s, peak memory)."""
    import torch

    from llm import distributed

    setup = setup_for(job, cuda_available())
    model, tokenizer = load_base(job.model, setup.source, setup.cuda)
    rows = _training_rows(tokenizer, job, setup)
    model = add_lora(model, job.lora, setup.cuda)
    parameters = trainable_parameters(model)
    log.info(
        "trainable parameters: %s / %s (%.2f%%)",
        f"{parameters[0]:,}",
        f"{parameters[1]:,}",
        100 * parameters[0] / parameters[1],
    )
    trainer, counter, throughput = _sft_trainer(model, tokenizer, job, setup, rows)
    resume = resume_point(job.train, setup.processes, setup.cuda)
    if setup.processes > 1:
        print(
            f"data parallel: {setup.processes} processes × batch {job.train.per_device_train_batch_size} × "
            f"accumulation {job.train.gradient_accumulation_steps} = {effective_batch(job.train, setup.processes)} "
            "examples per step"
        )
    if setup.cuda:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    run = {
        "seconds": time.perf_counter() - started,
        "resume": resume,
        "rows": (len(rows[0]), len(rows[1])),
        "counter": counter,
        "throughput": throughput,
        "parameters": parameters,
    }
    figures = _figures(trainer, result, run, job, setup)
    if distributed.world().main:
        save_adapter(model, tokenizer, job, setup, figures)
    return figures


def save_adapter(model, tokenizer, job: Job, setup: Setup, figures: dict) -> None:
    """The adapter, its tokenizer, stock_config.json (the resolved settings, the examples' record) and
    training_info.json (the figures), written whole into `job.model.model_dir` (the previous one kept as
    `<dir>.previous`)."""
    out = Path(job.model.model_dir)
    staging = out.with_name(out.name + ".partial")
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    for name, text in job.extra_files.items():
        (staging / name).write_text(text, encoding="utf-8")
    weights = staging / "adapter_model.safetensors"
    figures = figures | {"adapter_bytes": weights.stat().st_size if weights.is_file() else None}
    config = {
        "base_model": setup.model_name,
        "base_model_source": setup.source,
        "model": as_text(job.model),
        "lora": as_text(job.lora),
        "train": as_text(job.train),
        **job.data.manifest(),
    }
    manifest.Manifest.from_dict(config).write(staging)
    write_json(staging / "training_info.json", figures)
    if out.exists():
        backup = out.with_name(out.name + ".previous")
        if backup.exists():
            shutil.rmtree(backup)
        out.replace(backup)
    staging.replace(out)  # the adapter folder is complete or absent, never half-written
    log.info("adapter, tokenizer and configuration saved to %s", out)
