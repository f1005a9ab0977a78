"""The run directory: one writer at a time, foreign directories refused, replayed log rows dropped."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from attnmt.errors import AttnmtError
from attnmt.rundir import LOCK_NAME, RunLock, check_out_dir, truncate_log
from conftest import tiny_config, write_tiny_corpus


def test_lock_refuses_a_second_holder_and_names_it(tmp_path: Path) -> None:
    with RunLock(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text().strip().isdigit()
        with pytest.raises(AttnmtError, match=r"another attnmt train \(pid \d+\) is writing"):
            with RunLock(tmp_path):
                pass
    with RunLock(tmp_path):  # released: free again
        pass
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_stale_lock_file_does_not_block(tmp_path: Path) -> None:
    """A lock file left by a killed process holds a dead PID and no flock: it is taken over."""
    (tmp_path / LOCK_NAME).write_text("999999\n")
    with RunLock(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text().strip() != "999999"


def test_out_dir_must_be_new_empty_or_a_run(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(AttnmtError, match="--out names a file"):
        check_out_dir(tmp_path / "file")
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"...")
    with pytest.raises(AttnmtError, match="not empty and not an attnmt run"):
        check_out_dir(foreign)
    assert (foreign / "cat.jpg").read_bytes() == b"..."
    check_out_dir(tmp_path / "new" / "run")
    assert (tmp_path / "new" / "run").is_dir()


def test_truncate_log_drops_replayed_and_broken_rows(tmp_path: Path) -> None:
    log = tmp_path / "train_log.jsonl"
    rows = [{"step": s, "loss": 1.0} for s in (10, 20, 30)]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 4', encoding="utf-8")
    assert truncate_log(log, 20) == 2
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [10, 20]


def test_two_writers_on_one_run_directory(tmp_path: Path) -> None:
    """The second `attnmt train` on a directory in use stops at once; the first is unharmed."""
    paths = write_tiny_corpus(tmp_path)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config(paths, max_steps=100_000, valid_every=100_000)), encoding="utf-8")
    out = tmp_path / "run"
    command = [sys.executable, "-m", "attnmt", "train", "--config", str(config), "--out", str(out), "--no-progress"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "train_log.jsonl").is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        second = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        assert f"another attnmt train (pid {first.pid}) is writing" in second.stderr
        assert "Traceback" not in second.stderr and len(second.stderr.strip().splitlines()) == 1
        assert first.poll() is None  # still training
    finally:
        first.terminate()
        first.communicate(timeout=120)
    assert first.returncode == 143  # SIGTERM saved and stopped
