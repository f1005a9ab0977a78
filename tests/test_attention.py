"""Attention scoring functions against their formulas, masks and the lecture's example."""

from __future__ import annotations

import math

import pytest
import torch

from attnmt import attention as attention_module
from attnmt.attention import (
    ATTENTION,
    ConcatAttention,
    CosineAttention,
    DotAttention,
    GeneralAttention,
    LocationAttention,
    batched_product,
    build_attention,
    masked_softmax,
)
from attnmt.data import pad
from conftest import toy_model

H = 6


def test_lecture_worked_example() -> None:
    """Scores -0.41 ("let's") and 0.01 ("go") give weights 0.40 and 0.60 (StatQuest, 11:52)."""
    query = torch.tensor([[[1.0, 0.0]]])  # the decoder's output for <EOS>: (B=1, T=1, H=2)
    h_lets, h_go = torch.tensor([-0.41, 0.8]), torch.tensor([0.01, -0.5])
    encoder_outputs = torch.stack([h_lets, h_go]).unsqueeze(0)  # (1, S=2, 2)
    mask = torch.tensor([[True, True]])
    out = DotAttention()(query, encoder_outputs, encoder_outputs, mask)
    assert out.scores[0, 0].tolist() == pytest.approx([-0.41, 0.01])
    assert out.weights[0, 0].tolist() == pytest.approx([0.40, 0.60], abs=0.005)
    w_lets, w_go = out.weights[0, 0].tolist()
    assert out.context[0, 0].tolist() == pytest.approx((w_lets * h_lets + w_go * h_go).tolist())
    assert out.context[0, 0].tolist() == pytest.approx((0.3965 * h_lets + 0.6035 * h_go).tolist(), abs=1e-3)


def _by_hand(attention: torch.nn.Module, q: torch.Tensor, h: torch.Tensor) -> float:
    """One score written out from the papers' formulas, with plain vector maths."""
    if isinstance(attention, DotAttention):
        return float(q @ h)
    if isinstance(attention, CosineAttention):
        return float(attention.log_scale.detach().exp() * (q @ h) / (q.norm() * h.norm()))
    if isinstance(attention, GeneralAttention):
        return float(q @ attention.W_a.weight.detach() @ h)
    if isinstance(attention, ConcatAttention):
        W_a, U_a, b, v_a = (
            p.detach()
            for p in (attention.W_a.weight, attention.U_a.weight, attention.U_a.bias, attention.v_a.weight[0])
        )
        return float(v_a @ torch.tanh(W_a @ q + U_a @ h + b))
    raise AssertionError(type(attention))


CONTENT_BASED = ["dot", "cosine", "general", "concat"]


@pytest.mark.parametrize("name", CONTENT_BASED)
def test_scores_match_formula(name: str) -> None:
    torch.manual_seed(0)
    attention = build_attention(name, H, H, max_source_length=10)
    query, values = torch.randn(2, 3, H), torch.randn(2, 4, H)
    mask = torch.ones(2, 4, dtype=torch.bool)
    with torch.no_grad():
        out = attention(query, attention.project_keys(values), values, mask)
    for b in range(2):
        for t in range(3):
            for s in range(4):
                assert float(out.scores[b, t, s]) == pytest.approx(
                    _by_hand(attention, query[b, t], values[b, s]), abs=1e-5
                )


def test_location_scores_depend_on_query_only() -> None:
    torch.manual_seed(0)
    attention = LocationAttention(H, max_source_length=10)
    query = torch.randn(1, 2, H)
    a, b = torch.randn(1, 4, H), torch.randn(1, 4, H)
    mask = torch.ones(1, 4, dtype=torch.bool)
    out_a, out_b = attention(query, a, a, mask), attention(query, b, b, mask)
    expected = (query[0, 0] @ attention.W_a.weight.T + attention.W_a.bias)[:4]
    assert out_a.scores[0, 0].tolist() == pytest.approx(expected.tolist(), abs=1e-5)
    assert torch.equal(out_a.weights, out_b.weights)


def test_location_gives_no_weight_beyond_the_positions_it_learned() -> None:
    """A source longer than any training sentence translates: the extra positions get weight 0."""
    attention = LocationAttention(H, max_source_length=3)
    values = torch.randn(2, 5, H)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], dtype=torch.bool)
    out = attention(torch.randn(2, 1, H), values, values, mask)
    assert torch.all(out.weights[0, :, 3:] == 0) and torch.all(out.weights[1, :, 2:] == 0)
    assert torch.allclose(out.weights.sum(-1), torch.ones(2, 1))


