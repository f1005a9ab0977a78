"""The micro-batcher alone: shared batches, each request its own results, several decoding threads at once."""

from __future__ import annotations

import threading
import time
from typing import Any

from attnmt.batching import MicroBatcher


class _Recorder:
    """A translate function that records its batches and how many ran at the same time."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.lock = threading.Lock()
        self.running = self.most = 0
        self.batches: list[list[str]] = []

    def __call__(self, texts: list[str], options: Any) -> list[str]:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.batches.append(list(texts))
        time.sleep(self.seconds)
        with self.lock:
            self.running -= 1
        return [f"{text}:{options}" for text in texts]


def test_parallel_threads_decode_batches_at_once_and_every_request_gets_its_own_results() -> None:
    record = _Recorder(0.05)
    batcher = MicroBatcher(record, explain=lambda request: request, max_batch=4, max_wait_ms=1, parallel=2)
    try:
        requests = [[f"r{r}s{s}" for s in range(1 + r % 7)] for r in range(30)]
        futures = [batcher.submit(texts, options=r % 2) for r, texts in enumerate(requests)]
        for r, (texts, future) in enumerate(zip(requests, futures)):
            assert future.result(timeout=60) == [f"{text}:{r % 2}" for text in texts]
    finally:
        batcher.stop()
    assert record.most == 2  # two batches were decoding at the same time
    assert all(len(batch) <= 4 for batch in record.batches)
    taken = sorted(text for batch in record.batches for text in batch)
    assert taken == sorted(text for texts in requests for text in texts)  # each sentence decoded exactly once
    assert batcher.batches == len(record.batches)


def test_one_thread_decodes_one_batch_at_a_time() -> None:
    record = _Recorder(0.02)
    batcher = MicroBatcher(record, explain=lambda request: request, max_batch=2, max_wait_ms=1)
    try:
        futures = [batcher.submit([f"t{i}", f"u{i}"], options="o") for i in range(6)]
        assert [f.result(timeout=60) for f in futures] == [[f"t{i}:o", f"u{i}:o"] for i in range(6)]
    finally:
        batcher.stop()
    assert record.most == 1


def test_a_lone_client_is_not_kept_waiting_but_a_crowd_waits_for_company() -> None:
    record = _Recorder(0.3)
    batcher = MicroBatcher(record, explain=lambda request: request, max_batch=8, max_wait_ms=600)
    try:
        started = time.monotonic()
        alone = batcher.submit(["alone"], options="o")  # nothing before it: decoded at once, not held 600 ms
        while not record.batches and time.monotonic() - started < 0.55:
            time.sleep(0.005)
        assert record.batches == [["alone"]]
        crowd = [batcher.submit([name], options="o") for name in ("second", "third")]  # queued meanwhile
        assert alone.result(timeout=60) == ["alone:o"]
        assert [f.result(timeout=60) for f in crowd] == [["second:o"], ["third:o"]]
        after_crowd = batcher.submit(["fourth"], options="o")  # alone, but after a batch of two requests ...
        time.sleep(0.1)
        late = batcher.submit(["fifth"], options="o")  # ... so it waited, and this one joins it
        assert after_crowd.result(timeout=60) == ["fourth:o"] and late.result(timeout=60) == ["fifth:o"]
    finally:
        batcher.stop()
    assert record.batches == [["alone"], ["second", "third"], ["fourth", "fifth"]]
