"""Local attention (Luong et al. 2015, sec. 3.2): windows, the Gaussian of local-p, and the search invariants."""

from __future__ import annotations

import math

import pytest
import torch

from attnmt.attention import build_attention
from attnmt.data import pad
from attnmt.local_attention import SPANS, LocalMonotonic, LocalPredictive, build_span, window_bounds
from attnmt.search import beam_search, greedy_search, max_output_lengths
from conftest import reversal_pairs, toy_model

H, D = 6, 2
MASK = torch.tensor([[1] * 9, [1] * 5 + [0] * 4], dtype=torch.bool)  # lengths 9 and 5


@torch.no_grad()
def _attend(span_name: str, scorer: str, first_step: int = 0, steps: int = 7):
    torch.manual_seed(0)
    span = build_span(span_name, H, D)
    attention = build_attention(scorer, H, H, max_source_length=20)
    query, values = torch.randn(2, steps, H), torch.randn(2, 9, H)
    result = span(query, MASK, first_step)
    out = attention(query, attention.project_keys(values), values, result.mask, result.bias)
    return span, result, out, query, values, attention


@pytest.mark.parametrize("scorer", ["dot", "general", "concat", "location"])
@pytest.mark.parametrize("span_name", ["local-m", "local-p"])
def test_weights_vanish_outside_the_window_and_sum_to_one(span_name: str, scorer: str) -> None:
    _, span, out, *_ = _attend(span_name, scorer)
    positions = torch.arange(9).view(1, 1, -1).float()
    outside = (positions - span.aligned.unsqueeze(-1)).abs() > D
    assert torch.all(out.weights[outside] == 0)
    assert torch.all(out.weights[1, :, 5:] == 0)  # padding of the shorter sentence
    assert torch.allclose(out.weights.sum(-1), torch.ones(2, 7), atol=1e-6)
    assert torch.allclose(out.context, torch.bmm(out.weights, _attend(span_name, scorer)[4]), atol=1e-5)


def test_local_m_aligns_with_the_target_step_and_stays_on_the_sentence() -> None:
    span = LocalMonotonic(D)
    aligned = span(torch.zeros(2, 7, H), MASK, first_step=3).aligned
    assert aligned[0].tolist() == [3, 4, 5, 6, 7, 8, 8]  # capped at the last of 9 positions
    assert aligned[1].tolist() == [3, 4, 4, 4, 4, 4, 4]  # the 5-token sentence


@pytest.mark.parametrize("scorer", ["dot", "general"])
def test_local_p_is_softmax_in_the_window_times_the_gaussian_renormalised(scorer: str) -> None:
    """Eq. 9 for p_t, eq. 10 for the weights (renormalised over the window, as the docstring says)."""
    span_module, span, out, query, values, attention = _attend("local-p", scorer)
    assert isinstance(span_module, LocalPredictive)
    with torch.no_grad():
        share = torch.sigmoid(span_module.v_p(torch.tanh(span_module.W_p(query))).squeeze(-1))
        lengths = MASK.sum(1, keepdim=True).float()
        assert torch.allclose(span.aligned, (lengths - 1) * share)  # eq. 9, positions from 0
        raw = attention.score(query, attention.project_keys(values))
    sigma = D / 2
    for b in range(2):
        for t in range(7):
            p = float(span.aligned[b, t])
            inside = [s for s in range(9) if abs(s - p) <= D and MASK[b, s]]
            align = torch.softmax(raw[b, t, inside], dim=0)  # softmax over the window
            gauss = torch.tensor([math.exp(-((s - p) ** 2) / (2 * sigma**2)) for s in inside])
            expected = align * gauss / (align * gauss).sum()
            assert torch.allclose(out.weights[b, t, inside], expected, atol=1e-5)
            assert 0 <= p <= int(MASK[b].sum()) - 1


def test_window_bounds() -> None:
    assert window_bounds(3.4, 2, 9) == (2, 5)
    assert window_bounds(0.0, 10, 4) == (0, 3)


@pytest.mark.parametrize("span_name", ["local-m", "local-p"])
@pytest.mark.parametrize("decoder,input_feeding", [("luong", False), ("luong", True), ("bahdanau", False)])
def test_local_search_invariants(span_name: str, decoder: str, input_feeding: bool) -> None:
    """Beam 1 = greedy, and a sentence translates the same alone or in a batch of longer ones."""
    torch.manual_seed(1)
    model = toy_model(
        decoder=decoder, input_feeding=input_feeding, attention_span=span_name, local_window=2, bidirectional=True
    ).eval()
    model.initialize(0.5)
    sources = [p[0] for p in reversal_pairs(12, 2, 9, seed=3)]
    src, lengths = pad(sources)
    limits = max_output_lengths(lengths, 1.5, 5)
    greedy = greedy_search(model, src, lengths, limits, record_attention=True)
    beam1 = beam_search(model, src, lengths, limits, beam=1)
    assert [g.tokens for g in greedy] == [b[0].tokens for b in beam1]
    beam3 = beam_search(model, src, lengths, limits, beam=3)
    for index in (0, 4, 11):
        alone_src, alone_lengths = pad([sources[index]])
        alone_limit = max_output_lengths(alone_lengths, 1.5, 5)
        alone = greedy_search(model, alone_src, alone_lengths, alone_limit, record_attention=True)[0]
        assert alone.tokens == greedy[index].tokens
        assert torch.allclose(alone.attention, greedy[index].attention, atol=1e-5)
        assert beam_search(model, alone_src, alone_lengths, alone_limit, beam=3)[0][0].tokens == beam3[index][0].tokens


def test_spans_are_the_config_choices() -> None:
    import typing

    from attnmt.config import ModelConfig

    assert sorted(typing.get_args(typing.get_type_hints(ModelConfig)["attention_span"])) == sorted(SPANS)