@pytest.mark.parametrize("name", sorted(ATTENTION))
def test_weights_sum_to_one_and_padding_gets_zero(name: str) -> None:
    torch.manual_seed(1)
    attention = build_attention(name, H, H, max_source_length=10)
    values = torch.randn(3, 5, H)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    out = attention(torch.randn(3, 2, H), attention.project_keys(values), values, mask)
    assert torch.allclose(out.weights.sum(-1), torch.ones(3, 2), atol=1e-6)
    assert torch.all(out.weights.masked_select(~mask.unsqueeze(1).expand(-1, 2, -1)) == 0)
    assert torch.allclose(out.weights[2, :, 0], torch.ones(2))
    expected = torch.einsum("bts,bsh->bth", out.weights, values)
    assert torch.allclose(out.context, expected, atol=1e-6)


@pytest.mark.parametrize("name", sorted(ATTENTION))
def test_padding_values_do_not_leak(name: str) -> None:
    """Changing what sits in padded positions changes nothing."""
    torch.manual_seed(2)
    attention = build_attention(name, H, H, max_source_length=10)
    values = torch.randn(1, 5, H)
    mask = torch.tensor([[1, 1, 1, 0, 0]], dtype=torch.bool)
    noisy = values.clone()
    noisy[:, 3:] = 100.0
    query = torch.randn(1, 2, H)
    a = attention(query, attention.project_keys(values), values, mask)
    b = attention(query, attention.project_keys(noisy), noisy, mask)
    assert torch.allclose(a.context, b.context, atol=1e-6)
    short = attention(query, attention.project_keys(values[:, :3]), values[:, :3], mask[:, :3])
    assert torch.allclose(a.context, short.context, atol=1e-6)


@pytest.mark.parametrize("name", sorted(ATTENTION))
def test_call_order_does_not_matter(name: str) -> None:
    """Nothing is cached on the module: two memories used in any order give the same results."""
    torch.manual_seed(3)
    attention = build_attention(name, H, H, max_source_length=10)
    mask = torch.ones(1, 4, dtype=torch.bool)
    first, second, query = torch.randn(1, 4, H), torch.randn(1, 4, H), torch.randn(1, 1, H)
    keys_first, keys_second = attention.project_keys(first), attention.project_keys(second)
    a = attention(query, keys_first, first, mask).context
    attention(query, keys_second, second, mask)
    assert torch.equal(a, attention(query, keys_first, first, mask).context)


def test_masked_softmax_matches_softmax_over_real_tokens() -> None:
    scores = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]])
    mask = torch.tensor([[True, True, False, True]])
    _, weights = masked_softmax(scores, mask)
    exp = [math.exp(1), math.exp(2), 0.0, math.exp(4)]
    assert weights[0, 0].tolist() == pytest.approx([e / sum(exp) for e in exp])


def test_unknown_attention_names_the_choices() -> None:
    with pytest.raises(ValueError, match="dot"):
        build_attention("nope", H, H, 10)
    assert build_attention("none", H, H, 10) is None


@pytest.mark.parametrize("keys_transposed", [True, False])
@pytest.mark.parametrize("sizes", [(57, 512, 37), (3, 5, 7), (1, 1, 1)])
def test_one_row_products_give_bmm_gradients_to_the_bit(sizes: tuple[int, int, int], keys_transposed: bool) -> None:
    """The outer-product gradient of ``batched_product`` is torch.bmm's, bit for bit."""
    torch.manual_seed(0)
    rows, inner, columns = sizes
    a = torch.randn(rows, 1, inner, requires_grad=True)
    stored = torch.randn(rows, columns, inner) if keys_transposed else torch.randn(rows, inner, columns)
    stored.requires_grad_()
    b = stored.transpose(1, 2) if keys_transposed else stored
    grad = torch.randn(rows, 1, columns)
    expected = torch.autograd.grad(torch.bmm(a, b), [a, stored], grad)
    found = torch.autograd.grad(batched_product(a, b), [a, stored], grad)
    assert torch.equal(batched_product(a, b), torch.bmm(a, b))
    assert all(torch.equal(x, y) for x, y in zip(found, expected))


@pytest.mark.parametrize("name", ["dot", "general", "cosine"])
def test_a_step_by_step_decoder_trains_with_the_same_bits(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(3)
    model = toy_model(attention=name, input_feeding=True)
    src, lengths = pad([[4, 5, 6, 2], [7, 8, 2]])
    tgt_in = torch.tensor([[1, 9, 10, 11], [1, 12, 13, 0]])

    def gradients() -> list[torch.Tensor]:
        model.zero_grad()
        model(src, lengths, tgt_in).logsumexp(-1).sum().backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    found = gradients()
    monkeypatch.setattr(attention_module, "batched_product", torch.bmm)
    assert all(torch.equal(x, y) for x, y in zip(found, gradients()))
