"""Label-smoothed cross-entropy over the whole vocabulary, computed once for all steps.

With smoothing epsilon and vocabulary size V, the target distribution puts
1 - epsilon on the reference word and epsilon / V on every word (Szegedy et al.
2016), so for logits z of one position with reference y::

    loss = logsumexp(z) - (1 - epsilon) * z_y - (epsilon / V) * sum_v z_v
    dloss/dz = softmax(z) - (1 - epsilon) * onehot(y) - epsilon / V

``label_smoothed_nll`` computes exactly what
``F.cross_entropy(..., label_smoothing=epsilon, reduction="sum")`` computes, but
the softmax and then the gradient are formed in place in the logits' own memory:
the (N, V) logits are the largest tensor of a training step, and on a CPU every
extra copy of them costs more time in memory traffic than the arithmetic.
Measured with benchmarks/loss_speed.py (whole training steps of the quickstart
model, the two losses interleaved in one process): 2,535 vs 2,249 target tokens/s.
"""

from __future__ import annotations

from typing import Any

import torch

from attnmt.vocab import PAD_ID


class _LabelSmoothedNLL(torch.autograd.Function):
    """Forward turns the logits into softmax probabilities in place; backward reuses them."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, logits: torch.Tensor, target: torch.Tensor, epsilon: float, ignore_index: int
    ) -> torch.Tensor:
        valid = target != ignore_index  # (N,)
        safe_target = target.masked_fill(~valid, 0)
        reference = logits.gather(1, safe_target.unsqueeze(1)).squeeze(1)  # z_y: (N,)
        total = logits.sum(dim=-1) if epsilon > 0 else None  # sum_v z_v: (N,)
        maximum = logits.max(dim=-1, keepdim=True).values  # (N, 1), for a stable exp
        probs = logits.sub_(maximum).exp_()  # in place: exp(z - max)
        normalizer = probs.sum(dim=-1, keepdim=True)  # (N, 1)
        probs.div_(normalizer)  # softmax(z), still in the logits' memory
        log_normalizer = (maximum + normalizer.log()).squeeze(1)  # logsumexp(z): (N,)
        per_token = log_normalizer - (1.0 - epsilon) * reference
        if total is not None:
            per_token = per_token - (epsilon / logits.size(1)) * total
        ctx.save_for_backward(probs, safe_target, valid)
        ctx.epsilon = epsilon
        return (per_token * valid).sum()

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        probs, target, valid = ctx.saved_tensors
        epsilon = ctx.epsilon
        grad = probs  # formed in place: the probabilities are not needed afterwards
        if epsilon > 0:
            grad.sub_(epsilon / grad.size(1))
        grad.scatter_add_(
            1, target.unsqueeze(1), torch.full((target.size(0), 1), epsilon - 1.0, dtype=grad.dtype, device=grad.device)
        )
        grad.mul_((valid.to(grad.dtype) * grad_output).unsqueeze(1))
        return grad, None, None, None


def label_smoothed_nll(logits: torch.Tensor, target: torch.Tensor, epsilon: float, ignore_index: int) -> torch.Tensor:
    """Summed label-smoothed cross-entropy of ``logits`` (N, V) against ``target`` (N,).

    Positions whose target is ``ignore_index`` (padding) count for nothing. The
    logits must not be used after this call when gradients flow (their memory
    holds the softmax, then the gradient, afterwards).
    """
    return _LabelSmoothedNLL.apply(logits.float(), target, epsilon, ignore_index)


def sequence_loss(logits: torch.Tensor, tgt_out: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Summed label-smoothed cross-entropy over all real target tokens: logits (B, T, V) vs (B, T)."""
    return label_smoothed_nll(logits.reshape(-1, logits.size(-1)), tgt_out.reshape(-1), label_smoothing, PAD_ID)
