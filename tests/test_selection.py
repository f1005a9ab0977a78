"""Choosing the next words block by block finds exactly what ranking every candidate finds."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnmt.selection import BLOCK, best_continuations


def _ranking_every_candidate(hypothesis_scores: torch.Tensor, log_probs: torch.Tensor, n: int):
    """Reference: ``topk`` over all K * V candidates of each sentence."""
    sentences, beam = hypothesis_scores.shape
    vocab = log_probs.size(1)
    candidates = (hypothesis_scores.view(-1, 1) + log_probs).view(sentences, beam * vocab)
    scores, ids = candidates.topk(n, dim=1)
    return candidates, scores, ids // vocab, ids % vocab


@pytest.mark.parametrize("beam,n", [(1, 1), (1, 2), (5, 10), (12, 24)])
@pytest.mark.parametrize("vocab", [BLOCK * 84, BLOCK * 3 + 7, 40])
def test_same_continuations_as_ranking_every_candidate(beam: int, n: int, vocab: int) -> None:
    torch.manual_seed(beam * vocab)
    sentences = 9
    if beam * vocab < n:
        pytest.skip("fewer candidates than kept")
    log_probs = torch.log_softmax(4 * torch.randn(sentences * beam, vocab), dim=-1)
    hypothesis_scores = -10 * torch.rand(sentences, beam)
    hypothesis_scores[0, 1:] = float("-inf")  # a first step: one live hypothesis
    _, scores, hypothesis, word = _ranking_every_candidate(hypothesis_scores, log_probs, n)
    found = best_continuations(hypothesis_scores, log_probs, n)
    assert torch.equal(found[0], scores)  # bit for bit
    assert torch.equal(found[1], hypothesis)
    assert torch.equal(found[2], word)


@settings(max_examples=60, deadline=None)
@given(
    beam=st.integers(1, 4),
    blocks=st.integers(1, 6),
    levels=st.integers(1, 4),
    seed=st.integers(0, 10_000),
)
def test_ties_and_minus_infinity_keep_the_best_scores(beam: int, blocks: int, levels: int, seed: int) -> None:
    """With many equal scores (and words that may not be chosen at all) the n best *scores* are the same."""
    generator = torch.Generator().manual_seed(seed)
    vocab, sentences = blocks * BLOCK, 3
    values = torch.tensor([float("-inf"), -3.0, -1.0, -0.5])[:levels] if levels > 1 else torch.tensor([-2.0])
    log_probs = values[torch.randint(0, len(values), (sentences * beam, vocab), generator=generator)]
    hypothesis_scores = torch.tensor([0.0, -1.0, -0.5, float("-inf")])[
        torch.randint(0, 4, (sentences, beam), generator=generator)
    ]
    n = min(2 * beam, beam * vocab)
    candidates, scores, _, _ = _ranking_every_candidate(hypothesis_scores, log_probs, n)
    found_scores, hypothesis, word = best_continuations(hypothesis_scores, log_probs, n)
    assert torch.equal(found_scores, scores)
    chosen = candidates.gather(1, hypothesis * vocab + word)  # the candidates returned really score that
    assert torch.equal(chosen, found_scores)
    for row in range(sentences):  # and no candidate is returned twice
        pairs = list(zip(hypothesis[row].tolist(), word[row].tolist()))
        assert len(set(pairs)) == len(pairs)
