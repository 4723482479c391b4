"""An adapter's `stock_config.json`, typed: what it was trained from, written and read here only.

Training writes it beside the adapter (base model, the model / LoRA / trainer settings, the data settings,
the dataset's cutoff and windows, the companies, the task); forecasts, evaluations, comparisons and exports
read it back through `read`. Files from older versions of the tool lack keys: each has the default that
version's behaviour had (prices written as NTD, no signals or news in the prompts).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path

from config.context_args import ContextConfig
from config.data_args import DataConfig, ExamplesConfig
from config.flags import as_text
from config.instruct_args import InstructConfig
from config.model_args import LoraConfig, ModelConfig
from config.training_args import TrainConfig
from utils import StockToolError, write_json

STOCK_CONFIG = "stock_config.json"
# trainer settings saved under their earlier names (before they took TRL's SFTConfig names)
RENAMED_TRAIN = {"batch_size": "per_device_train_batch_size", "num_epochs": "num_train_epochs"}
# what adapters from before signals, news and the change format had: no signals or news, prices in NTD
BEFORE_CONTEXT = {"signals": False, "news": False}
BEFORE_CHANGES = {"answer_format": "absolute"}


def _known(cls, saved: dict | None) -> dict:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in (saved or {}).items() if k in names}


def _has_model_settings(saved) -> bool:
    return isinstance(saved, dict) and {"max_seq_length", "load_in_4bit", "load_in_8bit"} <= set(saved)


def _group(cls, saved: dict, key: str, before: dict | None = None):
    """A settings group from its own key, or (files written before the groups were split) from the "data" key."""
    own = saved.get(key)
    if isinstance(own, dict):
        return cls(**_known(cls, own))
    data = saved.get("data")
    return cls(**((before or {}) | _known(cls, data))) if isinstance(data, dict) else None


@dataclass(frozen=True)
class DatasetRecord:
    """The examples a stock adapter was trained on (`StockPredictor.build_dataset`)."""

    cutoff: str | None = None  # the first validation day: calibration forecasts start here
    first_date: str | None = None
    last_date: str | None = None  # nothing after it was seen: an evaluation's leakage guard
    stride: int = 1
    windows: list[str] = field(default_factory=list)
    fields: list[str] = field(default_factory=list)
    answer_format: str = "absolute"  # adapters from before the change format wrote prices
    companies: list[str] = field(default_factory=list)
    train_examples: int = 0
    val_examples: int = 0
    dropped_straddling_cutoff: int = 0
    skipped_blank_fields: int = 0  # windows skipped for a blank field
    per_window: dict = field(default_factory=dict)
    per_context: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    base_model: str = ""
    base_model_source: str | None = None
    model: ModelConfig | None = None  # None: not saved (an adapter cannot be loaded without it)
    lora: LoraConfig = LoraConfig()
    train: TrainConfig = TrainConfig()
    task: str = "stock"  # or "instruct"
    data: DataConfig | None = None  # None: an instruction adapter, or one from before the data was saved
    examples: ExamplesConfig | None = None
    context: ContextConfig | None = None
    dataset: DatasetRecord | None = None
    companies: list[dict] = field(default_factory=list)  # `Company` as saved
    instruct: InstructConfig | None = None
    sources: list | None = None  # an instruction adapter's files, with their rows
    export: dict | None = None  # set in a merged or GGUF export: {"kind", "file", ...}
    other: dict = field(default_factory=dict)  # keys this version does not know, kept on rewrite

    @classmethod
    def from_dict(cls, saved: dict) -> Manifest:
        known = {f.name for f in fields(cls)} - {"other"}
        model = saved.get("model")
        train = {RENAMED_TRAIN.get(k, k): v for k, v in (saved.get("train") or {}).items()}
        return cls(
            base_model=saved.get("base_model", ""),
            base_model_source=saved.get("base_model_source"),
            model=ModelConfig(**_known(ModelConfig, model)) if _has_model_settings(model) else None,
            lora=LoraConfig(**_known(LoraConfig, saved.get("lora"))),
            train=TrainConfig(**_known(TrainConfig, train)),
            task=saved.get("task", "stock"),
            data=_group(DataConfig, saved, "data"),
            examples=_group(ExamplesConfig, saved, "examples", BEFORE_CHANGES),
            context=_group(ContextConfig, saved, "context", BEFORE_CONTEXT),
            dataset=DatasetRecord(**_known(DatasetRecord, saved["dataset"])) if saved.get("dataset") else None,
            companies=list(saved.get("companies") or []),
            instruct=InstructConfig(**_known(InstructConfig, saved["instruct"])) if saved.get("instruct") else None,
            sources=saved.get("sources"),
            export=saved.get("export"),
            other={k: v for k, v in saved.items() if k not in known},
        )

    def to_dict(self) -> dict:
        """As saved: settings groups as their flags' text, records as plain values."""
        saved = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "other"}
        plain = {"dataset"}  # a record, not settings
        saved = {k: (asdict(v) if k in plain else as_text(v)) if is_dataclass(v) else v for k, v in saved.items()}
        return {k: v for k, v in saved.items() if v is not None} | self.other

    def write(self, folder: Path) -> None:
        write_json(Path(folder) / STOCK_CONFIG, self.to_dict())

    # what the stages ask of it

    @property
    def answer_format(self) -> str:
        return self.dataset.answer_format if self.dataset else "absolute"

    @property
    def fields(self) -> list[str]:
        return self.dataset.fields if self.dataset else []

    @property
    def windows(self) -> str | None:
        """The window types trained on, as the --windows flag writes them."""
        return ",".join(self.dataset.windows) if self.dataset and self.dataset.windows else None

    @property
    def cutoff(self) -> str | None:
        return self.dataset.cutoff if self.dataset else None

    @property
    def last_seen(self) -> str | None:
        """The last day of prices training saw (older adapters: the --end-date they were trained with)."""
        return (self.dataset.last_date if self.dataset else None) or (self.data.end_date if self.data else None)


