"""One process per GPU under `torchrun` or `accelerate launch`: which rank this is, the process groups, and
the few collectives the pipeline needs.

- Training is data parallel (DDP through the Trainer). Rank 0 alone fetches prices and headlines and writes
  the examples (`on_main` hands the result to the other ranks); every rank trains on its own share of each
  step; rank 0 alone saves checkpoints, the adapter and the TensorBoard logs.
- Evaluation and `--compare` are driven by rank 0. The other ranks load the same models and serve
  generation (`Pool`): each generates its share of every batch of prompts and rank 0 gathers the answers
  in order. Everything else (reports, charts, the answer cache) happens once, on rank 0.

Launchers set RANK, LOCAL_RANK and WORLD_SIZE; without them this is one process and every helper here is
a plain call. The control messages travel over a gloo group with a long timeout, because rank 0 may spend
many minutes fetching prices or fitting the LSTM while the others wait; NCCL's watchdog would kill them.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
from dataclasses import dataclass

from utils import StockToolError

log = logging.getLogger("stock")

WAIT = dt.timedelta(days=1)  # how long a rank waits for rank 0's next message


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


class MainFailed(StockToolError):
    """Raised on ranks > 0 when rank 0 refused the run; rank 0 has already printed why."""


def world() -> World:
    """This process's place among the launcher's processes (one process: rank 0 of 1)."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise StockToolError("RANK, LOCAL_RANK and WORLD_SIZE must be whole numbers (the launcher sets them)") from None
    return World(rank, local_rank, max(1, size))


_control = None  # the gloo group of control messages, once set up


def setup(cuda: bool) -> World:
    """Join the launcher's process group (NCCL on GPUs, gloo on CPUs) and open the control group. On CPUs
    the ranks share the cores: each gets its share of threads."""
    global _control
    here = world()
    if here.size == 1 or _control is not None:
        return here
    import torch
    import torch.distributed as dist

    if cuda:
        if here.local_rank >= torch.cuda.device_count():
            raise StockToolError(
                f"rank {here.rank} wants GPU {here.local_rank} but this machine shows {torch.cuda.device_count()}: "
                "start at most one process per GPU (--nproc_per_node / --num_processes)"
            )
        torch.cuda.set_device(here.local_rank)
    elif "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // here.size))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    _control = dist.new_group(backend="gloo", timeout=WAIT)
    if not here.main:
        # the other ranks' output would repeat rank 0's line for line: they print nothing, log warnings only
        # (marked with their rank) and draw no progress bars
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)
        logging.getLogger("stock").setLevel(logging.WARNING)
        for handler in logging.getLogger().handlers:
            handler.setFormatter(
                logging.Formatter(f"%(asctime)s %(levelname)s [rank {here.rank}] %(message)s", "%H:%M:%S")
            )
        _quiet_progress_bars()
    log.info("rank %d of %d (local %d) joined", here.rank, here.size, here.local_rank)
    return here


