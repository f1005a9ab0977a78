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

bf16 logits (autocast on a CPU) are not copied to fp32 as a whole either: the
same fp32 arithmetic runs on blocks of rows that stay in the cache, and the
gradient is written over the bf16 logits, rounded once as a whole-tensor
conversion would round it. Forward keeps only each row's maximum and
normalizer; backward recomputes exp(z - max) block by block. The loss and the
gradient are bit-identical to converting the logits to fp32 first (tested).
Measured with benchmarks/loss_blocks_speed.py (the same batches both ways, 2
cores with native bf16): 1.05x per update on the matched GRU model (8k target
vocabulary, 242 vs 254 ms), parity on the smaller quickstart updates.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from attnmt.vocab import PAD_ID

#: Elements per block of low-precision logits: 4 MB of fp32 work space, which stays in the cache. On the
#: matched model, bf16, 2 cores: 2^17-2^21 all gave 1.03-1.05x per update (benchmarks/loss_blocks_speed.py).
BLOCK_ELEMENTS = 1 << 20


def _exp_shifted_(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """In place, z := exp(z - max z) per row; returns the rows' max and sum of exp, both (n, 1)."""
    maximum = z.max(dim=-1, keepdim=True).values  # for a stable exp
    z.sub_(maximum).exp_()
    return maximum, z.sum(dim=-1, keepdim=True)


def _gradient_(
    exp_shifted: torch.Tensor, normalizer: torch.Tensor, target: torch.Tensor, epsilon: float, scale: torch.Tensor
) -> torch.Tensor:
    """In place: dloss/dz = softmax(z) - (1 - epsilon) * onehot(y) - epsilon / V, each row times ``scale``."""
    grad = exp_shifted.div_(normalizer)  # softmax(z)
    if epsilon > 0:
        grad.sub_(epsilon / grad.size(1))
    minus = torch.full((target.size(0), 1), epsilon - 1.0, dtype=grad.dtype, device=grad.device)
    grad.scatter_add_(1, target.unsqueeze(1), minus)
    return grad.mul_(scale.unsqueeze(1))


def _per_token(
    maximum: torch.Tensor,
    normalizer: torch.Tensor,
    reference: torch.Tensor,
    total: torch.Tensor | None,
    epsilon: float,
    vocabulary: int,
) -> torch.Tensor:
    """loss = logsumexp(z) - (1 - epsilon) * z_y - (epsilon / V) * sum_v z_v, one value per row.

    ``total`` is sum_v z_v (None without smoothing); ``maximum`` and ``normalizer``
    are max z and sum_v exp(z - max z), so logsumexp(z) = max + log(normalizer).
    """
    per_token = (maximum + normalizer.log()).squeeze(1) - (1.0 - epsilon) * reference
    return per_token if total is None else per_token - (epsilon / vocabulary) * total


class _LabelSmoothedNLL(torch.autograd.Function):
    """fp32 logits: forward forms exp(z - max) in their memory; backward turns it into the gradient."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, logits: torch.Tensor, target: torch.Tensor, epsilon: float, ignore_index: int
    ) -> torch.Tensor:
        valid = target != ignore_index  # (N,)
        safe_target = target.masked_fill(~valid, 0)
        reference = logits.gather(1, safe_target.unsqueeze(1)).squeeze(1)  # z_y: (N,)
        total = logits.sum(dim=-1) if epsilon > 0 else None  # sum_v z_v: (N,)
        maximum, normalizer = _exp_shifted_(logits)
        ctx.save_for_backward(logits, normalizer, safe_target, valid)
        ctx.epsilon = epsilon
        return (_per_token(maximum, normalizer, reference, total, epsilon, logits.size(1)) * valid).sum()

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        exp_shifted, normalizer, target, valid = ctx.saved_tensors
        scale = valid.to(exp_shifted.dtype) * grad_output
        return _gradient_(exp_shifted, normalizer, target, ctx.epsilon, scale), None, None, None


class _BlockwiseNLL(torch.autograd.Function):
    """bf16/fp16 logits on a CPU: the fp32 arithmetic above, a block of rows at a time."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, logits: torch.Tensor, target: torch.Tensor, epsilon: float, ignore_index: int
    ) -> torch.Tensor:
        valid = target != ignore_index
        safe_target = target.masked_fill(~valid, 0)
        reference = logits.gather(1, safe_target.unsqueeze(1)).squeeze(1).float()  # exact
        maximum = logits.new_empty((logits.size(0), 1), dtype=torch.float32)
        normalizer = torch.empty_like(maximum)
        total = logits.new_empty(logits.size(0), dtype=torch.float32) if epsilon > 0 else None
        for block, z in _fp32_blocks(logits):
            if total is not None:
                total[block] = z.sum(dim=-1)
            maximum[block], normalizer[block] = _exp_shifted_(z)
        ctx.save_for_backward(logits, maximum, normalizer, safe_target, valid)
        ctx.epsilon = epsilon
        return (_per_token(maximum, normalizer, reference, total, epsilon, logits.size(1)) * valid).sum()

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        logits, maximum, normalizer, target, valid = ctx.saved_tensors
        scale = valid.to(torch.float32) * grad_output
        for block, z in _fp32_blocks(logits):
            z.sub_(maximum[block]).exp_()  # as in forward, so bit for bit the same
            logits[block] = _gradient_(z, normalizer[block], target[block], ctx.epsilon, scale[block])
        return logits, None, None, None  # the gradient, rounded once, over the logits' own memory


def _fp32_blocks(logits: torch.Tensor) -> Iterator[tuple[slice, torch.Tensor]]:
    """Each block of rows of ``logits`` (BLOCK_ELEMENTS at most, whole rows) and its fp32 copy, in one reused buffer."""
    rows, size = logits.size(0), max(1, BLOCK_ELEMENTS // logits.size(1))
    work = logits.new_empty((min(rows, size), logits.size(1)), dtype=torch.float32)
    for start in range(0, rows, size):
        block = slice(start, start + size)
        yield block, work[: logits[block].size(0)].copy_(logits[block])


def label_smoothed_nll(logits: torch.Tensor, target: torch.Tensor, epsilon: float, ignore_index: int) -> torch.Tensor:
    """Summed label-smoothed cross-entropy of ``logits`` (N, V) against ``target`` (N,).

    Positions whose target is ``ignore_index`` (padding) count for nothing. The
    logits must not be used after this call when gradients flow (their memory
    holds the softmax, then the gradient, afterwards).
    """
    if logits.device.type == "cpu" and logits.dtype in (torch.bfloat16, torch.float16):
        return _BlockwiseNLL.apply(logits, target, epsilon, ignore_index)
    return _LabelSmoothedNLL.apply(logits.float(), target, epsilon, ignore_index)


def sequence_loss(logits: torch.Tensor, tgt_out: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Summed label-smoothed cross-entropy over all real target tokens: logits (B, T, V) vs (B, T)."""
    return label_smoothed_nll(logits.reshape(-1, logits.size(-1)), tgt_out.reshape(-1), label_smoothing, PAD_ID)
