"""Greedy and beam search: beam 1 = greedy, batch invariance, n-best, exhaustive optimum."""

from __future__ import annotations

import itertools
from contextlib import AbstractContextManager

import pytest
import torch

from attnmt.data import pad
from attnmt.decoder import EncoderMemory
from attnmt.model import Seq2Seq
from attnmt.products import PackedWeights, onednn_available, onednn_products
from attnmt.search import _Beams, beam_search, greedy_search, length_penalty, max_output_lengths
from attnmt.vocab import BOS_ID, EOS_ID
from conftest import DEVICES, reversal_pairs, toy_model


def _sources(count: int, seed: int) -> list[list[int]]:
    return [p[0] for p in reversal_pairs(count, 2, 9, seed=seed)]


def _run(model: Seq2Seq, sources: list[list[int]], beam: int, alpha: float = 0.0, nbest: int = 1, device: str = "cpu"):
    src, lengths = pad(sources)
    src, lengths = src.to(device), lengths.to(device)
    limits = max_output_lengths(lengths, 1.5, 5)
    model = model.to(device)
    if beam == 0:
        return [[h] for h in greedy_search(model, src, lengths, limits, alpha, record_attention=True)]
    return beam_search(model, src, lengths, limits, beam, alpha, nbest, record_attention=True)


#: Where the fp32 products run: torch's default library, or oneDNN (products.py), with weights packed as search does.
PRODUCTS = ["torch", *(["onednn", "onednn packed"] if onednn_available() else [])]


def _products(products: str, model: Seq2Seq) -> AbstractContextManager[None]:
    packed = PackedWeights([model]) if products == "onednn packed" else None
    return onednn_products(products != "torch", packed)


@pytest.mark.parametrize("products", PRODUCTS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0])
def test_beam_one_is_greedy(trained_reverser: Seq2Seq, alpha: float, device: str, products: str) -> None:
    sources = _sources(40, seed=5)
    with _products(products, trained_reverser):
        greedy = _run(trained_reverser, sources, beam=0, alpha=alpha, device=device)
        beam = _run(trained_reverser, sources, beam=1, alpha=alpha, device=device)
    assert [g[0].tokens for g in greedy] == [b[0].tokens for b in beam]
    assert [g[0].score for g in greedy] == pytest.approx([b[0].score for b in beam], abs=1e-4)


def test_beam_one_is_greedy_on_an_untrained_model() -> None:
    """Also when outputs are long and arbitrary (max-length cut-offs included)."""
    torch.manual_seed(4)
    model = toy_model(attention="concat", decoder="bahdanau").eval()
    sources = _sources(20, seed=6)
    assert [g[0].tokens for g in _run(model, sources, 0)] == [b[0].tokens for b in _run(model, sources, 1, 0.6)]


@pytest.mark.parametrize("products", PRODUCTS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("beam", [0, 1, 4])
def test_sentence_translates_the_same_alone_or_in_a_batch(
    trained_reverser: Seq2Seq, beam: int, device: str, products: str
) -> None:
    sources = _sources(30, seed=7)
    with _products(products, trained_reverser):
        batched = _run(trained_reverser, sources, beam, device=device)
    for index in (0, 5, 17, 29):
        with _products(products, trained_reverser):
            alone = _run(trained_reverser, [sources[index]], beam, device=device)
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


def _only_when_k_finished(beams: _Beams) -> torch.Tensor:
    """The stopping rule without the bound: a sentence is done when it has K finished hypotheses."""
    return torch.tensor([len(beams.finished[s]) >= beams.beam for s in beams.alive])


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.4])
@pytest.mark.parametrize("nbest", [1, 3])
@pytest.mark.parametrize("trained", [True, False])
def test_stopping_early_keeps_the_nbest(
    trained_reverser: Seq2Seq, monkeypatch: pytest.MonkeyPatch, alpha: float, nbest: int, trained: bool
) -> None:
    """Stopping once no live hypothesis can enter the n best changes no translation, score or attention."""
    torch.manual_seed(4)
    model = trained_reverser if trained else toy_model(attention="general", decoder="luong").eval()
    sources = _sources(40, seed=12)
    early = _run(model, sources, beam=4, alpha=alpha, nbest=nbest)
    monkeypatch.setattr(_Beams, "_done", _only_when_k_finished)
    late = _run(model, sources, beam=4, alpha=alpha, nbest=nbest)
    for found, reference in zip(early, late):
        assert [h.tokens for h in found] == [h.tokens for h in reference]
        assert [h.score for h in found] == [h.score for h in reference]
        assert all(torch.equal(a.attention, b.attention) for a, b in zip(found, reference))


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


