"""Defaults that several settings groups share: the seed, Taiwan's trading costs, the bootstrap's resamples, and
transformers' optimizer and scheduler names (written out so that the command line needs no transformers;
tests/test_options.py compares them with the installed transformers)."""

from __future__ import annotations

SEED = 3407  # the spec's random_state: LoRA, sampling, the LSTM and every shuffle
BROKERAGE = 0.001425  # Taiwan cash equities: brokerage on each side of a trade (0.1425%)
SELL_TAX = 0.003  # and the securities transaction tax on sells (0.3%)
BOOTSTRAP = 1000  # block-bootstrap resamples for the 95% intervals
FIRST_YEAR = 1962  # the Taiwan Stock Exchange opened in February 1962
DEFAULT_WINDOWS = "1:1,5:5,20:5,60:20"  # the spec's four window types, past:future
OPTIMIZERS = (
    "adamw_torch",
    "adamw_torch_fused",
    "adamw_torch_xla",
    "adamw_torch_npu_fused",
    "adafactor",
    "adamw_anyprecision",
    "adamw_torch_4bit",
    "adamw_torch_8bit",
    "ademamix",
    "sgd",
    "adagrad",
    "adamw_bnb_8bit",
    "adamw_8bit",
    "ademamix_8bit",
    "lion_8bit",
    "lion_32bit",
    "paged_adamw_32bit",
    "paged_adamw_8bit",
    "paged_ademamix_32bit",
    "paged_ademamix_8bit",
    "paged_lion_32bit",
    "paged_lion_8bit",
    "rmsprop",
    "rmsprop_bnb",
    "rmsprop_bnb_8bit",
    "rmsprop_bnb_32bit",
    "galore_adamw",
    "galore_adamw_8bit",
    "galore_adafactor",
    "galore_adamw_layerwise",
    "galore_adamw_8bit_layerwise",
    "galore_adafactor_layerwise",
    "lomo",
    "adalomo",
    "grokadamw",
    "schedule_free_radam",
    "schedule_free_adamw",
    "schedule_free_sgd",
    "apollo_adamw",
    "apollo_adamw_layerwise",
    "stable_adamw",
)
SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
    "cosine_with_min_lr",
    "cosine_warmup_with_min_lr",
    "warmup_stable_decay",
    "greedy",
)
