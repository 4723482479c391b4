"""Training throughput on the spec's prompt mix: useful (non-padding) tokens/s and peak GPU memory.

Runs the project's own training path (`model.train`) on examples built from real price CSVs with the
spec's four windows (1:1, 5:5, 20:5, 60:20), on a random-weight model of a real architecture's exact
shape (the Llama-3.2-3B and -1B weights cannot be downloaded here; speed does not depend on the values
of the weights), or on any model given by --model-name.

    python benchmarks/train_speed.py --prices ../shared/data/prices --shape llama-3.2-3b --tokenizer <HF folder>

Prints one line of figures per configuration. Under `torchrun --nproc_per_node N` the same run is data
parallel on N GPUs (batch is per GPU; useful tokens/s counts every GPU's tokens).

Token counts come from the given tokenizer (SmolLM2's by default on the GPU machine), which splits digits
more finely than Llama-3's: a prompt has more tokens than with the real Llama tokenizer, so sequences are
longer than the spec's, not shorter.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dataset  # noqa: E402
import distributed  # noqa: E402
import market_data  # noqa: E402
import model  # noqa: E402

# Exact shapes from the models' published config.json files.
SHAPES = {
    "llama-3.2-3b": dict(
        hidden_size=3072,
        intermediate_size=8192,
        num_hidden_layers=28,
        num_attention_heads=24,
        num_key_value_heads=8,
        head_dim=128,
        tie_word_embeddings=True,
    ),
    "llama-3.2-1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=64,
        tie_word_embeddings=True,
    ),
    "llama-3.1-8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        tie_word_embeddings=False,
    ),
}
LLAMA3_COMMON = dict(
    vocab_size=128256,
    max_position_embeddings=131072,
    rope_theta=500000.0,
    rms_norm_eps=1e-5,
    rope_scaling={
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    bos_token_id=1,
    eos_token_id=2,
)


def random_model_folder(shape: str, tokenizer_dir: str, out: Path) -> Path:
    """Save a random-weight bf16 Llama of `shape` with the given tokenizer (ids fit in Llama-3's vocab)."""
    if (out / "config.json").is_file():
        return out
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**SHAPES[shape], **LLAMA3_COMMON, dtype="bfloat16")
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        torch.manual_seed(0)
        net = LlamaForCausalLM(config).to(torch.bfloat16)
    net.save_pretrained(out)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out)
    del net
    return out


def prompt_mix(prices: Path, windows: str, fields: str, stride: int, limit: int) -> list[dict]:
    """The spec's mix: every company, every window type, spread evenly (no shuffle) to `limit` examples."""
    examples = []
    for csv in sorted(prices.glob("*.csv")):
        if csv.stem == "TAIEX":
            continue
        frame = market_data.parse_price_csv(csv)
        for window in dataset.parse_windows(windows):
            built, _ = dataset.build_examples(frame, csv.stem, csv.stem, window, dataset.parse_fields(fields), stride)
            examples += built
    step = max(1, len(examples) // limit)
    return examples[::step][:limit]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prices", required=True, help="folder of price CSVs")
    p.add_argument("--shape", choices=sorted(SHAPES), default=None, help="random-weight model of this shape")
    p.add_argument("--model-name", default=None, help="or a real model (HF folder or .gguf)")
    p.add_argument("--tokenizer", default=None, help="HF folder or .gguf whose tokenizer the random model uses")
    p.add_argument("--work", default="/tmp/bench", help="scratch folder")
    p.add_argument(
        "--configs", default="8:0:0,16:1:0,32:1:0", help="comma list of batch:padding_free:packing to measure"
    )
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--max-seq-length", type=int, default=6144)
    p.add_argument("--windows", default=dataset.DEFAULT_WINDOWS)
    p.add_argument("--fields", default="ohlcv")
    p.add_argument("--load-in-4bit", type=int, default=1)
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args()

    here = distributed.setup(model.cuda_available())  # imports unsloth first on a GPU machine
    work = Path(args.work)
    if args.shape:
        tok = model.resolve_model_source(args.tokenizer or args.model_name)
        name = str(distributed.on_main(lambda: random_model_folder(args.shape, tok, work / f"random-{args.shape}")))
    else:
        name = args.model_name
    results = []
    for spec in args.configs.split(","):
        batch, padding_free, packing = (int(x) for x in spec.split(":"))
        limit = batch * here.size * (args.steps + 2)
        examples = prompt_mix(Path(args.prices), args.windows, args.fields, 1, limit=limit)
        cfg = model.ModelConfig(
            model_name=name,
            max_seq_length=args.max_seq_length,
            load_in_4bit=bool(args.load_in_4bit),
            model_dir=str(work / f"adapter-{spec}"),
        )
        settings = model.TrainSettings(
            batch_size=batch,
            gradient_accumulation_steps=1,
            max_steps=args.steps,
            logging_steps=5,
            output_dir=str(work / f"out-{spec}"),
            report_to="none",
            save_steps=10**9,
            warmup_steps=2,
            padding_free=bool(padding_free),
            packing=bool(packing),
        )
        started = time.time()
        figures = model.train(cfg, model.LoraSettings(), settings, examples, [], {"benchmark": spec})
        row = {
            "shape": args.shape or name,
            "processes": here.size,
            "batch": batch,
            "padding_free": bool(padding_free),
            "packing": bool(packing),
            "steps": args.steps,
            "wall_s": round(time.time() - started, 1),
            **{
                k: figures.get(k)
                for k in (
                    "useful_tokens_per_s",
                    "seconds_per_step",
                    "peak_gpu_memory_gb",
                    "train_loss",
                    "train_examples",
                    "useful_tokens",
                    "device",
                )
            },
        }
        print("BENCH " + json.dumps(row), flush=True)
        results.append(row)
    if args.json and here.main:
        Path(args.json).write_text(json.dumps(results, indent=2))
    distributed.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
