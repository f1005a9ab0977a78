"""Attention: score each encoder output against the decoder's query, softmax, weighted sum.

This is the heart of the lecture. At every decoder step the decoder's query q (its
current output, or for Bahdanau its previous state) is compared with the encoder
output h_s of every source word by a *similarity score*; a softmax over the scores
gives the *weights* (the share of each source word), and the weighted sum of the
encoder outputs is the *context* vector ("attention values")::

    scores_s  = score(q, h_s)                       (one number per source word)
    weights   = softmax(scores)   over real tokens  (Luong eq. 7, Bahdanau eq. 6)
    context   = sum_s weights_s * h_s               (Luong eq. 5,  Bahdanau eq. 5)

Worked example of the lecture: dot-product scores -0.41 ("let's") and 0.01 ("go")
give weights 0.40 and 0.60, and the context is 0.40 * h_lets + 0.60 * h_go.

Every scoring function is a small module with the same signature::

    keys = attention.project_keys(encoder_outputs)          # once per batch
    out  = attention(query, keys, values, src_mask)        # AttentionOutput

``project_keys`` does the work that depends only on the encoder (Luong's W_a h_s
for "general", Bahdanau's U_a h_s for "concat") and *returns* it: nothing is cached
on the module, so call order never matters. The query may hold one step (T = 1)
or every step of a sentence at once (teacher forcing without input feeding), in
which case all scores are one batched matrix product.

Dimension letters: B batch, T target steps, S source positions, H hidden size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class AttentionOutput:
    """What one attention call computed, kept so that it can be shown and checked.

    ``scores`` (B, T, S) are the similarity scores (plus local-p's Gaussian term,
    see ``local_attention.py``; -inf where attention may not look), ``weights``
    (B, T, S) their masked softmax, ``context`` (B, T, H) the attention values:
    ``context[b, t] == sum_s weights[b, t, s] * values[b, s]``. ``aligned`` (B, T)
    holds local attention's aligned positions p_t (None for global attention).
    """

    context: torch.Tensor
    weights: torch.Tensor
    scores: torch.Tensor
    aligned: torch.Tensor | None = None


def masked_softmax(scores: torch.Tensor, src_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax over the source axis of ``scores`` (B, T, S), ignoring padding.

    ``src_mask`` (B, S) is True on real tokens (or (B, T, S) / (B, 1, S): where each
    step may look, e.g. a local window). Masked positions get score -inf and
    therefore weight exactly 0; the weights of the others sum to 1. Returns the
    masked scores and the weights. The softmax is computed in float32 even under
    reduced-precision autocast, so that the weights sum to 1 to float precision.
    """
    mask = src_mask.unsqueeze(1) if src_mask.dim() == 2 else src_mask
    masked = scores.float().masked_fill(~mask, float("-inf"))
    return masked, torch.softmax(masked, dim=-1)


class _OneRowProduct(torch.autograd.Function):
    """torch.bmm(a, b) for one row per item, a (B, 1, K); b's gradient formed as the outer product it is.

    That gradient, a^T g, is (B, K, 1) x (B, 1, N): a batched product one term
    deep, which torch.bmm runs at a fraction of the speed of the same elementwise
    products (the same numbers: each is one multiplication). A decoder that runs
    step by step makes two per step (the keys' and the values' gradients).
    """

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(a, b)
        return torch.bmm(a, b)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:  # type: ignore[override]
        a, b = ctx.saved_tensors
        grad_a = torch.bmm(grad, b.transpose(1, 2)) if ctx.needs_input_grad[0] else None
        grad_b = a.transpose(1, 2) * grad if ctx.needs_input_grad[1] else None  # (B, K, 1) x (B, 1, N), as bmm has it
        return grad_a, grad_b


def batched_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """torch.bmm(a, b) of (B, T, K) and (B, K, N); for one step in fp32 training, via ``_OneRowProduct``."""
    if a.size(1) == 1 and torch.is_grad_enabled() and not torch.is_autocast_enabled(a.device.type):
        return _OneRowProduct.apply(a, b)
    return torch.bmm(a, b)


def _require_equal_sizes(name: str, query_size: int, key_size: int) -> None:
    if query_size != key_size:
        raise ValueError(f"{name} attention needs query size == key size, got {query_size} and {key_size}")


