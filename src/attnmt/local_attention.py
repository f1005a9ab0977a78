"""Where attention may look: every source word (global) or a window around an aligned position (local).

Luong et al. 2015, sec. 3.2. Global attention weighs all source words at every
step. *Local* attention first picks an aligned source position p_t for target
step t, then attends only to the window [p_t - D, p_t + D] (D =
``model.local_window``):

- ``local-m`` (monotonic): p_t = t, assuming source and target advance together.
  We cap p_t at the last source position, so the window never leaves the sentence.
- ``local-p`` (predictive): p_t = (S - 1) * sigmoid(v_p^T tanh(W_p h_t)) (eq. 9),
  learned from the decoder state, with S the sentence's own length (positions
  count from 0, so p_t lies on the sentence), and the weights are favoured near
  p_t by a Gaussian of sigma = D / 2 (eq. 10).

Every span returns a ``Span``: the mask of positions step t may attend to (inside
the window *and* real tokens, so padding never counts), an optional ``bias`` added
to the scores, and the aligned positions. local-p's bias is the log of the
Gaussian, -(s - p_t)^2 / (2 sigma^2); adding it to the scores *inside* the softmax
gives weights proportional to softmax(scores) x Gaussian, **renormalised** to sum
to 1 over the window. Luong et al. multiply without renormalising; we renormalise
so that the context stays a weighted average of encoder outputs and
``weights == softmax(scores + bias)`` holds exactly (``attnmt explain`` shows the
scores, the Gaussian and the weights).

Dimension letters: B batch, T target steps, S source positions, H hidden size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Span:
    """Where each target step may attend: ``mask`` (B, T or 1, S), ``bias`` (B, T, S), ``aligned`` (B, T)."""

    mask: torch.Tensor
    bias: torch.Tensor | None = None
    aligned: torch.Tensor | None = None


def window_mask(aligned: torch.Tensor, src_mask: torch.Tensor, half_width: int) -> torch.Tensor:
    """True where |s - p_t| <= D and s is a real token: (B, T, S) from p_t (B, T) and the mask (B, S)."""
    positions = torch.arange(src_mask.size(1), device=src_mask.device, dtype=aligned.dtype)
    inside = (positions.view(1, 1, -1) - aligned.unsqueeze(-1)).abs() <= half_width
    return inside & src_mask.unsqueeze(1)


def _source_lengths(src_mask: torch.Tensor) -> torch.Tensor:
    """Real tokens per sentence as (B, 1) floats."""
    return src_mask.sum(dim=1, keepdim=True).float()


class GlobalSpan(nn.Module):
    """Global attention: every real source token, at every step."""

    name = "global"

    def forward(self, query: torch.Tensor, src_mask: torch.Tensor, first_step: int) -> Span:
        return Span(src_mask.unsqueeze(1))


class LocalMonotonic(nn.Module):
    """local-m: the window is centred on p_t = t (capped at the sentence's last position)."""

    name = "local-m"

    def __init__(self, half_width: int) -> None:
        super().__init__()
        self.half_width = half_width

    def forward(self, query: torch.Tensor, src_mask: torch.Tensor, first_step: int) -> Span:
        """``query`` (B, T, H) holds steps first_step .. first_step + T - 1."""
        steps = torch.arange(first_step, first_step + query.size(1), device=query.device, dtype=torch.float32)
        aligned = torch.minimum(steps.unsqueeze(0), _source_lengths(src_mask) - 1)  # p_t: (B, T)
        return Span(window_mask(aligned, src_mask, self.half_width), None, aligned)


class LocalPredictive(nn.Module):
    """local-p: p_t predicted from the decoder state (eq. 9), Gaussian preference around it (eq. 10)."""

    name = "local-p"

    def __init__(self, query_size: int, half_width: int) -> None:
        super().__init__()
        self.half_width = half_width
        self.W_p = nn.Linear(query_size, query_size, bias=False)
        self.v_p = nn.Linear(query_size, 1, bias=False)

    def forward(self, query: torch.Tensor, src_mask: torch.Tensor, first_step: int) -> Span:
        """p_t = (S - 1) sigmoid(v_p^T tanh(W_p h_t)); bias = -(s - p_t)^2 / (2 (D/2)^2)."""
        share = torch.sigmoid(self.v_p(torch.tanh(self.W_p(query))).squeeze(-1).float())  # (B, T)
        aligned = (_source_lengths(src_mask) - 1) * share  # p_t: (B, T)
        positions = torch.arange(src_mask.size(1), device=src_mask.device, dtype=torch.float32)
        sigma = self.half_width / 2
        bias = -((positions.view(1, 1, -1) - aligned.unsqueeze(-1)) ** 2) / (2 * sigma**2)  # (B, T, S)
        return Span(window_mask(aligned, src_mask, self.half_width), bias, aligned)


#: Attention spans by config name (``model.attention_span``).
SPANS: dict[str, type[nn.Module]] = {"global": GlobalSpan, "local-m": LocalMonotonic, "local-p": LocalPredictive}


def build_span(name: str, query_size: int, half_width: int) -> nn.Module:
    """The span ``name`` (a key of ``SPANS``) for queries of ``query_size`` features."""
    if name == "global":
        return GlobalSpan()
    if name == "local-m":
        return LocalMonotonic(half_width)
    if name == "local-p":
        return LocalPredictive(query_size, half_width)
    raise ValueError(f"unknown attention span {name!r}; choose one of {', '.join(SPANS)}")


def window_bounds(aligned: float, half_width: int, length: int) -> tuple[int, int]:
    """First and last source position inside [p_t - D, p_t + D] for a sentence of ``length`` tokens."""
    import math

    return max(0, math.ceil(aligned - half_width)), min(length - 1, math.floor(aligned + half_width))
