"""Every settings group of a run in one frozen record, built once from the command line (`config.cli`) and handed
to the facade, which gives each stage the groups it needs."""

from __future__ import annotations

from dataclasses import dataclass, field

from config.context_args import ContextConfig
from config.data_args import DataConfig, ExamplesConfig
from config.evaluation_args import EvalConfig
from config.export_args import ExportConfig
from config.inference_args import ForecastConfig, InferenceConfig
from config.instruct_args import InstructConfig, InstructDataConfig
from config.model_args import LoraConfig, ModelConfig
from config.trading_args import TradeConfig
from config.training_args import TrainConfig
from utils import StockToolError

GROUPS_OF_SETTINGS = {
    "data": DataConfig,
    "examples": ExamplesConfig,
    "context": ContextConfig,
    "model": ModelConfig,
    "lora": LoraConfig,
    "train": TrainConfig,
    "inference": InferenceConfig,
    "forecast": ForecastConfig,
    "evaluation": EvalConfig,
    "trade": TradeConfig,
    "instruct": InstructConfig,
    "instruct_data": InstructDataConfig,
    "export": ExportConfig,
}


@dataclass(frozen=True)
class Settings:
    """Each group at its defaults unless given (the GPU's: the command line settles the CPU's)."""

    data: DataConfig = field(default_factory=DataConfig)
    examples: ExamplesConfig = field(default_factory=ExamplesConfig)
    context: ContextConfig = field(default_factory=ContextConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    forecast: ForecastConfig = field(default_factory=ForecastConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    trade: TradeConfig = field(default_factory=TradeConfig)
    instruct: InstructConfig = field(default_factory=InstructConfig)
    instruct_data: InstructDataConfig = field(default_factory=InstructDataConfig)
    export: ExportConfig = field(default_factory=ExportConfig)


def check_days_after_training(settings: Settings) -> None:
    """Training then evaluating scores the days after the training data: refuse, before training, a test period
    that ends on or before the training's last day (it would hold no day)."""
    from utils import taipei_today

    last = settings.data.end_date or taipei_today().isoformat()
    end = settings.evaluation.test_end
    if end is None or end <= last:
        given = f"--test-end {end}" if end else "no --test-end"
        raise StockToolError(
            f"--evaluate 1 after training scores the days after the training data (to {last}); with {given} "
            "there are none: give a later --test-end"
        )
