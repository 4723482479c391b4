"""Training throughput on the spec's prompt mix: useful (non-padding) tokens/s and peak GPU memory.

Runs the project's own training path (`training.train`) on examples built from real price CSVs with the
spec's four windows (1:1, 5:5, 20:5, 60:20), on a random-weight model of a real architecture's exact
shape (the Llama-3.2-3B and -1B weights cannot be downloaded here; speed does not depend on the values
of the weights), or on any model given by --model-name.

    python -m benchmarks.train_speed --prices ../shared/data/prices --shape llama-3.2-3b --tokenizer <HF folder>

Each configuration runs in a process of its own (a fresh GPU, unsloth's patches only where they belong)
and prints one `BENCH {json}` line; the run ends with a table of every configuration beside plain unsloth
(padded) measured in the same run, with MFU (4 · N · tokens/s over the GPU's dense bf16 peak, N the base
model's parameters) and peak GPU memory. Configurations (`--configs`, comma list):

    default              the tool's CUDA default: unsloth, padding-free batches of 16, torch varlen attention
                         with grouped heads (`patches.patch_varlen_gqa`); unsloth swaps torch's flash
                         kernel for FlashAttention-3 or -4 on Hopper when one is installed (its row says which)
    default-bundled-flash  the same with UNSLOTH_FLASH_ATTENTION_IMPL=off: torch's bundled flash kernel
    default-compile        the default with TrainingArguments.torch_compile (the model through torch.compile)
    unsloth-padded-compile plain unsloth, padded, with torch_compile
    unsloth-padded       plain unsloth as it ships: padded batches of 8
    transformers-padded  plain transformers + PEFT + bitsandbytes (no unsloth), padded batches of 8,
                         gradient checkpointing, SDPA attention
    STACK:BATCH:PADDING_FREE:PACKING[:VARLEN_GQA]   any other, e.g. unsloth:32:1:0:1

Under `torchrun --nproc_per_node N` the configurations run in the launched processes instead, data parallel
on N GPUs (batch is per GPU; useful tokens/s counts every GPU's tokens).

Token counts come from the given tokenizer (SmolLM2's by default on the GPU machine), which splits digits
more finely than Llama-3's: a prompt has more tokens than with the real Llama tokenizer, so sequences are
longer than the spec's, not shorter.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import dataset
import model
from benchmarks.model_shapes import SHAPES, llama_parameters, mfu, peak_flops, random_model_folder
from config import data_args, defaults, model_args, training_args
from llm import checkpoints, distributed, patches, sft, trainer_hooks
from llm.sft_data import TrainingData
from market import price_files


def prompt_mix(prices: Path, windows: str, fields: str, stride: int, limit: int) -> list[dict]:
    """The spec's mix: every company, every window type, spread evenly (no shuffle) to `limit` examples."""
    examples = []
    for csv in sorted(prices.glob("*.csv")):
        if csv.stem == "TAIEX":
            continue
        frame = price_files.parse_price_csv(csv)
        for window in data_args.parse_windows(windows):
            built, _ = dataset.build_examples(
                frame, csv.stem, csv.stem, window, data_args.parse_fields(fields), dataset.ExampleStyle(stride)
            )
            examples += built
    step = max(1, len(examples) // limit)
    return examples[::step][:limit]


@dataclass(frozen=True)
class Config:
    """One measured configuration of training."""

    name: str
    stack: str  # "unsloth" (the tool's path) or "transformers" (plain transformers + PEFT + bitsandbytes)
    batch: int
    padding_free: bool
    packing: bool = False
    varlen_gqa: bool = True  # patches.patch_varlen_gqa (unsloth only)
    flash: str = "auto"  # UNSLOTH_FLASH_ATTENTION_IMPL: auto (FA3, then FA4 on Hopper, when installed) or off
    compile: bool = False  # TrainingArguments.torch_compile (the model through torch.compile)


PRESETS = {
    "default": Config("default", "unsloth", 16, True, False, True),
    "default-bundled-flash": Config("default-bundled-flash", "unsloth", 16, True, False, True, "off"),
    "default-compile": Config("default-compile", "unsloth", 16, True, False, True, compile=True),
    "unsloth-padded-compile": Config("unsloth-padded-compile", "unsloth", 8, False, False, False, compile=True),
    "unsloth-padded": Config("unsloth-padded", "unsloth", 8, False, False, False),
    "transformers-padded": Config("transformers-padded", "transformers", 8, False, False, False),
}
BASELINE = "unsloth-padded"


def parse_config(token: str) -> Config:
    """A preset name or STACK:BATCH:PADDING_FREE:PACKING[:VARLEN_GQA]."""
    token = token.strip()
    if token in PRESETS:
        return PRESETS[token]
    parts = token.split(":")
    if len(parts) not in (4, 5) or parts[0] not in ("unsloth", "transformers"):
        raise ValueError(f"--configs: {token!r} is neither a preset ({', '.join(PRESETS)}) nor STACK:B:PF:PACK[:GQA]")
    try:
        batch, *flags = (int(x) for x in parts[1:])
    except ValueError:
        raise ValueError(f"--configs: {token!r} has a field that is not a whole number") from None
    if batch < 1 or any(f not in (0, 1) for f in flags):
        raise ValueError(f"--configs: {token!r}: the batch is at least 1 and the flags are 0 or 1")
    if parts[0] == "transformers" and (flags[0] or flags[1]):
        raise ValueError(f"--configs: {token!r}: plain transformers trains padded batches only")
    gqa = parts[0] == "unsloth" and (bool(flags[2]) if len(flags) == 3 else True)
    return Config(token, parts[0], batch, bool(flags[0]), bool(flags[1]), gqa)


def _plain_peft_model(name: str, load_in_4bit: bool):
    """(tokenizer, the model with the tool's LoRA) loaded by transformers + PEFT + bitsandbytes alone."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    quant = None
    if load_in_4bit:
        quant = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    tokenizer = AutoTokenizer.from_pretrained(name)
    net = AutoModelForCausalLM.from_pretrained(
        name, dtype=torch.bfloat16, quantization_config=quant, attn_implementation="sdpa", device_map={"": 0}
    )
    net = prepare_model_for_kbit_training(net, use_gradient_checkpointing=True)
    lora = model_args.LoraConfig()
    target = LoraConfig(
        r=lora.rank, lora_alpha=lora.lora_alpha, target_modules=model.LORA_TARGETS, task_type="CAUSAL_LM"
    )
    return tokenizer, get_peft_model(net, target)


def train_plain_transformers(name: str, examples: list[dict], config: Config, args) -> dict:
    """The same examples trained with transformers + PEFT + bitsandbytes + TRL alone (no unsloth): the
    baseline a user gets without this tool. Same LoRA (r16, all projections), optimizer, steps and counting."""
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    tokenizer, net = _plain_peft_model(name, bool(args.load_in_4bit))
    lora = model_args.LoraConfig()
    rows = Dataset.from_list([{"prompt": e["prompt"], "completion": e["completion"]} for e in examples])
    sft_config = SFTConfig(
        output_dir=str(Path(args.work) / f"out-{config.name}"),
        per_device_train_batch_size=config.batch,
        max_steps=args.steps,
        warmup_steps=2,
        learning_rate=2e-4,
        bf16=True,
        optim="adamw_8bit",
        logging_steps=5,
        save_strategy="no",
        report_to="none",
        max_length=args.max_seq_length,
        completion_only_loss=True,
        gradient_checkpointing=True,
        seed=lora.random_state,
    )
    trainer = SFTTrainer(model=net, args=sft_config, train_dataset=rows, processing_class=tokenizer)
    counter = trainer_hooks.CountingCollator(trainer.data_collator)
    trainer.data_collator = counter
    throughput = trainer_hooks.throughput_callback(counter, warmup=min(5, max(1, args.steps // 5)))
    trainer.add_callback(throughput)
    torch.cuda.reset_peak_memory_stats()
    result = trainer.train()
    return {
        "train_loss": round(result.training_loss, 4),
        "train_examples": len(examples),
        "useful_tokens": counter.tokens,
        "device": torch.cuda.get_device_name(0),
        "peak_gpu_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        **throughput.figures(),
    }


def train_tool(name: str, examples: list[dict], config: Config, args) -> dict:
    """`config` through the tool's own `training.train` (unsloth on a GPU); its figures."""
    cfg = model_args.ModelConfig(
        model_name=name,
        max_seq_length=args.max_seq_length,
        load_in_4bit=bool(args.load_in_4bit),
        model_dir=str(Path(args.work) / f"adapter-{config.name}"),
    )
    settings = training_args.TrainConfig(
        per_device_train_batch_size=config.batch,
        gradient_accumulation_steps=1,
        max_steps=args.steps,
        logging_steps=5,
        output_dir=str(Path(args.work) / f"out-{config.name}"),
        report_to="none",
        save_steps=10**9,
        warmup_steps=2,
        padding_free=config.padding_free,
        packing=config.packing,
        torch_compile=config.compile,
    )
    data = TrainingData(tuple(examples), (), {}, {"benchmark": config.name})
    return sft.train(sft.Job(cfg, model_args.LoraConfig(), settings, data))


def measure(config: Config, name: str, args, processes: int) -> dict:
    """Trains `config` for --steps steps in this process; one row of figures."""
    limit = config.batch * processes * (args.steps + 2)
    examples = prompt_mix(Path(args.prices), args.windows, args.fields, 1, limit=limit)
    started = time.time()
    if config.stack == "transformers":
        figures = train_plain_transformers(name, examples, config, args)
    else:
        figures = train_tool(name, examples, config, args)
    paths = {}
    if config.stack == "unsloth" and figures.get("device", "cpu") != "cpu":
        import unsloth.utils.attention_dispatch as dispatch  # which path padding-free batches took

        paths = {
            "varlen_gqa": patches.APPLIED.get("varlen_gqa"),
            "unsloth_varlen": dispatch._TORCH_VARLEN_ATTN is not None,
            "flash_impl": _flash_impl(),
        }
    parameters = llama_parameters(json.loads((Path(name) / "config.json").read_text()))
    peak = peak_flops(figures.get("device", ""))
    rate = figures.get("useful_tokens_per_s")
    return {
        **asdict(config),
        "shape": args.shape or name,
        "load_in_4bit": bool(args.load_in_4bit),
        "processes": processes,
        "steps": args.steps,
        "wall_s": round(time.time() - started, 1),
        "parameters": parameters,
        **paths,
        "mfu": None if mfu(rate, parameters, peak) is None else round(mfu(rate, parameters, peak), 4),
        **{
            k: figures.get(k)
            for k in (
                "useful_tokens_per_s",
                "seconds_per_step",
                "measured_steps",
                "peak_gpu_memory_gb",
                "train_loss",
                "train_examples",
                "useful_tokens",
                "device",
            )
        },
    }


def table(rows: list[dict]) -> str:
    """The run's configurations as a markdown table, each beside the plain-unsloth baseline of the same run."""
    base = next((r.get("useful_tokens_per_s") for r in rows if r.get("name") == BASELINE), None)
    lines = [
        "| configuration | batch | batching | useful tokens/s | × plain unsloth | MFU | peak GPU memory | loss |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        rate = r.get("useful_tokens_per_s")
        if r.get("error"):
            lines.append(f"| {r['name']} | {r.get('batch', '')} | failed: {r['error']} | | | | | |")
            continue
        batching = "packed" if r["packing"] else "padding-free" if r["padding_free"] else "padded"
        if r.get("flash_impl"):  # unsloth's FlashAttention-3/-4 verdict
            batching += f"; {r['flash_impl'][:60]}"
        ratio = f"{rate / base:.2f}" if rate and base else "—"
        share = "—" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        lines.append(
            f"| {r['name']} ({r['stack']}) | {r['batch']} | {batching} | {rate or 0:,.0f} | {ratio} | {share} | "
            f"{r.get('peak_gpu_memory_gb')} GB | {r.get('train_loss')} |"
        )
    return "\n".join(lines)


def run_in_subprocess(config: Config, argv: list[str]) -> dict:
    """One configuration in a fresh process; its BENCH line, or the reason it gave none."""
    env = dict(os.environ)  # the child reads its configuration (the varlen patch included) from --configs
    if config.flash != "auto":
        env["UNSLOTH_FLASH_ATTENTION_IMPL"] = config.flash
    token = config.name if config.name in PRESETS else _token(config)
    cmd = [sys.executable, "-m", "benchmarks.train_speed", *argv, "--configs", token]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    sys.stderr.write(done.stderr[-4000:])
    for line in done.stdout.splitlines():
        if line.startswith("BENCH "):
            return json.loads(line[6:])
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return {**asdict(config), "error": f"exit {done.returncode}: {tail[:200]}"}


def _flash_impl() -> str | None:
    """unsloth's verdict on FlashAttention-3/-4 for the last training ("FA4 active", or why not)."""
    try:
        from unsloth.utils.flash_impl import FLASH_IMPL_STATE
    except ImportError:  # an unsloth without the swap
        return None
    return FLASH_IMPL_STATE.get("reason")


def _token(config: Config) -> str:
    flags = [config.padding_free, config.packing, config.varlen_gqa]
    return ":".join([config.stack, str(config.batch), *(str(int(f)) for f in flags)])


def _torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def arguments(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prices", required=True, help="folder of price CSVs")
    p.add_argument("--shape", choices=sorted(SHAPES), default=None, help="random-weight model of this shape")
    p.add_argument("--model-name", default=None, help="or a real model (HF folder)")
    p.add_argument("--tokenizer", default=None, help="HF folder or .gguf whose tokenizer the random model uses")
    p.add_argument("--work", default="/tmp/bench", help="scratch folder")
    p.add_argument("--configs", default="default,unsloth-padded,transformers-padded", help="see above")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--max-seq-length", type=int, default=6144)
    p.add_argument("--windows", default=defaults.DEFAULT_WINDOWS)
    p.add_argument("--fields", default="ohlcv")
    p.add_argument("--load-in-4bit", type=int, default=1)
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args(argv)
    try:
        args.parsed_configs = [parse_config(t) for t in args.configs.split(",")]
    except ValueError as exc:
        p.error(str(exc))
    if not args.shape and not args.model_name:
        p.error("give --shape or --model-name")
    return args


def run_each(configs: list[Config], argv: list[str], args) -> int:
    """The parent: one process per configuration, their rows as each ends (a run stopped early keeps them),
    then the table."""
    rest = [a for i, a in enumerate(argv) if a != "--configs" and (i == 0 or argv[i - 1] != "--configs")]
    rows = []
    for config in configs:
        rows.append(run_in_subprocess(config, rest))
        print("BENCH " + json.dumps(rows[-1]), flush=True)
    print(table(rows), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0 if all("error" not in r for r in rows) else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = arguments(argv)
    configs = args.parsed_configs
    if len(configs) > 1 and distributed.world().size == 1:
        return run_each(configs, argv, args)
    # in this process: unsloth is imported (after the varlen patch, as the configuration asks) only for its own
    # configurations
    unsloth = any(c.stack == "unsloth" for c in configs)
    cuda = model.gpu_stack(patches.Patches(varlen_gqa=configs[0].varlen_gqa)) if unsloth else _torch_cuda()
    here = distributed.setup(cuda)
    work = Path(args.work)
    if args.shape:
        given = args.tokenizer or args.model_name
        tok = given if Path(given).is_dir() else checkpoints.resolve_model_source(given)  # a tokenizer folder will do
        name = str(distributed.on_main(lambda: random_model_folder(args.shape, tok, work / f"random-{args.shape}")))
    else:
        name = checkpoints.resolve_model_source(args.model_name)
    rows = []
    for config in configs:
        row = measure(config, name, args, here.size)
        print("BENCH " + json.dumps(row), flush=True)
        rows.append(row)
    if args.json and here.main:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    distributed.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
