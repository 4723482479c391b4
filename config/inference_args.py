"""How answers are decoded and read into forecasts."""

from __future__ import annotations

import math
from dataclasses import dataclass

from config.defaults import BAND_SOURCES, POINT_SOURCES, SEED
from config.flags import SHARE, between, option, shared
from utils import StockToolError


@dataclass(frozen=True)
class DecodingConfig:
    # answers per prompt; 1: greedy decoding (measured: README), more: median and bands
    samples: int = option(
        1,
        "answers sampled per forecast; with more than 1 the point forecast is their per-field median and "
        "their quantiles the bands (1: greedy, the measured default; README)",
        group="inference",
        check=between(1, 1000),
    )
    # at 0.7, 51 of 64 five-day forecasts of a tuned SmolLM2 were usable, at 1.0 only 29 (the median candle was
    # impossible more often): README, "Sampled forecasts"
    temperature: float = option(
        0.7,
        "sampling temperature (with --samples > 1)",
        group="inference",
        check=("more than 0, at most 10", lambda v: 0 < v <= 10),
    )
    constrained: bool = option(
        True,
        "constrained: answers generated under the answer format's grammar (dates fixed, numbers free); "
        "free: unconstrained, for comparison",
        group="inference",
        flag="--decoding",
        choices={"constrained": True, "free": False},
    )
    jump_forward: bool = option(
        True,
        "1/0: under the grammar, tokens it forces (dates, fixed text) are appended without a decode step, a run "
        "of them fed in one forward; greedy answers are the same token for token (README)",
        group="inference",
    )
    engine: str = option(
        "auto",
        "under the grammar, what runs the model: static (a static key/value cache, one-token steps replayed as a "
        "CUDA graph, rows in lockstep: measured fastest, README), transformers (the loaded model's own forward, the "
        "path before it), auto (static wherever the model allows it)",
        group="inference",
        flag="--decode-engine",
        choices=["auto", "static", "transformers"],
    )
    canonical: bool = option(
        True,
        "1/0: the grammar spells its fixed text (labels, dates) in the tokenizer's own tokens, so it is forced and "
        "costs no decode step; 0 allows every spelling (the grammar before; the same greedy answers, measured)",
        group="inference",
        flag="--canonical-spelling",
    )
    seed: int = shared(SEED, "random_state")
    band: float = option(0.8, "central band drawn on the chart (0 < band < 1)", group="inference", check=SHARE)
    bands: str = option(
        "calibrated",
        "where bands come from: calibrated, the model's own errors on the held-out days of its training (an "
        "evaluation measures them and leaves calibration.json beside the adapter); samples, the quantiles of "
        "the --samples answers (measured far too narrow: README)",
        group="inference",
        choices=list(BAND_SOURCES),
        cpu="samples",
    )
    band_family: str = option(
        "auto",
        "with calibrated bands, what the band is, per window type: auto (the lowest CRPS on the held-out days), "
        "conformal (the model's own errors, scaled by volatility), ewma or garch (that random walk around the "
        "point forecast)",
        group="inference",
        choices=["auto", "conformal", "ewma", "garch"],
    )
    point: str = option(
        "calibrated",
        "with calibrated bands, the point forecast: calibrated (default), the model's change from the last close "
        "weighted by what the held-out days support (0: persistence, 1: as generated; README); model: as generated",
        group="inference",
        choices=list(POINT_SOURCES),
    )

    def __post_init__(self):
        if self.bands not in BAND_SOURCES:
            raise StockToolError(f"--bands {self.bands!r}: one of {', '.join(BAND_SOURCES)}")
        if self.point not in POINT_SOURCES:
            raise StockToolError(f"--point {self.point!r}: one of {', '.join(POINT_SOURCES)}")
        if not 0 < self.band < 1:
            raise StockToolError(f"--band {self.band}: a central band is a share between 0 and 1, e.g. 0.8")
        if self.samples < 1:
            raise StockToolError(f"--samples {self.samples}: at least 1 answer per forecast (1 = greedy)")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise StockToolError(f"--temperature {self.temperature}: must be a positive number")

    def identity(self) -> str:
        """What cached answers depend on besides the model and the prompt."""
        return f"k{self.samples}:t{self.temperature}:{'grammar' if self.constrained else 'free'}:s{self.seed}"

    def describe(self) -> str:
        how = "greedy" if self.samples == 1 else f"median of {self.samples} samples at temperature {self.temperature:g}"
        return how + (", constrained to the answer format" if self.constrained else ", unconstrained")
