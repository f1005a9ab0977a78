"""Decoding workers: batches translated side by side in forked processes.

A batch of decoding multiplies small matrices one step at a time; on a CPU its
operations are too small to keep several threads busy, so two threads on one
batch are far from twice one thread. Two processes of one thread each, every
one translating whole batches, use two cores better (CTranslate2 calls this
``inter_threads``). Measured on test2016 with the model loaded once, 2 cores:
1.15-1.8x the sentences per second of one process with two threads.

The workers are forked after the model is loaded, so they share its weights
(copy-on-write) and start in milliseconds; each returns its batches' results,
which are put back in input order. Since a sentence translates the same in
any batch (``search.py``), the output is the same with any number of workers.
Forking is for the CPU on Linux: a CUDA context does not survive a fork, and
macOS forks unsafely, so there ``workers`` must stay 1. **Each worker runs one
thread**: torch's CPU threads are an OpenMP team (GNU libgomp), and a forked
child that starts a team of two or more threads after its parent used one
waits forever at the team's barrier (measured: ``--threads 4 --workers 2``
hung). One thread per worker never starts a team.

``workers="auto"`` (the default of ``attnmt translate`` and ``evaluate``) asks
for one single-threaded worker per torch thread where forking works, and 1
elsewhere, as Marian's ``--cpu-threads`` runs one single-threaded worker per
thread.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from itertools import repeat
from typing import Any, TypeVar

import torch

from attnmt.errors import InputError, WorkerLost

T = TypeVar("T")

#: ``workers`` value for one single-threaded worker per torch thread where forking works (else 1).
AUTO = "auto"

#: The object whose methods ``ForkedWorkers`` call in the children: set just before the fork.
_target: Any = None
_LOST = "a decoding worker process ended abruptly (killed, or out of memory?)"
#: prctl option: a signal this process receives when the thread that forked it ends (Linux).
_PR_SET_PDEATHSIG = 1


def _linux_fork() -> bool:
    """Whether this platform forks safely (Linux); the CPU check is the caller's."""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def resolve_workers(workers: int | str, device: torch.device) -> int:
    """The number of workers to run: ``"auto"`` is one per torch thread where forking works, else 1."""
    if workers == AUTO:
        return torch.get_num_threads() if device.type == "cpu" and _linux_fork() else 1
    if isinstance(workers, bool) or not isinstance(workers, int):
        raise InputError("workers", f"expected a positive integer or {AUTO!r}, got {workers!r}")
    check_workers(workers, device)
    return workers


def check_workers(workers: int, device: torch.device) -> None:
    """``workers`` must be >= 1, and more than one needs fork on a Linux CPU."""
    if workers < 1:
        raise InputError("workers", f"must be at least 1, got {workers}")
    if workers == 1:
        return
    if device.type != "cpu":
        raise InputError("workers", f"parallel decoding processes run on the CPU; on {device.type} use 1")
    if not _linux_fork():
        raise InputError("workers", f"parallel decoding processes need fork on Linux; on {sys.platform} use 1")


def _start_worker() -> None:
    """In each worker: one thread (see the module docstring). Ctrl-C is the parent's: it stops the workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # how the parent stops a worker, whatever handler it inherited
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)  # a parent killed outright takes its workers along
    torch.set_num_threads(1)


class _Mapping:
    """What ``ordered_map``'s workers call: ``function`` on the item at an index (both inherited by the fork)."""

    def __init__(self, function: Callable[[Any], Any], items: Sequence[Any]) -> None:
        self.function, self.items = function, items

    def item(self, index: int) -> Any:
        return self.function(self.items[index])


def ordered_map(function: Callable[[Any], T], items: Sequence[Any], workers: int = 1) -> list[T]:
    """[function(item) for item in items], in ``workers`` forked processes when there is work for them.

    Each worker runs one thread. If a worker dies (killed, or out of memory)
    this raises a one-line ``WorkerLost`` instead of waiting forever; on an
    exception or Ctrl-C in the parent the workers are stopped at once.
    """
    workers = min(workers, len(items))
    if workers <= 1:
        return [function(item) for item in items]
    forked = ForkedWorkers(_Mapping(function, items), workers)
    try:
        return forked.map("item", range(len(items)))
    except WorkerLost as error:
        raise WorkerLost(f"{error}; --workers 1 decodes in one process") from error.__cause__
    finally:
        forked.close()


def _call(method: str, *args: Any) -> Any:
    return getattr(_target, method)(*args)


class ForkedWorkers:
    """``workers`` forked single-thread processes that run methods of ``target`` (the decoding).

    All of them are forked in the constructor, so create it before starting
    threads (a fork copies only the calling thread). ``call`` blocks its thread
    until a worker has answered; several threads may call at once.
    """

    def __init__(self, target: Any, workers: int) -> None:
        global _target
        _target = target
        before = set(multiprocessing.active_children())
        self.pool = ProcessPoolExecutor(workers, multiprocessing.get_context("fork"), _start_worker)
        self.pool.submit(int).result()  # with fork, the first task starts every worker at once
        self.processes = set(multiprocessing.active_children()) - before

    def call(self, method: str, *args: Any) -> Any:
        """``target.method(*args)`` in a worker; ``WorkerLost`` if a worker ended abruptly."""
        try:
            return self.pool.submit(_call, method, *args).result()
        except BrokenProcessPool as error:
            raise WorkerLost(_LOST) from error

    def map(self, method: str, arguments: Iterable[Any]) -> list[Any]:
        """[target.method(a) for a in arguments], spread over the workers, in order."""
        try:
            return list(self.pool.map(_call, repeat(method), arguments))
        except BrokenProcessPool as error:
            raise WorkerLost(_LOST) from error

    def close(self) -> None:
        """Stop the workers now, even in the middle of a batch."""
        global _target
        for process in self.processes:
            process.terminate()
        self.pool.shutdown(wait=True, cancel_futures=True)
        _target = None