def is_export(model_dir: str) -> bool:
    """A folder written by `--export merged` or `--export gguf` (full weights and this tool's config, no adapter)."""
    folder = Path(model_dir)
    weights = (folder / "config.json").is_file() or any(folder.glob("*.gguf"))
    return weights and not (folder / "adapter_config.json").is_file()


def weights_file(model_dir: str, manifest: Manifest | None) -> Path:
    """The file that holds what training learned: the adapter's weights, or an export's (GGUF or merged)."""
    exported = (manifest.export if manifest else None) or {}
    folder = Path(model_dir)
    if not exported:
        return folder / "adapter_model.safetensors"
    if exported.get("file"):
        return folder / exported["file"]
    index = folder / "model.safetensors.index.json"  # a merged model large enough to be sharded
    return index if index.is_file() else folder / "model.safetensors"


def read(model_dir: str) -> Manifest:
    """The adapter's (or export's) manifest; a folder without one, or an unreadable one, is one clear error."""
    path = Path(model_dir) / STOCK_CONFIG
    if not ((Path(model_dir) / "adapter_config.json").is_file() or is_export(model_dir)) or not path.is_file():
        raise StockToolError(
            f"no trained adapter in {model_dir} (adapter_config.json and {STOCK_CONFIG} expected); "
            "train one with `python main.py --train 1 ...` or point --model-dir at one"
        )
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StockToolError(f"{path} is not readable JSON ({exc}); retrain the adapter or restore the file") from exc
    if not isinstance(saved, dict) or "base_model" not in saved:
        raise StockToolError(f"{path} names no base_model: it was not written by this tool; retrain the adapter")
    try:
        return Manifest.from_dict(saved)
    except (TypeError, AttributeError, StockToolError) as exc:
        raise StockToolError(f"{path} is not a manifest this tool can read ({exc}); retrain the adapter") from exc
