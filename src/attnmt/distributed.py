"""The processes that train together: one by default, several under torchrun (DistributedDataParallel).

Training asks the ``World`` a few things: whether this process is the main one
(only it writes files and logs), whether any process raised a flag (Ctrl-C, the
time budget, a NaN: all processes then act at the same step), the sum of numbers
over processes (the loss of a global batch), and the main process's result of
work only it does (validation, training the tokenizer) — with its error, if it
failed, raised in every process, so that no process waits forever.

Under ``torchrun`` (or ``attnmt train --nproc N``, which starts torchrun's
elastic agent) the environment holds RANK/WORLD_SIZE/LOCAL_WORLD_SIZE;
``init_world`` joins the process group: gloo on the CPU, nccl on CUDA (each
process on the GPU of its LOCAL_RANK). Each process uses cores / local processes
threads unless ``training.threads`` says otherwise.
"""

from __future__ import annotations

import os
import signal
import sys
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any, NoReturn, TypeVar

import torch

from attnmt.errors import AttnmtError

T = TypeVar("T")


class World:
    """A single training process: rank 0 of 1."""

    rank = 0
    size = 1
    local_rank = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def any(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag, True if it is True in any process."""
        return flags

    def sum(self, *values: float) -> tuple[float, ...]:
        """Each value summed over all processes."""
        return values

    def maximum(self, *values: float) -> tuple[float, ...]:
        """Each value's largest value over all processes."""
        return values

    def on_main(self, work: Callable[[], T]) -> T:
        """Run ``work`` in the main process; every process gets its result (or raises its error)."""
        return work()

    def gather(self, value: Any) -> list[Any]:
        """``value`` of every process, by rank."""
        return [value]

    def close(self, finished: bool = False) -> None: ...


class TorchWorld(World):
    """One of several processes joined by ``torch.distributed``."""

    def __init__(self, backend: str, timeout_minutes: float = 30.0) -> None:
        torch.distributed.init_process_group(backend, timeout=timedelta(minutes=timeout_minutes))
        self.rank = torch.distributed.get_rank()
        self.size = torch.distributed.get_world_size()
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = torch.device("cuda", self.local_rank) if backend == "nccl" else torch.device("cpu")

    def any(self, *flags: bool) -> tuple[bool, ...]:
        tensor = torch.tensor([float(f) for f in flags], device=self.device)
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
        return tuple(bool(v > 0) for v in tensor.tolist())

    def sum(self, *values: float) -> tuple[float, ...]:
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(tensor)
        return tuple(float(v) for v in tensor.tolist())

    def maximum(self, *values: float) -> tuple[float, ...]:
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
        return tuple(float(v) for v in tensor.tolist())

    def on_main(self, work: Callable[[], T]) -> T:
        box: list[Any] = [None]
        if self.is_main:
            try:
                box[0] = ("ok", work())
            except AttnmtError as error:
                box[0] = ("error", f"{error}")
            except Exception as error:  # told to the others, then raised here as it is
                torch.distributed.broadcast_object_list([("error", f"{type(error).__name__}: {error}")], src=0)
                raise
        torch.distributed.broadcast_object_list(box, src=0)
        status, value = box[0]
        if status == "error":
            raise AttnmtError(value)
        return value  # type: ignore[no-any-return]

    def gather(self, value: Any) -> list[Any]:
        values: list[Any] = [None] * self.size
        torch.distributed.all_gather_object(values, value)
        return values

    def close(self, finished: bool = False) -> None:
        """Leave the group. After a normal end, first wait for every process to get here too:
        tearing gloo down while a peer still talks to it can abort that peer."""
        if torch.distributed.is_initialized():
            if finished:
                torch.distributed.barrier()
            torch.distributed.destroy_process_group()


def _cause(failure: Any) -> tuple[int, Any]:
    """The process whose failure stopped the others (rank, ``ProcessFailure``).

    The others end with 1 (they lost contact: ``train`` exits so, quietly) or by
    the agent's SIGTERM, and may be seen in the same poll as the cause, so
    torch's first failure can be one of them. The cause is the first other
    ending; failing that, the first exit with 1; failing that, the first.
    """
    failures = sorted(failure.failures.items(), key=lambda item: (item[1].timestamp, item[0]))
    likely = {1: 1, -signal.SIGTERM: 2}
    return min(failures, key=lambda item: likely.get(item[1].exitcode, 0))


#: Set for the workers of ``attnmt train --nproc``: the launching process reports failures.
LAUNCHED = "ATTNMT_LAUNCHED_BY_NPROC"


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ


def leave(status: int) -> NoReturn:
    """End a training process of several with ``status``, without Python's interpreter shutdown.

    gloo runs collectives on worker threads of its own, and a worker drops its
    last reference to a finished collective a moment after the caller's wait
    returned. If that collective's tensors were made in Python, dropping them
    takes the GIL; once the interpreter shuts down, a thread that asks for the
    GIL is ended and the C++ runtime aborts the process (SIGABRT, "terminate
    called without an active exception"; pytorch/pytorch#179291 describes it).
    ``destroy_process_group`` would join those threads, but DistributedDataParallel
    keeps the group alive after the group is destroyed (measured with torch
    2.13.0), so they outlive it. Files are written and closed by then; this
    flushes the standard streams and ends the process at once, as
    ``multiprocessing`` ends its children.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can reach it
            pass
    os._exit(status)


def init_world(device_setting: str, threads: int) -> World:
    """The world this process belongs to; sets torch's threads (``threads`` > 0, else cores / local processes)."""
    if not launched_by_torchrun():
        if threads:
            torch.set_num_threads(threads)
        return World()
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(threads or max(1, (os.cpu_count() or 1) // local_processes))
    use_cuda = device_setting == "cuda" or (device_setting == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return TorchWorld("nccl" if use_cuda else "gloo")


def launch(nproc: int, arguments: list[str]) -> int:
    """``attnmt train --nproc N``: run ``attnmt ARGUMENTS`` in N local processes under torchrun's elastic agent.

    Returns the exit status: 0, or that of the first process that failed (its own
    one-line error was printed by that process).
    """
    import logging

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # our one line says it
    os.environ[LAUNCHED] = "1"  # workers that only lost contact stay quiet: this process reports
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",
        max_restarts=0,
        monitor_interval=0.2,
    )
    try:
        elastic_launch(config, sys.executable)("-m", "attnmt", *arguments)
    except ChildFailedError as failure:
        rank, first = _cause(failure)
        if first.exitcode in (2, 130, 143):  # a user error it explained, or an interruption it saved
            return first.exitcode
        how = f"was killed by signal {-first.exitcode}" if first.exitcode < 0 else f"exited with {first.exitcode}"
        print(f"attnmt: error: training process {rank} of {nproc} {how}; the others stopped", file=sys.stderr)
        return 1
    return 0
