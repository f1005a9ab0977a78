"""Greedy and beam search: beam 1 = greedy, batch invariance, n-best, exhaustive optimum."""

from __future__ import annotations

import itertools

import pytest
import torch

from attnmt.data import pad
from attnmt.model import Seq2Seq
from attnmt.search import beam_search, greedy_search, length_penalty, max_output_lengths
from attnmt.vocab import BOS_ID, EOS_ID
from conftest import reversal_pairs, toy_model


def _sources(count: int, seed: int) -> list[list[int]]:
    return [p[0] for p in reversal_pairs(count, 2, 9, seed=seed)]


def _run(model: Seq2Seq, sources: list[list[int]], beam: int, alpha: float = 0.0, nbest: int = 1):
    src, lengths = pad(sources)
    limits = max_output_lengths(lengths, 1.5, 5)
    if beam == 0:
        return [[h] for h in greedy_search(model, src, lengths, limits, record_attention=True)]
    return beam_search(model, src, lengths, limits, beam, alpha, nbest, record_attention=True)


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0])
def test_beam_one_is_greedy(trained_reverser: Seq2Seq, alpha: float) -> None:
    sources = _sources(40, seed=5)
    greedy = _run(trained_reverser, sources, beam=0)
    beam = _run(trained_reverser, sources, beam=1, alpha=alpha)
    assert [g[0].tokens for g in greedy] == [b[0].tokens for b in beam]


def test_beam_one_is_greedy_on_an_untrained_model() -> None:
    """Also when outputs are long and arbitrary (max-length cut-offs included)."""
    torch.manual_seed(4)
    model = toy_model(attention="concat", decoder="bahdanau").eval()
    sources = _sources(20, seed=6)
    assert [g[0].tokens for g in _run(model, sources, 0)] == [b[0].tokens for b in _run(model, sources, 1, 0.6)]


@pytest.mark.parametrize("beam", [0, 1, 4])
def test_sentence_translates_the_same_alone_or_in_a_batch(trained_reverser: Seq2Seq, beam: int) -> None:
    sources = _sources(30, seed=7)
    batched = _run(trained_reverser, sources, beam)
    for index in (0, 5, 17, 29):
        alone = _run(trained_reverser, [sources[index]], beam)
        assert alone[0][0].tokens == batched[index][0].tokens
        assert alone[0][0].score == pytest.approx(batched[index][0].score, abs=1e-4)
        assert torch.allclose(alone[0][0].attention, batched[index][0].attention, atol=1e-5)


def test_trained_reverser_reverses(trained_reverser: Seq2Seq) -> None:
    pairs = reversal_pairs(100, 2, 8, seed=11)
    hyps = _run(trained_reverser, [p[0] for p in pairs], beam=5)
    assert sum(h[0].tokens == p[1] for h, p in zip(hyps, pairs)) >= 95


def test_nbest_is_sorted_and_distinct(trained_reverser: Seq2Seq) -> None:
    for hyps in _run(trained_reverser, _sources(10, seed=8), beam=5, alpha=0.6, nbest=5):
        scores = [h.score for h in hyps]
        assert len(hyps) == 5
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(h.tokens) for h in hyps}) == 5


def test_attention_rows_cover_every_output_step(trained_reverser: Seq2Seq) -> None:
    sources = _sources(5, seed=9)
    for source, hyps in zip(sources, _run(trained_reverser, sources, beam=3)):
        attention = hyps[0].attention
        assert attention.shape == (len(hyps[0].tokens) + 1, len(source))
        assert torch.allclose(attention.sum(-1), torch.ones(attention.size(0)), atol=1e-5)


@torch.no_grad()
def _sequence_log_prob(model: Seq2Seq, source: list[int], tokens: list[int]) -> float:
    src, lengths = pad([source])
    memory, state = model.encode(src, lengths)
    total, prev = 0.0, BOS_ID
    for token in tokens:
        log_probs, state, _ = model.step(torch.tensor([prev]), state, memory)
        total += float(log_probs[0, token])
        prev = token
    return total


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_beam_search_finds_the_exhaustive_optimum(alpha: float) -> None:
    """With a beam wider than every prefix set, beam search is exact on a tiny vocabulary."""
    torch.manual_seed(5)
    vocab = 6
    from attnmt.config import config_from_dict

    config = config_from_dict({"model": {"embedding_size": 8, "hidden_size": 8, "dropout": 0.0}}).model
    model = Seq2Seq.from_config(config, vocab, vocab, 8)
    model.initialize(1.5)  # peaky, varied distributions
    model.eval()
    source = [4, 5, 4, EOS_ID]
    max_length = 4  # outputs of at most 3 words + </s>
    best_score, best_tokens = float("-inf"), None
    for length in range(max_length):
        for words in itertools.product([t for t in range(vocab) if t != EOS_ID], repeat=length):
            score = _sequence_log_prob(model, source, [*words, EOS_ID]) / length_penalty(length + 1, alpha)
            if score > best_score:
                best_score, best_tokens = score, list(words)
    src, lengths = pad([source])
    found = beam_search(model, src, lengths, torch.tensor([max_length]), beam=vocab**3, alpha=alpha)[0][0]
    assert found.tokens == best_tokens
    assert found.score == pytest.approx(best_score, abs=1e-4)
