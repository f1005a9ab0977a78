"""Dropout (Srivastava et al. 2014): torch's own masks, drawn faster where torch draws them one by one.

In training, dropout zeroes each unit with probability p and scales the kept
ones by 1 / (1 - p); at test time it does nothing. ``nn.Dropout`` draws its
mask on a CPU with ``bernoulli_``, which uses MKL's vectorised generator only
on Intel processors. Elsewhere (AMD, ARM) torch's ``bernoulli_`` draws one
float64 u per unit from its generator and keeps the unit if u < 1 - p, one
element at a time: on a 2-core AMD EPYC that took 6 % of a bf16 training
update. ``torch.rand`` in float64 draws exactly the same numbers, about twice
as fast (benchmarks/dropout_speed.py).

So ``Dropout`` keeps ``nn.Dropout``'s results bit for bit and draws them the
faster way only where the two agree: a check on a private generator, once per
process (``same_draws``), that both give the same mask and leave the generator
in the same state. Where they differ (MKL's path on Intel processors) and on
other devices (CUDA's fused kernel) it is ``nn.Dropout`` itself.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

#: Size of the check's mask and the seed of its private generator.
_CHECK_UNITS, _CHECK_SEED = 4099, 20141217


@lru_cache(maxsize=1)
def same_draws() -> bool:
    """Whether float64 ``torch.rand`` < 1 - p gives this torch's CPU ``bernoulli_(1 - p)`` mask, bit for bit.

    Both masks come from a private generator with the same seed, so the global
    one is untouched; the generators must also end in the same state, so that
    every later draw of training stays the same.
    """
    keep = 0.7
    drawn = torch.Generator().manual_seed(_CHECK_SEED)
    bernoulli = torch.empty(_CHECK_UNITS).bernoulli_(keep, generator=drawn)
    uniform = torch.Generator().manual_seed(_CHECK_SEED)
    below = torch.rand(_CHECK_UNITS, dtype=torch.float64, generator=uniform) < keep
    return torch.equal(bernoulli.bool(), below) and torch.equal(drawn.get_state(), uniform.get_state())


class Dropout(nn.Dropout):
    """``nn.Dropout``, with its CPU mask drawn by ``torch.rand`` where that gives the same mask (``same_draws``)."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """inputs * mask / (1 - p) in training, with mask_i = [u_i < 1 - p]; the inputs unchanged otherwise."""
        if not (self.training and 0 < self.p < 1 and not self.inplace and inputs.device.type == "cpu"):
            return super().forward(inputs)
        if not same_draws():
            return super().forward(inputs)
        keep = 1.0 - self.p
        mask = torch.rand(inputs.shape, dtype=torch.float64).lt_(keep).to(inputs.dtype)
        return inputs * mask.div_(keep)  # as nn.Dropout: the mask is scaled in the inputs' dtype
