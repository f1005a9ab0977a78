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
macOS forks unsafely, so there ``workers`` must stay 1.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

from attnmt.errors import InputError

T = TypeVar("T")

#: What the forked workers run: set just before the fork, read in the children.
_work: tuple[Callable[[Any], Any], Sequence[Any]] | None = None


def check_workers(workers: int, device: torch.device) -> None:
    """``workers`` must be >= 1, and more than one needs fork on a Linux CPU."""
    if workers < 1:
        raise InputError("workers", f"must be at least 1, got {workers}")
    if workers == 1:
        return
    if device.type != "cpu":
        raise InputError("workers", f"parallel decoding processes run on the CPU; on {device.type} use 1")
    if not sys.platform.startswith("linux") or "fork" not in multiprocessing.get_all_start_methods():
        raise InputError("workers", f"parallel decoding processes need fork on Linux; on {sys.platform} use 1")


def _start_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def _run(index: int) -> Any:
    assert _work is not None, "a worker runs only in a process forked by ordered_map"
    function, items = _work
    return function(items[index])


def ordered_map(function: Callable[[Any], T], items: Sequence[Any], workers: int = 1) -> list[T]:
    """[function(item) for item in items], in ``workers`` forked processes when there is work for them.

    The threads torch has now are shared out among the workers (at least one each).
    """
    global _work
    workers = min(workers, len(items))
    if workers <= 1:
        return [function(item) for item in items]
    threads = max(1, torch.get_num_threads() // workers)
    _work = (function, items)
    try:
        with multiprocessing.get_context("fork").Pool(workers, _start_worker, (threads,)) as pool:
            return list(pool.imap(_run, range(len(items)), chunksize=1))
    finally:
        _work = None