def test_greedy_score_is_the_length_penalised_log_probability(trained_reverser: Seq2Seq) -> None:
    source = _sources(1, seed=12)[0]
    for alpha in (0.0, 1.0):
        found = _run(trained_reverser, [source], beam=0, alpha=alpha)[0][0]
        log_prob = _sequence_log_prob(trained_reverser, source, [*found.tokens, EOS_ID])
        assert found.score == pytest.approx(log_prob / length_penalty(len(found.tokens) + 1, alpha), abs=1e-4)


@pytest.mark.parametrize(
    "changes,field",
    [
        ({"beam": 0}, "beam"),
        ({"beam": 10_000}, "beam"),
        ({"beam": 2, "nbest": 3}, "nbest"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_length_ratio": -1.0}, "max_length_ratio"),
        ({"max_length_extra": 10**7}, "max_length_extra"),
        ({"length_penalty": float("nan")}, "length_penalty"),
    ],
)
def test_decoding_options_name_the_bad_option(changes: dict, field: str) -> None:
    from dataclasses import replace

    from attnmt.errors import InputError
    from attnmt.search import DecodingOptions

    with pytest.raises(InputError) as raised:
        replace(DecodingOptions(), **changes).check()
    assert raised.value.field == field


def test_search_defaults_are_the_configs() -> None:
    """The API's defaults (``DecodingOptions()``) are those of a config without a decoding section."""
    from attnmt.config import DecodingConfig
    from attnmt.search import DecodingOptions

    assert DecodingOptions() == DecodingOptions.from_config(DecodingConfig())
    assert DecodingOptions().length_penalty == 1.0  # tuned on val2016 (BENCHMARKS.md), not GNMT's 0.6


def test_search_keeps_input_order_and_batches_by_length(trained_reverser: Seq2Seq) -> None:
    from attnmt.search import DecodingOptions, search

    sources = _sources(25, seed=13)
    options = DecodingOptions(beam=3, nbest=2, batch_size=4, max_length_ratio=1.5, max_length_extra=5)
    found = search(trained_reverser, sources, options, torch.device("cpu"))
    one_batch = beam_search(
        trained_reverser, *pad(sources), max_output_lengths(pad(sources)[1], 1.5, 5), 3, options.length_penalty, 2
    )
    assert [[h.tokens for h in hyps] for hyps in found] == [[h.tokens for h in hyps] for hyps in one_batch]
    assert all(len(hyps) == 2 for hyps in found)


def test_output_length_is_capped() -> None:
    from attnmt.limits import MAX_OUTPUT_TOKENS

    assert int(max_output_lengths(torch.tensor([10_000]), 10.0, 500)[0]) == MAX_OUTPUT_TOKENS


def _advance_over_the_whole_vocabulary(beams: _Beams, log_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference for one step: the 2K best of all K * V candidates, then the K best not ending in </s>."""
    beam, vocab = beams.beam, log_probs.size(1)
    candidates = (beams.scores.view(-1, 1) + log_probs).view(-1, beam * vocab)
    top_scores, top_ids = candidates.topk(2 * beam, dim=1)
    token = top_ids % vocab
    order = ((token == EOS_ID).long() * 2 * beam + torch.arange(2 * beam)).argsort(dim=1)[:, :beam]
    return top_scores.gather(1, order), token.gather(1, order)


@pytest.mark.parametrize("beam,vocab", [(1, 7), (3, 5), (4, 50), (5, 5376)])
def test_a_step_keeps_the_k_best_continuations_of_all_k_times_v(beam: int, vocab: int) -> None:
    """One beam step keeps exactly the scores and words that ranking all K * V candidates keeps."""
    torch.manual_seed(beam)
    sentences = 6
    beams = _Beams(torch.full((sentences,), 5), torch.full((sentences,), 20), beam, 0.6, False, 5)
    for t in range(4):
        log_probs = torch.log_softmax(3 * torch.randn(sentences * beam, vocab), dim=-1)
        expected_scores, expected_tokens = _advance_over_the_whole_vocabulary(beams, log_probs)
        beams.advance(log_probs, None, t)
        assert torch.equal(beams.scores, expected_scores)
        assert torch.equal(beams.prev.view(sentences, beam), expected_tokens)


def test_shared_memory_translates_like_copies_for_every_beam(
    trained_reverser: Seq2Seq, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beam search over memory shared by the K hypotheses finds what K copies of it find."""
    sources = _sources(30, seed=21)
    shared = _run(trained_reverser, sources, beam=4, alpha=0.6, nbest=2)

    def copies(memory: EncoderMemory, beams: int) -> EncoderMemory:
        return memory.reorder(torch.arange(memory.src_mask.size(0)).repeat_interleave(beams))

    monkeypatch.setattr(EncoderMemory, "for_beams", copies)
    copied = _run(trained_reverser, sources, beam=4, alpha=0.6, nbest=2)
    for found, reference in zip(shared, copied):
        assert [h.tokens for h in found] == [h.tokens for h in reference]
        assert [h.score for h in found] == pytest.approx([h.score for h in reference], abs=1e-4)