def _quiet_progress_bars() -> None:
    """No progress bars on a process other than rank 0: datasets' and transformers' switched off through their
    own functions (rank 0 draws the run's)."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def finish() -> None:
    """Leave the process groups (torch warns when a program exits without it)."""
    global _control
    if _control is None:
        return
    import torch.distributed as dist

    dist.barrier(group=_control)
    dist.destroy_process_group()
    _control = None


def _broadcast(value=None):
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0, group=_control)
    return box[0]


def _gather(value) -> list | None:
    import torch.distributed as dist

    here = world()
    parts = [None] * here.size if here.main else None
    dist.gather_object(value, parts, dst=0, group=_control)
    return parts


def on_main(fn):
    """fn() run on rank 0 only; every rank gets its result. A refusal on rank 0 reaches the others as
    `MainFailed`, so that no rank waits for data that will never come."""
    if _control is None:
        return fn()
    if world().main:
        try:
            result = fn()
        except StockToolError as exc:
            _broadcast(("error", str(exc)))
            raise
        _broadcast(("ok", result))
        return result
    status, result = _broadcast()
    if status == "error":
        raise MainFailed(result)
    return result


def total(value: int) -> int:
    """The sum of `value` over the ranks (e.g. the tokens every rank trained on)."""
    if _control is None:
        return value
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(tensor, group=_control)
    return int(tensor.item())


def shard(items: list, rank: int, size: int) -> list:
    """The items rank `rank` of `size` works on: every size-th one, starting at its rank."""
    return items[rank::size]


def unshard(parts: list[list]) -> list:
    """The inverse of `shard` over all ranks' parts: the results back in the items' order."""
    size = len(parts)
    out = [None] * sum(len(p) for p in parts)
    for rank, part in enumerate(parts):
        out[rank::size] = part
    return out


class Pool:
    """Generation spread over the ranks. `factory(key)` builds fn(prompts, max_new_tokens, regexes) -> answers
    for the model named `key` (loading it once); every rank owns one. Rank 0 calls `generator(key)` and
    `release(key)`; the other ranks call `serve()` until rank 0 calls `stop()`. With one process the pool
    is the factory itself."""

    def __init__(self, factory):
        self.factory = factory
        self.built: dict = {}

    @classmethod
    def of_kinds(cls, kinds: dict) -> Pool:
        """A pool of keys (kind, name): `kinds[kind]()` makes that kind's factory, on first use."""
        factories: dict = {}

        def build(key):
            if key[0] not in factories:  # made on first use (a comparison's factory reads its adapters' configs)
                factories[key[0]] = kinds[key[0]]()
            return factories[key[0]](key)

        return cls(build)

    def identity(self, key) -> str:
        """What the answers of the model named `key` depend on: its generator's `identity` (an evaluation's cache
        keys)."""
        return self.local(key).identity

    @property
    def processes(self) -> int:
        """How many processes share each request."""
        return world().size if _control is not None else 1

    def local(self, key):
        if key not in self.built:
            self.built[key] = self.factory(key)
        return self.built[key]

    def generator(self, key):
        if _control is None:
            return self.local(key)
        local = self.local(key)

        def generate(prompts, max_new_tokens, regexes=None):
            _broadcast(("generate", key, prompts, max_new_tokens, regexes))
            return self._run(local, prompts, max_new_tokens, regexes)

        generate.local = local  # rank 0's own generator (its loaded model), for callers that need it
        return generate

    def _run(self, fn, prompts, max_new_tokens, regexes) -> list | None:
        here = world()
        mine = shard(prompts, here.rank, here.size)
        try:
            result = ("ok", fn(mine, max_new_tokens, None if regexes is None else shard(regexes, here.rank, here.size)))
        except StockToolError as exc:
            result = ("error", f"rank {here.rank}: {exc}")
        parts = _gather(result)
        if not here.main:
            return None
        failed = [text for status, text in parts if status == "error"]
        if failed:
            raise StockToolError(failed[0])
        return unshard([answers for _, answers in parts])

    def release(self, key) -> None:
        """Free the model named `key` on every rank before the next one loads."""
        if _control is not None and world().main:
            _broadcast(("release", key))
        self.built.pop(key, None)

    def stop(self) -> None:
        """Rank 0: let the serving ranks return."""
        if _control is not None and world().main:
            _broadcast(("stop",))
        self.built.clear()

    def serve(self) -> None:
        """Ranks > 0: answer rank 0's requests until it stops."""
        while True:
            message = _broadcast()
            if message[0] == "stop":
                self.built.clear()
                return
            if message[0] == "release":
                self.built.pop(message[1], None)
                continue
            _, key, prompts, max_new_tokens, regexes = message
            try:
                fn = self.local(key)
            except StockToolError as exc:
                # the request must still be answered, or rank 0 would wait for this rank forever
                def fn(*_, error=str(exc)):
                    raise StockToolError(error)

            self._run(fn, prompts, max_new_tokens, regexes)
