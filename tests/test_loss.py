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
