"""Training on several processes (torchrun, gloo on the CPU): same trajectory, no hang, one writer, resume."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from attnmt.data import shard
from conftest import tiny_config, write_tiny_corpus

TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def _config(tmp_path: Path, **training: object) -> Path:
    paths = write_tiny_corpus(tmp_path)
    raw = tiny_config(paths, **{"valid_every": 1000, "log_every": 1, "max_steps": 20, **training})
    raw["model"]["dropout"] = 0.0  # the same random numbers in any number of processes
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def _run(command: list[str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _train(config: Path, out: Path, processes: int, *extra: str) -> subprocess.CompletedProcess[str]:
    args = ["-m", "attnmt", "train", "--config", str(config), "--out", str(out), "--no-progress", *extra]
    if processes == 1:
        return _run([sys.executable, *args])
    return _run([*TORCHRUN, "--standalone", "--nproc-per-node", str(processes), *args])


def _losses(out: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "valid_loss" not in r]
    assert len(steps) == len(set(steps)), "a log row was written twice: more than one process writes"
    return {r["step"]: r["loss"] for r in rows if "valid_loss" not in r}


def test_shard_deals_a_batch_like_cards() -> None:
    assert shard([1, 2, 3, 4, 5], 2) == [[1, 3, 5], [2, 4]]
    assert shard([7], 3) == [[7], [], []]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, float]]:
    directory = tmp_path_factory.mktemp("one")
    config = _config(directory)
    _train(config, directory / "run", 1)
    return config, _losses(directory / "run")


def test_two_processes_follow_one_process(one_process: tuple[Path, dict[int, float]], tmp_path: Path) -> None:
    """Same global batch: the same loss at step 1 (float tolerance), the same curve for 20 steps."""
    config, single = one_process
    result = _train(config, tmp_path / "two", 2)
    double = _losses(tmp_path / "two")
    assert double[1] == pytest.approx(single[1], rel=1e-5)
    assert all(double[s] == pytest.approx(single[s], rel=2e-3) for s in single)
    assert result.stderr.count("[attnmt] stopped:") == 1  # only rank 0 speaks
    assert json.loads(result.stdout.strip().splitlines()[-1])["steps"] == 20
    one = torch.load(config.parent / "run" / "last.pt", weights_only=True)["model"]
    two = torch.load(tmp_path / "two" / "last.pt", weights_only=True)["model"]
    assert all(torch.allclose(one[k], two[k], atol=1e-4) for k in one)


def test_gradient_accumulation_follows_one_big_batch(
    one_process: tuple[Path, dict[int, float]], tmp_path: Path
) -> None:
    config, single = one_process
    _train(config, tmp_path / "accumulated", 1, "--set", "training.accumulate_steps=2")
    accumulated = _losses(tmp_path / "accumulated")
    assert accumulated[1] == pytest.approx(single[1], rel=1e-5)
    assert all(accumulated[s] == pytest.approx(single[s], rel=2e-3) for s in single)


def test_uneven_shards_do_not_hang(tmp_path: Path) -> None:
    """Batches of one sentence for two processes: one share is empty at every step."""
    config = _config(tmp_path, batch_tokens=12, max_steps=15)
    result = _train(config, tmp_path / "uneven", 2, "--set", "training.accumulate_steps=2")
    assert json.loads(result.stdout.strip().splitlines()[-1])["steps"] == 15


def test_resume_with_another_number_of_processes(one_process: tuple[Path, dict[int, float]], tmp_path: Path) -> None:
    """2 processes to step 10, then 1 to 16, then 3 to 20: each continues where the last stopped."""
    config = _config(tmp_path, max_steps=10)
    out = tmp_path / "run"
    _train(config, out, 2)
    second = _train(config, out, 1, "--set", "training.max_steps=16")
    assert f"resuming {out} at step 10" in second.stderr
    third = _train(config, out, 3, "--set", "training.max_steps=20")
    assert f"resuming {out} at step 16" in third.stderr
    assert sorted(_losses(out)) == list(range(1, 21))
    state = torch.load(out / "last.pt", weights_only=True)["train_state"]
    straight = torch.load(one_process[0].parent / "run" / "last.pt", weights_only=True)["train_state"]
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (
        20,
        straight["epoch"],
        straight["batch_in_epoch"],
    )
    losses, single = _losses(out), one_process[1]
    assert all(losses[s] == pytest.approx(single[s], rel=2e-3) for s in single)  # the same data in the same order


def test_two_nodes_on_loopback(tmp_path: Path) -> None:
    config = _config(tmp_path, max_steps=6)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    common = [
        "--nnodes",
        "2",
        "--nproc-per-node",
        "1",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"127.0.0.1:{port}",
    ]
    train_args = ["-m", "attnmt", "train", "--config", str(config), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [
        subprocess.Popen(
            [*TORCHRUN, *common, "--node-rank", str(rank), *train_args, "--out", str(tmp_path / f"node{rank}")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=240) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    written = [tmp_path / f"node{rank}" / "last.pt" for rank in (0, 1)]
    assert written[0].is_file() != written[1].is_file()  # exactly one node (the one holding rank 0) writes
    run = written[0].parent if written[0].is_file() else written[1].parent
    other = written[1].parent if written[0].is_file() else written[0].parent
    assert not other.exists()  # the other node did not even create its --out
    assert "2 processes x 1 threads" in (outputs[0][1] + outputs[1][1])
    assert sorted(_losses(run)) == list(range(1, 7))


def test_nproc_shortcut_and_a_failing_process(tmp_path: Path) -> None:
    """`attnmt train --nproc 2`; then a worker killed mid-run ends the run with one clear line, not a hang."""
    config = _config(tmp_path, max_steps=8)
    command = [sys.executable, "-m", "attnmt", "train", "--config", str(config), "--no-progress", "--nproc", "2"]
    result = _run([*command, "--out", str(tmp_path / "short")])
    assert json.loads(result.stdout.strip().splitlines()[-1])["steps"] == 8

    out = tmp_path / "long"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runner = subprocess.Popen(
        [*command, "--out", str(out), "--set", "training.max_steps=100000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 120
    while not ((out / "train_log.jsonl").is_file() and len(_losses(out)) >= 5):
        assert runner.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    workers = subprocess.run(["pgrep", "-P", str(runner.pid)], capture_output=True, text=True).stdout.split()
    victim = max(int(pid) for pid in workers)  # a training process started by the elastic agent
    os.kill(victim, signal.SIGKILL)
    _, stderr = runner.communicate(timeout=120)
    assert runner.returncode == 1
    lines = [line for line in stderr.splitlines() if not line.startswith("[attnmt]")]
    assert len(lines) == 1 and "was killed by signal 9; the others stopped" in lines[0], stderr[-2000:]
    assert "Traceback" not in stderr


def test_a_training_process_of_several_ends_through_leave(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Under torchrun, `attnmt train` ends with os._exit (distributed.leave), never the interpreter's shutdown,
    during which gloo's worker threads abort the process; its status is the one the command would return."""
    import attnmt.distributed
    from attnmt.cli import main

    class Left(Exception):
        pass

    def leave(status: int) -> None:
        raise Left(status)

    monkeypatch.setattr(attnmt.distributed, "leave", leave)
    for name, value in {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(Left) as left:
        main(["train", "--config", str(tmp_path / "missing.yaml")])  # a user error: one line, status 2
    assert left.value.args == (2,)
    monkeypatch.delenv("MASTER_ADDR")  # not under torchrun: a normal return
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2


def test_the_failure_named_is_the_cause_not_a_peer_that_lost_contact() -> None:
    """A killed process and a peer that exited with 1 because it lost contact, seen in the same poll."""
    from types import SimpleNamespace

    from attnmt.distributed import _cause

    def failure(*endings: tuple[int, float]) -> SimpleNamespace:
        failures = {rank: SimpleNamespace(exitcode=code, timestamp=when) for rank, (code, when) in enumerate(endings)}
        return SimpleNamespace(failures=failures)

    assert _cause(failure((1, 5.0), (-9, 5.0)))[0] == 1
    assert _cause(failure((-15, 6.0), (2, 5.0), (-9, 7.0)))[0] == 1  # the first real cause
    assert _cause(failure((-15, 5.0), (1, 5.0)))[0] == 1  # a process that failed with 1 on its own
    assert _cause(failure((-15, 5.0), (-15, 4.0)))[0] == 1  # else the first
