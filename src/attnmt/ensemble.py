"""Ensembles: several models translate together, averaging their next-word probabilities.

At every decoding step each model reads the same previous words and proposes a
distribution over the (shared) target vocabulary; the ensemble's distribution is
their mean, p(y) = (1/M) sum_m p_m(y), as in Luong et al. 2015 (sec. 4.1) and
Sutskever et al. 2014. ``Ensemble`` is a *step model* (``search.StepModel``), so
greedy and beam search run it unchanged. Each model keeps its own memory and
state; the attention reported is the first model's.

Dimension letters: B batch, S source positions, V target vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from attnmt.decoder import DecoderOutput
from attnmt.model import Seq2Seq


@dataclass
class EnsembleParts:
    """One memory or decoder state per model, reordered together."""

    parts: list[Any]

    def reorder(self, indices: torch.Tensor) -> EnsembleParts:
        return EnsembleParts([part.reorder(indices) for part in self.parts])

    def for_beams(self, beams: int) -> EnsembleParts:
        return EnsembleParts([part.for_beams(beams) for part in self.parts])


class Ensemble:
    """Models with one target vocabulary, decoding as one (probabilities averaged each step)."""

    def __init__(self, models: list[Seq2Seq]) -> None:
        sizes = {model.output_layer.out_features for model in models}
        if len(sizes) != 1:
            raise ValueError(f"ensemble members must share the target vocabulary, got sizes {sorted(sizes)}")
        self.models = models

    def to(self, device: torch.device) -> Ensemble:
        self.models = [model.to(device) for model in self.models]
        return self

    def eval(self) -> Ensemble:
        self.models = [model.eval() for model in self.models]
        return self

    @property
    def attention_name(self) -> str:
        return self.models[0].attention_name

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> tuple[EnsembleParts, EnsembleParts]:
        encoded = [model.encode(src, src_lengths) for model in self.models]
        return EnsembleParts([m for m, _ in encoded]), EnsembleParts([s for _, s in encoded])

    def step(
        self, prev_tokens: torch.Tensor, state: EnsembleParts, memory: EnsembleParts
    ) -> tuple[torch.Tensor, EnsembleParts, DecoderOutput]:
        """log (1/M sum_m p_m(y | ...)) over the vocabulary (B, V); details of the first model."""
        results = [model.step(prev_tokens, s, m) for model, s, m in zip(self.models, state.parts, memory.parts)]
        stacked = torch.stack([log_probs for log_probs, _, _ in results])  # (M, B, V)
        log_probs = torch.logsumexp(stacked, dim=0) - math.log(len(self.models))
        return log_probs, EnsembleParts([s for _, s, _ in results]), results[0][2]
