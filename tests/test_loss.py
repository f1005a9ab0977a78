"""The in-place label-smoothed loss equals torch's cross-entropy, value and gradient."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from attnmt.loss import label_smoothed_nll


@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.3])
def test_matches_cross_entropy(epsilon: float) -> None:
    torch.manual_seed(0)
    logits = torch.randn(40, 25, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 25, (40,))
    target[:6] = 0  # padding
    expected = F.cross_entropy(logits, target, ignore_index=0, label_smoothing=epsilon, reduction="sum")
    (expected_grad,) = torch.autograd.grad(expected, logits)
    ours_input = logits.detach().clone().requires_grad_()
    ours = label_smoothed_nll(ours_input * 1.0, target, epsilon, ignore_index=0)
    (grad,) = torch.autograd.grad(ours, ours_input)
    assert float(ours.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    assert torch.allclose(grad.double(), expected_grad, atol=1e-6)


def _fp32_first(logits: torch.Tensor, target: torch.Tensor, epsilon: float) -> torch.Tensor:
    """The reference for low-precision logits: convert them all to fp32, then the fp32 loss."""
    from attnmt.loss import _LabelSmoothedNLL

    return _LabelSmoothedNLL.apply(logits.float(), target, epsilon, 0)


def _loss_and_gradient(loss_of: object, base: torch.Tensor, target: torch.Tensor, epsilon: float) -> tuple:
    leaf = base.clone().requires_grad_()
    loss = loss_of(leaf * 1.0, target, epsilon)  # type: ignore[operator]
    (loss * 0.37).backward()  # a grad_output other than 1, as the training loop's 1 / tokens
    return loss.detach(), leaf.grad


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("epsilon", [0.0, 0.1])
@pytest.mark.parametrize(
    ("rows", "vocabulary", "block"), [(300, 800, 1 << 19), (301, 257, 1000), (1, 50, 8), (64, 7, 7)]
)
def test_low_precision_logits_in_blocks_are_bit_identical_to_fp32_first(
    monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype, epsilon: float, rows: int, vocabulary: int, block: int
) -> None:
    """bf16/fp16 logits are worked on a block of rows at a time (several blocks here): the loss and the
    gradient are the very bits of converting the whole tensor to fp32 first, the gradient rounded once."""
    import attnmt.loss

    monkeypatch.setattr(attnmt.loss, "BLOCK_ELEMENTS", block)
    torch.manual_seed(rows)
    base = (torch.randn(rows, vocabulary) * 4).to(dtype)
    target = torch.randint(0, vocabulary, (rows,))
    target[: rows // 5] = 0  # padding
    ours = _loss_and_gradient(lambda x, t, e: label_smoothed_nll(x, t, e, 0), base, target, epsilon)
    reference = _loss_and_gradient(_fp32_first, base, target, epsilon)
    assert ours[1].dtype == dtype
    assert torch.equal(ours[0], reference[0]) and torch.equal(ours[1], reference[1])
    assert not ours[1][: rows // 5].any()  # padding rows get no gradient


def test_a_bf16_training_step_has_the_gradients_of_fp32_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """One autocast-bf16 step of a small model: every parameter's gradient as with the whole-tensor conversion."""
    import attnmt.loss
    from attnmt.config import ModelConfig
    from attnmt.loss import sequence_loss
    from attnmt.model import Seq2Seq

    def gradients() -> list[torch.Tensor]:
        torch.manual_seed(0)
        config = ModelConfig(rnn="lstm", embedding_size=8, hidden_size=12, dropout=0.0)
        model = Seq2Seq.from_config(config, 30, 30, 50).train()
        src, tgt = torch.randint(4, 30, (3, 6)), torch.randint(4, 30, (3, 6))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(src, torch.tensor([6, 5, 6]), tgt[:, :-1])
        assert logits.dtype == torch.bfloat16
        (sequence_loss(logits, tgt[:, 1:], 0.1) / 13.0).backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    ours = gradients()
    monkeypatch.setattr(attnmt.loss._BlockwiseNLL, "apply", lambda x, t, e, i: _fp32_first(x, t, e))
    theirs = gradients()
    assert len(ours) == len(theirs) and all(torch.equal(a, b) for a, b in zip(ours, theirs))
