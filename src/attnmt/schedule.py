"""Learning-rate schedules: plateau decay, warmup then 1/sqrt decay, or constant.

- ``plateau``: multiply the rate by ``decay_factor`` when the validation loss has
  not improved for ``patience`` validations (Luong et al. 2015 halve it after a
  fixed epoch; decaying on the validation loss needs no epoch count).
- ``warmup_decay``: linear warmup over ``warmup_steps``, then lr * sqrt(warmup / step)
  (Vaswani et al. 2017, eq. 3, with the peak at ``lr``).
- ``constant``.

The plateau scheduler steps on validations (``step_on_validation``), the others on
every optimizer step (``step_on_update``).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from attnmt.config import TrainingConfig


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainingConfig) -> Any:
    """The torch scheduler ``config.scheduler`` names."""
    if config.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=config.decay_factor, patience=config.patience, min_lr=config.min_lr
        )
    if config.scheduler == "warmup_decay":
        warmup = max(1, config.warmup_steps)
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min((step + 1) / warmup, math.sqrt(warmup / max(step + 1, warmup)))
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def step_on_update(scheduler: Any) -> None:
    """Advance a per-step schedule after an optimizer step (plateau waits for validations)."""
    if not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step()


def step_on_validation(scheduler: Any, valid_loss: float) -> None:
    """Let a plateau schedule see a validation loss (the others ignore it)."""
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(valid_loss)