class Attention(nn.Module):
    """Base class: subclasses define ``score``; softmax and weighted sum are shared."""

    #: Name used in configs and in ``attnmt explain``.
    name: str = ""

    @classmethod
    def from_sizes(cls, query_size: int, key_size: int, max_source_length: int) -> Attention:
        """Build the scorer for queries of ``query_size`` and keys of ``key_size`` features."""
        raise NotImplementedError

    def project_keys(self, encoder_outputs: torch.Tensor) -> torch.Tensor:
        """Per-batch work on the encoder outputs (B, S, H); identity by default."""
        return encoder_outputs

    def score(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """Similarity of each query (B, T, H) with each key (B, S, *): (B, T, S)."""
        raise NotImplementedError

    def forward(
        self,
        query: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        src_mask: torch.Tensor,
        bias: torch.Tensor | None = None,
    ) -> AttentionOutput:
        """Scores (+ ``bias``, if given), masked softmax weights and context for queries (B, T, H)."""
        scores = self.score(query, keys)  # (B, T, S)
        if bias is not None:
            scores = scores.float() + bias
        scores, weights = masked_softmax(scores, src_mask)
        context = batched_product(weights.to(values.dtype), values)  # (B, T, H)
        return AttentionOutput(context=context, weights=weights, scores=scores)


class DotAttention(Attention):
    """Dot product (Luong eq. 8, "dot"; the lecture's worked example): score = q . h_s."""

    name = "dot"

    @classmethod
    def from_sizes(cls, query_size: int, key_size: int, max_source_length: int) -> Attention:
        _require_equal_sizes(cls.name, query_size, key_size)
        return cls()

    def score(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        return batched_product(query, keys.transpose(1, 2))  # (B, T, S)


class CosineAttention(Attention):
    """Cosine similarity times a learned scale: score = g * q . h_s / (|q| |h_s|).

    The lecture names cosine similarity as an alternative to the dot product. A
    cosine lies in [-1, 1], where a softmax can never be sharp (the best of 20
    words would get at most e^2 times the share of the worst), so like scaled
    cosine attention elsewhere we multiply by one learned scalar g (initially 10).
    """

    name = "cosine"

    @classmethod
    def from_sizes(cls, query_size: int, key_size: int, max_source_length: int) -> Attention:
        _require_equal_sizes(cls.name, query_size, key_size)
        return cls()

    def __init__(self, initial_scale: float = 10.0) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(float(initial_scale)).log())

    def project_keys(self, encoder_outputs: torch.Tensor) -> torch.Tensor:
        return F.normalize(encoder_outputs, dim=-1)

    def score(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        cosine = batched_product(F.normalize(query, dim=-1), keys.transpose(1, 2))  # (B, T, S)
        return cosine * self.log_scale.exp()


class GeneralAttention(Attention):
    """Luong's bilinear "general" score (Luong eq. 8): score = q^T W_a h_s.

    ``project_keys`` computes W_a h_s once per batch, so each step is a dot product.
    """

    name = "general"

    @classmethod
    def from_sizes(cls, query_size: int, key_size: int, max_source_length: int) -> Attention:
        return cls(query_size, key_size)

    def __init__(self, query_size: int, key_size: int) -> None:
        super().__init__()
        self.W_a = nn.Linear(key_size, query_size, bias=False)

    def project_keys(self, encoder_outputs: torch.Tensor) -> torch.Tensor:
        return self.W_a(encoder_outputs)  # (B, S, H)

    def score(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        return batched_product(query, keys.transpose(1, 2))  # (B, T, S)


class ConcatAttention(Attention):
    """Additive score, Bahdanau's alignment model (eq. 6, appendix A.1.2) = Luong's "concat".

    score = v_a^T tanh(W_a q + U_a h_s): a one-hidden-layer MLP on query and key.
    U_a h_s does not depend on the decoder step and is computed once per batch in
    ``project_keys``.
    """

    name = "concat"

    @classmethod
    def from_sizes(cls, query_size: int, key_size: int, max_source_length: int) -> Attention:
        return cls(query_size, key_size, attention_size=query_size)

    def __init__(self, query_size: int, key_size: int, attention_size: int) -> None:
        super().__init__()
        self.W_a = nn.Linear(query_size, attention_size, bias=False)
        self.U_a = nn.Linear(key_size, attention_size, bias=True)
        self.v_a = nn.Linear(attention_size, 1, bias=False)

    def project_keys(self, encoder_outputs: torch.Tensor) -> torch.Tensor:
        return self.U_a(encoder_outputs)  # (B, S, A)

    def score(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        hidden = torch.tanh(self.W_a(query).unsqueeze(2) + keys.unsqueeze(1))  # (B, T, S, A)
        return self.v_a(hidden).squeeze(-1)  # (B, T, S)


class LocationAttention(Attention):
    """Luong's location-based score (Luong eq. 8, "location"): scores = W_a q.

    The weights depend on the decoder query alone, one learned score per source
    *position* (up to ``max_source_length``), not on the source words themselves.
    Positions beyond ``max_source_length`` (longer than any training sentence)
    have no learned score: they get score -inf, so weight 0.
    """

    name = "location"

    @classmethod
    def from_sizes(cls, query_size: int, key_size: int, max_source_length: int) -> Attention:
        return cls(query_size, max_source_length)

    def __init__(self, query_size: int, max_source_length: int) -> None:
        super().__init__()
        self.W_a = nn.Linear(query_size, max_source_length)

    def score(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        source_length, known = keys.size(1), self.W_a.out_features
        scores = self.W_a(query)[..., :source_length]  # (B, T, min(S, known))
        if source_length > known:
            unknown = scores.new_full((*scores.shape[:-1], source_length - known), float("-inf"))
            scores = torch.cat([scores, unknown], dim=-1)  # (B, T, S)
        return scores


#: Scoring functions by config name (``model.attention``); "none" means no attention.
ATTENTION: dict[str, type[Attention]] = {
    "dot": DotAttention,
    "cosine": CosineAttention,
    "general": GeneralAttention,
    "concat": ConcatAttention,
    "location": LocationAttention,
}


def build_attention(name: str, query_size: int, key_size: int, max_source_length: int) -> Attention | None:
    """The scoring function ``name`` (a key of ``ATTENTION``), or None for "none"."""
    if name == "none":
        return None
    if name not in ATTENTION:
        raise ValueError(f"unknown attention {name!r}; choose one of {', '.join([*ATTENTION, 'none'])}")
    return ATTENTION[name].from_sizes(query_size, key_size, max_source_length)
