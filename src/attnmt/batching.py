"""Micro-batching: sentences of concurrent requests are decoded together, each caller gets its own answer.

A server that decodes each request alone wastes the batch dimension: one
sentence keeps the CPU's matrix units as busy as sixty-four. ``MicroBatcher``
gathers the sentences of requests that arrive close together (up to
``max_batch`` sentences, waiting at most ``max_wait_ms`` for more after the first
one) into one call of the translate function, in one worker thread, and hands
each request exactly its own results. Because a sentence translates the same
alone or in a batch (``search.py``), batching never changes an answer.

A request that is alone in the queue when the previous batch also held one
request (or none) is decoded at once: that is one client asking one thing at a
time, and waiting would only add to its latency. After a batch of several
requests the batcher waits, because their clients are likely to send more as
soon as they are answered.

Fairness: sentences are taken round-robin across the waiting requests that share
decoding options, so a request of 64 long sentences cannot hold back a request
of one short one for more than a batch. The queue is bounded (``max_pending``
sentences): past it ``submit`` raises ``QueueFull`` at once instead of letting
work pile up. Explanations run on the same workers, one per call.

``parallel`` threads take batches at once, for a translate function that hands
each batch to one of as many decoding processes (``serving.py``): while one
batch decodes, the next is gathered and sent to another process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

#: What translate jobs are grouped by: requests with equal options can share a batch.
Options = tuple[Any, ...]


class QueueFull(Exception):
    """Too much work is waiting; ``retry_after`` seconds is a fair wait before trying again."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the translation queue is full; retry after {retry_after} s")
        self.retry_after = retry_after


@dataclass(eq=False)
class _Job:
    """One request: its sentences (or one explanation), how far it got, and the future its caller awaits."""

    options: Options | None  # None: an explanation
    texts: list[str]
    future: Future[Any] = field(default_factory=Future)
    results: list[Any] = field(default_factory=list)
    taken: int = 0
    done: int = 0
    arrived: float = field(default_factory=time.monotonic)


class MicroBatcher:
    """A worker thread that decodes the queued sentences of many requests in shared batches."""

    def __init__(
        self,
        translate: Callable[[list[str], Options], list[Any]],
        explain: Callable[[Any], Any],
        max_batch: int = 32,
        max_wait_ms: float = 5.0,
        max_pending: int = 1024,
        parallel: int = 1,
    ) -> None:
        self.translate, self.explain = translate, explain
        self.max_batch, self.max_wait, self.max_pending = max_batch, max_wait_ms / 1000, max_pending
        self.jobs: list[_Job] = []
        self.pending = 0  # sentences queued and not yet taken
        self.condition = threading.Condition()
        self.stopping = False
        self.batches = 0
        self.last_batch_requests = 0  # requests in the batch taken last
        self.threads = [
            threading.Thread(target=self._work, name=f"attnmt-decoder-{i}", daemon=True) for i in range(parallel)
        ]

    def start(self) -> MicroBatcher:
        """Start the worker threads (``submit`` does it on first use)."""
        with self.condition:
            for thread in self.threads:
                if not thread.is_alive() and not self.stopping:
                    thread.start()
        return self

    def stop(self) -> None:
        with self.condition:
            self.stopping = True
            self.condition.notify_all()
        for thread in self.threads:
            if thread.is_alive():
                thread.join(timeout=30)

    def submit(self, texts: list[str], options: Options) -> Future[Any]:
        """Queue a request's sentences; the future resolves to one result per text, in order."""
        return self._enqueue(_Job(options, list(texts), results=[None] * len(texts)), len(texts))

    def submit_explain(self, request: Any) -> Future[Any]:
        """Queue one explanation (it counts as one sentence)."""
        return self._enqueue(_Job(None, [request]), 1)

    def _enqueue(self, job: _Job, sentences: int) -> Future[Any]:
        self.start()
        with self.condition:
            if self.pending + sentences > self.max_pending:
                raise QueueFull(retry_after=max(1, round(self.pending / max(1, self.max_batch) * 0.5)))
            if not job.texts:
                job.future.set_result([])
                return job.future
            self.jobs.append(job)
            self.pending += sentences
            self.condition.notify_all()
        return job.future

    @property
    def queued_sentences(self) -> int:
        return self.pending

    def _work(self) -> None:
        while True:
            with self.condition:
                batch = self._next_batch()
            if batch is None:
                return
            self._run(batch)

    def _next_batch(self) -> list[tuple[_Job, int]] | None:
        """The next batch once it is due (None when stopping); another thread may take the first job meanwhile."""
        while True:
            while not self.jobs and not self.stopping:
                self.condition.wait()
            if self.stopping:
                return None
            first = self.jobs[0]
            if first.options is not None:
                self._wait_for_company(first)
            if first in self.jobs and not self.stopping:
                return self._take(first)

    def _wait_for_company(self, first: _Job) -> None:
        """Hold the batch open until it is full or ``max_wait`` after the oldest request arrived.

        Not at all for a request alone in the queue after a batch of at most one request.
        """
        if len(self.jobs) == 1 and self.last_batch_requests <= 1:
            return
        deadline = first.arrived + self.max_wait
        while not self.stopping:
            waiting = sum(len(j.texts) - j.taken for j in self.jobs if j.options == first.options)
            left = deadline - time.monotonic()
            if waiting >= self.max_batch or left <= 0:
                return
            self.condition.wait(timeout=left)

    def _take(self, first: _Job) -> list[tuple[_Job, int]]:
        """Up to ``max_batch`` (job, sentence index) pairs sharing the first job's options, round-robin."""
        if first.options is None:
            self.jobs.pop(0)
            self.pending -= 1
            return [(first, 0)]
        group = [job for job in self.jobs if job.options == first.options]
        batch: list[tuple[_Job, int]] = []
        while len(batch) < self.max_batch and any(job.taken < len(job.texts) for job in group):
            for job in group:
                if job.taken < len(job.texts) and len(batch) < self.max_batch:
                    batch.append((job, job.taken))
                    job.taken += 1
        self.jobs = [job for job in self.jobs if job.taken < len(job.texts)]
        self.pending -= len(batch)
        self.last_batch_requests = len({id(job) for job, _ in batch})
        return batch

    def _run(self, batch: list[tuple[_Job, int]]) -> None:
        """Decode one batch outside the lock and deliver each result to its request."""
        first = batch[0][0]
        try:
            if first.options is None:
                first.future.set_result(self.explain(first.texts[0]))
                return
            results = self.translate([job.texts[index] for job, index in batch], first.options)
        except BaseException as error:  # delivered to every caller of the batch, never kills the worker
            for job in {id(job): job for job, _ in batch}.values():
                if not job.future.done():
                    job.future.set_exception(error)
            return
        finally:
            with self.condition:
                self.batches += 1
        with self.condition:  # another thread may deliver other sentences of the same request
            for (job, index), result in zip(batch, results):
                job.results[index] = result
                job.done += 1
                if job.done == len(job.texts) and not job.future.done():
                    job.future.set_result(job.results)
