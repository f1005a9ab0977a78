"""Decoding workers: the same results in the same order with any number of forked processes."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from attnmt.errors import AttnmtError, InputError, WorkerLost
from attnmt.search import DecodingOptions, search
from attnmt.workers import ForkedWorkers, check_workers, ordered_map, resolve_workers
from conftest import reversal_pairs


def _square_and_pid(value: int) -> tuple[int, int]:
    return value * value, os.getpid()


def test_ordered_map_keeps_the_order_and_uses_other_processes() -> None:
    results = ordered_map(_square_and_pid, list(range(40)), workers=2)
    assert [r[0] for r in results] == [v * v for v in range(40)]
    assert os.getpid() not in {r[1] for r in results}  # the work ran in the forked workers
    assert ordered_map(_square_and_pid, [3], workers=2) == [(9, os.getpid())]  # one item: no fork
    assert ordered_map(_square_and_pid, [], workers=2) == []


def _threads(_: object) -> int:
    return torch.get_num_threads()


def test_each_worker_runs_one_thread_even_after_a_team_of_threads() -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        torch.randn(512, 512) @ torch.randn(512, 512)  # the parent's OpenMP team has run
        a, b = torch.randn(64, 256), torch.randn(256, 1000)
        # a worker of several threads would hang here (GNU OpenMP after fork); one thread each must not
        products = ordered_map(lambda _: (torch.get_num_threads(), float((a @ b).sum())), list(range(6)), workers=2)
        assert [p[0] for p in products] == [1] * 6
        assert products[0][1] == pytest.approx(float((a @ b).sum()), rel=1e-5)
    finally:
        torch.set_num_threads(before)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("beam", [1, 3])
def test_search_gives_the_same_hypotheses_with_two_workers(trained_reverser: torch.nn.Module, beam: int) -> None:
    sources = [p[0] for p in reversal_pairs(30, 2, 9, seed=8)]
    options = DecodingOptions(beam=beam, nbest=min(beam, 2), batch_size=4)
    alone = search(trained_reverser, sources, options, torch.device("cpu"), record_attention=True)
    shared = search(trained_reverser, sources, options, torch.device("cpu"), record_attention=True, workers=2)
    for one, two in zip(alone, shared, strict=True):
        assert [h.tokens for h in one] == [h.tokens for h in two]
        assert [h.score for h in one] == pytest.approx([h.score for h in two], abs=1e-5)
        assert torch.allclose(one[0].attention, two[0].attention, atol=1e-6)


def test_bad_worker_counts_name_the_option() -> None:
    with pytest.raises(InputError, match="workers: must be at least 1"):
        check_workers(0, torch.device("cpu"))
    with pytest.raises(InputError, match="workers: .*CPU"):
        check_workers(2, torch.device("meta"))
    check_workers(1, torch.device("meta"))


def test_auto_is_one_worker_per_thread_where_forking_works() -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        assert resolve_workers("auto", torch.device("cpu")) == 3
        assert resolve_workers("auto", torch.device("meta")) == 1  # no fork off the CPU: one process
        assert resolve_workers(2, torch.device("cpu")) == 2
    finally:
        torch.set_num_threads(before)
    for wrong in ("many", "2", 2.0, True):
        with pytest.raises(InputError, match="workers: expected a positive integer or 'auto'"):
            resolve_workers(wrong, torch.device("cpu"))  # type: ignore[arg-type]


def test_auto_workers_give_the_same_hypotheses(trained_reverser: torch.nn.Module) -> None:
    sources = [p[0] for p in reversal_pairs(30, 2, 9, seed=9)]
    options = DecodingOptions(beam=2, batch_size=4)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)  # auto: two forked workers of one thread each
        assert torch.get_num_threads() == 2
        shared = search(trained_reverser, sources, options, torch.device("cpu"), workers="auto")
    finally:
        torch.set_num_threads(before)
    alone = search(trained_reverser, sources, options, torch.device("cpu"))
    assert [h[0].tokens for h in shared] == [h[0].tokens for h in alone]


def _die_on_three(value: int) -> int:
    if value == 3:
        os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's out-of-memory killer would
    return value


def _fail_on_three(value: int) -> int:
    if value == 3:
        raise ValueError("three")
    return value


def test_a_killed_worker_is_one_clear_error_not_a_hang() -> None:
    with pytest.raises(AttnmtError, match="worker process ended abruptly.*--workers 1"):
        ordered_map(_die_on_three, list(range(8)), workers=2)
    assert multiprocessing.active_children() == []


def test_an_error_in_a_worker_reaches_the_caller_and_stops_the_workers() -> None:
    with pytest.raises(ValueError, match="three"):
        ordered_map(_fail_on_three, list(range(8)), workers=2)
    assert multiprocessing.active_children() == []


def test_ctrl_c_stops_the_workers_at_once_without_their_tracebacks() -> None:
    script = (
        "import os, time\nfrom attnmt.workers import ordered_map\n"  # one write(2) per line: no interleaving
        "ordered_map(lambda s: (os.write(1, b'working\\n'), time.sleep(s)), [30] * 4, workers=2)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's Ctrl-C reaches
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert process.stdout is not None and process.stdout.readline() == "working\n"  # a worker is busy
    started = time.monotonic()
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=20)
    assert time.monotonic() - started < 10
    assert process.returncode != 0 and "KeyboardInterrupt" in stderr
    assert "Process" not in stderr  # no worker printed a traceback of its own


class _Target:
    """What the forked workers call: state set up before the fork is there in the children."""

    def __init__(self) -> None:
        self.loaded = "weights"

    def describe(self, value: int) -> tuple[str, int, int, int]:
        return self.loaded, value * value, os.getpid(), torch.get_num_threads()


def test_forked_workers_call_the_target_in_other_processes_of_one_thread() -> None:
    workers = ForkedWorkers(_Target(), 2)
    try:
        assert len(workers.processes) == 2  # all forked at once, before any thread of the caller starts
        answers = [workers.call("describe", value) for value in range(6)]
        assert [a[:2] for a in answers] == [("weights", v * v) for v in range(6)]
        assert {a[2] for a in answers} <= {p.pid for p in workers.processes} and {a[3] for a in answers} == {1}
        os.kill(next(iter(workers.processes)).pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        with pytest.raises(WorkerLost, match="ended abruptly"):
            while time.monotonic() < deadline:  # the pool's manager thread notices the death within moments
                workers.call("describe", 1)
                time.sleep(0.05)
    finally:
        workers.close()
    assert multiprocessing.active_children() == []


def _state(pid: int) -> str:
    """The process's state letter (Z: a zombie), or "" once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return ""


def test_workers_end_when_their_parent_is_killed_outright() -> None:
    script = (
        "import os, sys, time\nfrom attnmt.workers import ForkedWorkers\n"
        "workers = ForkedWorkers(object(), 2)\n"
        "print(*[p.pid for p in workers.processes], flush=True)\ntime.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    children = [int(pid) for pid in parent.stdout.readline().split()]
    assert len(children) == 2 and all(_state(pid) not in ("", "Z") for pid in children)
    parent.kill()  # SIGKILL: no handler of the parent runs
    parent.wait(timeout=30)
    deadline = time.monotonic() + 20
    while any(_state(pid) not in ("", "Z") for pid in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_state(pid) in ("", "Z") for pid in children)
