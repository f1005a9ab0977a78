"""The run directory of ``attnmt train``: one writer, only attnmt's files, no leftovers.

- ``RunLock`` holds an exclusive ``flock`` on ``train.lock`` for the whole run, so
  a second ``attnmt train`` on the same directory stops at once with a message
  naming the process that holds it. The kernel drops the lock when its process
  dies (even by ``kill -9``), so a stale lock never blocks anyone: the PID written
  in the file is only there to be reported.
- ``check_out_dir`` refuses an ``--out`` that is a file, or a non-empty
  directory that is not an attnmt run (no ``config.yaml``), instead of writing
  over someone's files.
- ``truncate_log`` drops the log rows of steps after the checkpoint a run
  resumes from: they are replayed, and would otherwise appear twice.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from types import TracebackType

from attnmt.errors import AttnmtError
from attnmt.files import write_text

LOCK_NAME = "train.lock"


def check_out_dir(out_dir: Path) -> None:
    """``out_dir`` must be new, empty, or an attnmt run directory; create it."""
    if out_dir.exists() and not out_dir.is_dir():
        raise AttnmtError(f"{out_dir}: --out names a file; give a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / "config.yaml").is_file():
        raise AttnmtError(
            f"{out_dir}: not empty and not an attnmt run (no config.yaml); give a new or empty --out directory"
        )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise AttnmtError(f"{out_dir}: cannot create the run directory ({error.strerror})") from None


class RunLock:
    """Exclusive lock on a run directory for the life of a ``with`` block."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / LOCK_NAME
        self.stream: int | None = None

    def __enter__(self) -> RunLock:
        try:
            self.stream = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise AttnmtError(f"{self.path.parent}: cannot write to the run directory ({error.strerror})") from None
        try:
            fcntl.flock(self.stream, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.stream, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(self.stream)
            raise AttnmtError(
                f"{self.path.parent}: another attnmt train (pid {holder}) is writing this run directory; "
                "wait for it to finish or use another --out"
            ) from None
        os.ftruncate(self.stream, 0)
        os.pwrite(self.stream, f"{os.getpid()}\n".encode(), 0)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self.stream is not None:
            self.path.unlink(missing_ok=True)
            os.close(self.stream)  # closing releases the flock
            self.stream = None


def truncate_log(log_path: Path, last_step: int) -> int:
    """Keep only the rows of steps up to ``last_step``; return how many rows were dropped."""
    if not log_path.is_file():
        return 0
    kept, dropped = [], 0
    for line in log_path.read_text(encoding="utf-8").splitlines():
        try:
            step = json.loads(line).get("step", 0)
        except (json.JSONDecodeError, AttributeError):
            dropped += 1  # a row cut short by a kill
            continue
        if isinstance(step, int) and step <= last_step:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        write_text(log_path, "".join(line + "\n" for line in kept))
    return dropped
