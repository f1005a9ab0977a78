"""Decoding workers: the same results in the same order with any number of forked processes."""

from __future__ import annotations

import os

import pytest
import torch

from attnmt.errors import InputError
from attnmt.search import DecodingOptions, search
from attnmt.workers import check_workers, ordered_map
from conftest import reversal_pairs


def _square_and_pid(value: int) -> tuple[int, int]:
    return value * value, os.getpid()


def test_ordered_map_keeps_the_order_and_uses_other_processes() -> None:
    results = ordered_map(_square_and_pid, list(range(40)), workers=2)
    assert [r[0] for r in results] == [v * v for v in range(40)]
    assert os.getpid() not in {r[1] for r in results}  # the work ran in the forked workers
    assert ordered_map(_square_and_pid, [3], workers=2) == [(9, os.getpid())]  # one item: no fork
    assert ordered_map(_square_and_pid, [], workers=2) == []


def test_threads_are_shared_out_and_restored() -> None:
    before = torch.get_num_threads()
    threads = ordered_map(lambda _: torch.get_num_threads(), [0, 1, 2, 3], workers=2)
    assert threads == [max(1, before // 2)] * 4
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
