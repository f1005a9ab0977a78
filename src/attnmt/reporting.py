"""What training tells people: messages, ``train_log.jsonl`` rows and progress.

On a terminal a tqdm bar per epoch shows loss, target tokens/s and the epoch's
ETA; when stderr is not a terminal (a log file, a CI job, Slurm) each log row is
printed as one plain line instead, so the log stays readable. Only the main
process of a distributed run reports; the others stay silent.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class IntervalMeter:
    """Summed loss and target tokens since the last log row, and the time they took."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.loss, self.tokens, self.interval_start = 0.0, 0, self.started
        self.total_tokens, self.total_seconds = 0, 0.0

    def add(self, loss: float, tokens: int) -> None:
        self.loss += loss
        self.tokens += tokens

    def restart(self) -> None:
        """Start timing afresh (after a validation: its time is not training time)."""
        self.interval_start = time.monotonic()

    def take(self, lr: float) -> dict[str, Any]:
        """The log fields of the interval (loss per target token, speed), then a new interval."""
        now = time.monotonic()
        seconds = now - self.interval_start
        row = {
            "loss": round(self.loss / max(1, self.tokens), 4),
            "lr": lr,
            "tgt_tokens_per_s": round(self.tokens / max(seconds, 1e-9), 1),
            "elapsed_s": round(now - self.started, 1),
        }
        self.total_tokens += self.tokens
        self.total_seconds += seconds
        self.loss, self.tokens, self.interval_start = 0.0, 0, now
        return row

    def overall_tokens_per_s(self) -> float:
        return self.total_tokens / self.total_seconds if self.total_seconds else 0.0


class _PlainBar:
    """Progress for a log file: one line per log row with the epoch's ETA."""

    def __init__(self, total: int, initial: int, epoch: int) -> None:
        self.total, self.done, self.epoch = total, initial, epoch
        self.started, self.initial = time.monotonic(), initial

    def update(self, count: int) -> None:
        self.done += count

    def set_postfix(self, loss: str, tok_s: str) -> None:
        elapsed = time.monotonic() - self.started
        rate = (self.done - self.initial) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        print(
            f"[attnmt] epoch {self.epoch + 1}: batch {self.done}/{self.total}, loss {loss}, "
            f"{tok_s} target tokens/s, epoch ETA {int(eta // 60)}:{int(eta % 60):02d}",
            file=sys.stderr,
            flush=True,
        )

    def write(self, message: str, file: Any = None) -> None:
        print(message, file=sys.stderr, flush=True)


class _Silent:
    def update(self, count: int) -> None: ...

    def set_postfix(self, loss: str, tok_s: str) -> None: ...


class Reporter:
    """Messages on stderr, rows in ``train_log.jsonl``, a progress display; all off when not ``enabled``."""

    def __init__(self, log_path: Path, progress: bool, enabled: bool) -> None:
        self.log_path, self.progress, self.enabled = log_path, progress, enabled

    def message(self, text: str, bar: Any = None) -> None:
        if not self.enabled:
            return
        if bar is not None and hasattr(bar, "write"):
            bar.write(f"[attnmt] {text}", file=sys.stderr)
        else:
            print(f"[attnmt] {text}", file=sys.stderr, flush=True)

    def row(self, row: dict[str, Any]) -> None:
        if self.enabled:
            with self.log_path.open("a", encoding="utf-8") as stream:
                stream.write(json.dumps(row) + "\n")

    @contextmanager
    def epoch_bar(self, total: int, initial: int, epoch: int) -> Iterator[Any]:
        """A tqdm bar on a terminal, plain lines otherwise, nothing without progress."""
        if not (self.enabled and self.progress):
            yield _Silent()
            return
        if not sys.stderr.isatty():
            yield _PlainBar(total, initial, epoch)
            return
        from tqdm import tqdm

        bar = tqdm(
            total=total,
            initial=initial,
            desc=f"epoch {epoch + 1}",
            unit="batch",
            dynamic_ncols=True,
            file=sys.stderr,
        )
        try:
            yield bar
        finally:
            bar.close()


def best_bleu_from_log(model_dir: Path) -> float | None:
    """The best validation BLEU in a run's ``train_log.jsonl``, if it has one."""
    log = model_dir / "train_log.jsonl"
    if not log.is_file():
        return None
    scores = []
    for line in log.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("valid_bleu"), (int, float)):
            scores.append(float(row["valid_bleu"]))
    return max(scores) if scores else None
