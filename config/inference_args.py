"""How answers are generated and read into forecasts (`InferenceConfig`: forecasts, evaluations and trading
alike), and what a forecast run asks for (`ForecastConfig`: which stocks, how many days known and forecast)."""

from __future__ import annotations

from dataclasses import dataclass

from config.defaults import SEED
from config.flags import AT_LEAST_1, SHARE, between, option, settle
from utils import StockToolError

BAND_SOURCES = ("calibrated", "samples")
POINT_SOURCES = ("calibrated", "model")


@dataclass(frozen=True)
class InferenceConfig:
    # at 0.7, 51 of 64 five-day forecasts of a tuned SmolLM2 were usable, at 1.0 only 29 (the median candle was
    # impossible more often): docs/forecast-quality.md
    samples: int = option(
        1,
        "answers sampled per forecast; with more than 1 the point forecast is their per-field median and "
        "their quantiles the bands (1: greedy, the measured default)",
        group="inference",
        check=between(1, 1000),
    )
    temperature: float = option(
        0.7,
        "sampling temperature (with --samples > 1)",
        group="inference",
        check=("more than 0, at most 10", lambda v: 0 < v <= 10),
        more=True,
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
        "of them fed in one forward; greedy answers are the same token for token",
        group="inference",
        more=True,
    )
    engine: str = option(
        "auto",
        "under the grammar, what runs the model: static (a static key/value cache, one-token steps replayed as a "
        "CUDA graph, rows in lockstep), transformers (the loaded model's own forward, the path before it), auto "
        "(static wherever the model allows it)",
        group="inference",
        flag="--decode-engine",
        choices=["auto", "static", "transformers"],
        more=True,
    )
    canonical: bool = option(
        True,
        "1/0: the grammar spells its fixed text (labels, dates) in the tokenizer's own tokens, so it is forced and "
        "costs no decode step; 0 allows every spelling (the grammar before; the same greedy answers, measured)",
        group="inference",
        flag="--canonical-spelling",
        more=True,
    )
    seed: int = option(
        SEED,
        "random seed of sampling (and of LoRA, the LSTM and every shuffle)",
        group="inference",
        flag="--random-state",
        aliases=["--seed"],
    )
    band: float = option(0.8, "central band drawn on the chart (0 < band < 1)", group="inference", check=SHARE)
    bands: str = option(
        "calibrated",
        "where bands come from: calibrated, the model's own errors on the held-out days of its training (an "
        "evaluation measures them and leaves calibration.json beside the adapter); samples, the quantiles of "
        "the --samples answers (measured far too narrow)",
        group="inference",
        choices=list(BAND_SOURCES),
        cpu="samples",
    )
    band_family: str = option(
        "auto",
        "with calibrated bands, what the band is, per window type: auto (the lowest CRPS on the held-out days), "
        "conformal (the model's own errors, scaled by volatility), ewma or garch (that random walk around the "
        "point forecast), quantiles (the --samples answers' quantiles, conformalized on the held-out days)",
        group="inference",
        choices=["auto", "conformal", "ewma", "garch", "quantiles"],
        more=True,
    )
    point: str = option(
        "calibrated",
        "with calibrated bands, the point forecast: calibrated (default), the model's change from the last close "
        "weighted by what the held-out days support (0: persistence, 1: as generated); model: as generated",
        group="inference",
        choices=list(POINT_SOURCES),
        more=True,
    )
    # None: what is generated decides (forecast evaluation 1,024 sequences, instruction comparison 64 prompts)
    batch_size: int | None = option(
        None,
        "sequences (prompts × samples) generated together; a batch the GPU cannot hold is split in two (default: "
        "forecast evaluation 1024, instruction comparison 64 prompts)",
        group="inference",
        flag="--generation-batch-size",
        aliases=["--eval-batch-size"],
        cpu=8,
        check=AT_LEAST_1,
        more=True,
    )

    def __post_init__(self):
        settle(self)
        if self.band_family == "quantiles" and self.samples < 2:
            raise StockToolError("--band-family quantiles is made of sampled answers: give --samples 2 or more")

    def identity(self) -> str:
        """What cached answers depend on besides the model and the prompt."""
        return f"k{self.samples}:t{self.temperature}:{'grammar' if self.constrained else 'free'}:s{self.seed}"

    def describe(self) -> str:
        how = "greedy" if self.samples == 1 else f"median of {self.samples} samples at temperature {self.temperature:g}"
        return how + (", constrained to the answer format" if self.constrained else ", unconstrained")


def parse_codes(text: str) -> tuple[str, ...]:
    """'2330,2454' → ('2330', '2454')."""
    codes = tuple(c.strip() for c in text.split(",") if c.strip())
    if not codes:
        raise ValueError("give at least one stock code, e.g. 2330 or 2330,2454")
    return codes


@dataclass(frozen=True)
class ForecastConfig:
    codes: tuple[str, ...] | None = option(
        None,
        "stock code(s) to forecast, e.g. 2330 or 2330,2454,6569 (default 2330; after training: 2330 when trained "
        "on, else the first company)",
        group="forecast",
        flag="--code",
        parse=parse_codes,
        text=",".join,
    )
    # bounded so that the calendar days they span stay dates (about 20 years of trading days, and 4 of forecasts)
    past: int = option(5, "known trading days given to the model", group="forecast", cpu=1, check=between(1, 5000))
    future: int = option(5, "trading days to forecast", group="forecast", cpu=1, check=between(1, 1000))
    context: str = option("", "extra text (e.g. news) added to the prompt as is", group="forecast", more=True)
    chart_style: str = option(
        "international",
        "colours of the known candles: international (green up, red down) or taiwan (red up, green down)",
        group="forecast",
        choices=["international", "taiwan"],
        more=True,
    )

    def __post_init__(self):
        settle(self)
