"""The command line: parse the arguments (`config/cli.py`), then run the steps the command asks for, in order.
Nothing else lives here.

    python main.py train --company-list-file data/companies.json     fetch, build, fine-tune, forecast
    python main.py forecast --code 2330 --past 5 --future 5           forecast with a candlestick chart
    python main.py evaluate --test-start 2026-03-02                   walk-forward report against baselines
    python main.py --train 1 --company-list-file data/companies.json  the spec's form (every flag works)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from config import cli
    from utils import StockToolError, setup_logging

    invocation = cli.parse(sys.argv[1:] if argv is None else list(argv))  # --help and argparse's refusals exit
    setup_logging(invocation.verbose)
    from llm import distributed

    try:
        cli.check(invocation)  # before the heavy imports: a refusal comes at once
        return _run(invocation)
    except distributed.MainFailed:
        return 2  # rank 0 has said why
    except StockToolError as exc:
        rank = os.environ.get("RANK", "0")  # a process other than rank 0 under torchrun says which it is
        print(f"error: {exc}" if rank in ("", "0") else f"error (rank {rank}): {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = ""
        if "train" in invocation.steps or "train_instruct" in invocation.steps:
            hint = "; rerun with --resume to continue training from the last checkpoint"
        if "trade" in invocation.steps:
            hint = "; today's journal shows what was sent: a rerun never resends an order marked sending or sent"
        print("interrupted" + hint, file=sys.stderr)
        return 130


def _run(invocation) -> int:
    """The settings settled for this hardware, the facade, then the steps (on rank 0; under torchrun the other
    ranks train beside it and serve its generation)."""
    import model
    from config import cli
    from llm import distributed, sft
    from stock_predictor import StockPredictor

    cuda = model.gpu_stack()  # on a GPU, unsloth first: it must precede trl, transformers and peft
    here = distributed.setup(cuda)  # one of several processes under torchrun / accelerate launch
    settings = invocation.settings(cuda)
    if here.main:
        for note in cli.device_notes(invocation, settings, cuda):
            print(note)
    model.check_quantization(settings.model, cuda)  # in every mode: inference ignored the flags on a CPU
    if {"train", "train_instruct"} & set(invocation.steps):
        sft.check_train_flags(settings.train, cuda)  # what needs CUDA, before any data work
    secrets = invocation.secrets()
    predictor = StockPredictor(settings, newsapi_key=secrets.newsapi())
    pool = predictor.generation_pool()
    if not here.main:
        return _serve(invocation, predictor, pool)
    code = _steps(invocation, predictor, pool, secrets)
    pool.stop()
    distributed.finish()
    return code


def _serve(invocation, predictor, pool) -> int:
    """A process other than rank 0 under torchrun: train beside rank 0, then generate its share of what rank 0's
    evaluation or comparison asks for, until rank 0 is done."""
    from llm import distributed

    if "train_instruct" in invocation.steps:
        predictor.train_instruct()
    elif "train" in invocation.steps:
        predictor.train()
    pool.serve()
    distributed.finish()
    return 0


def _steps(invocation, predictor, pool, secrets) -> int:
    """Every step of the command, in order; the exit code of the last that has one (3: a forecast that could not
    be read)."""
    target = _export_target(invocation, predictor)  # checked before any work: a run must not end in a refusal
    code = 0
    for step in invocation.steps:
        code = STEPS[step](predictor, pool, secrets, target) or code
    return code


def _export_target(invocation, predictor) -> Path | None:
    if "export" not in invocation.steps:
        return None
    from config.export_args import check_target

    s = predictor.settings
    target = Path(s.export.export_dir or Path(s.data.output_dir) / s.export.kind)
    check_target(target)
    return target


def _build_forecaster(predictor, pool, secrets, target) -> None:
    from instruct import teacher

    built = predictor.settings.instruct_data
    predictor.build_forecaster(teacher.TeacherClient(built.teacher_url, built.teacher_model))


def _export(predictor, pool, secrets, target) -> None:
    from llm import export

    s = predictor.settings
    print(export.describe(export.export(s.export, s.model.model_dir, target)))


def _trade(predictor, pool, secrets, target) -> None:
    import stock_api

    predictor.trade(stock_api.Credentials.from_env(secrets.api_account, secrets.api_password))


def _forecast(predictor, pool, secrets, target) -> int:
    from stock_predictor import print_forecast

    asked = predictor.settings.forecast
    results = predictor.forecast_many(list(asked.codes or ("2330",)), asked.past, asked.future, asked.context)
    for result in results:
        print_forecast(result)
    return 0 if all(r.ok for r in results) else 3


def _forecast_after_training(predictor, pool, secrets, target) -> int:
    """The main job ends with the new adapter's forecast and chart (of --code; by default 2330 when it was
    trained on, else the first company). Training has succeeded by then: a forecast that cannot be made is
    reported, and the exit code stays 0."""
    from stock_predictor import print_forecast
    from utils import StockToolError

    asked = predictor.settings.forecast
    trained = [c.code for c in predictor.companies()]
    codes = list(asked.codes or ("2330" if "2330" in trained else trained[0],))
    print(f"forecast with the new adapter ({asked.past} known → {asked.future} forecast trading days):")
    try:
        for result in predictor.forecast_many(codes, asked.past, asked.future, asked.context):
            print_forecast(result)
    except StockToolError as exc:
        print(f"no forecast after training: {exc}")
    return 0


STEPS = {
    "build_forecaster": _build_forecaster,
    "build_events": lambda predictor, *_: predictor.build_events() and None,
    "train": lambda predictor, *_: predictor.train() and None,
    "train_instruct": lambda predictor, *_: predictor.train_instruct() and None,
    "export": _export,
    "compare": lambda predictor, pool, *_: predictor.compare(pool) and None,
    "evaluate": lambda predictor, pool, *_: predictor.evaluate(pool) and None,
    "trade": _trade,
    "forecast": _forecast,
    "forecast_after_training": _forecast_after_training,
}


if __name__ == "__main__":
    sys.exit(main())
