"""Learning-rate schedules: plateau decay, warmup then 1/sqrt decay, or constant.

- ``plateau``: multiply the rate by ``decay_factor`` when the validation loss has
  not improved for ``patience`` validations (Luong et al. 2015 halve it after a
  fixed epoch; decaying on the validation loss needs no epoch count).
- ``warmup_decay``: linear warmup over ``warmup_steps``, then lr * sqrt(warmup / step)
  (Vaswani et al. 2017, eq. 3, with the peak at ``lr``).
- ``cosine``: lr follows half a cosine from ``lr`` down to ``min_lr`` over the
  training budget: progress = the larger of step / ``max_steps`` and training
  time / ``max_minutes`` (Loshchilov & Hutter 2017, without restarts). The rate
  decays within the budget, whatever the budget is, so a short run ends with
  the small steps that settle the weights. With ``decay_start`` = s > 0 the rate
  stays at ``lr`` for the first share s of the budget and the half cosine runs
  over the rest ("constant, then cool down": Zhai et al. 2022; Hägele et al.
  2024), for budgets too short to spend most updates at a falling rate.
- ``constant``.

The plateau scheduler steps on validations (``step_on_validation``), the others on
every optimizer step (``step_on_update``, which is told the budget's progress).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from attnmt.config import TrainingConfig


class BudgetCosine:
    """Cosine decay over the training budget's progress in [0, 1] (see the module docstring)."""

    def __init__(self, optimizer: torch.optim.Optimizer, min_lr: float, decay_start: float = 0.0) -> None:
        self.optimizer, self.min_lr, self.decay_start = optimizer, min_lr, decay_start
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.progress = 0.0

    def set_progress(self, progress: float) -> None:
        """lr = min_lr + (lr - min_lr) * (1 + cos(pi * d)) / 2, d = the decay's share done."""
        self.progress = min(1.0, max(0.0, progress))
        done = max(0.0, self.progress - self.decay_start) / (1.0 - self.decay_start)
        factor = 0.5 * (1.0 + math.cos(math.pi * done))
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = self.min_lr + (base - self.min_lr) * factor

    def state_dict(self) -> dict[str, Any]:
        return {
            "base_lrs": self.base_lrs,
            "progress": self.progress,
            "min_lr": self.min_lr,
            "decay_start": self.decay_start,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base_lrs, self.min_lr = list(state["base_lrs"]), float(state["min_lr"])
        self.decay_start = float(state.get("decay_start", 0.0))
        self.set_progress(float(state["progress"]))


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainingConfig) -> Any:
    """The scheduler ``config.scheduler`` names."""
    if config.scheduler == "cosine":
        return BudgetCosine(optimizer, config.min_lr, config.decay_start)
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


def step_on_update(scheduler: Any, progress: float) -> None:
    """Advance a per-step schedule after an optimizer step (plateau waits for validations).

    ``progress`` is the share of the training budget used so far (cosine follows it).
    """
    if isinstance(scheduler, BudgetCosine):
        scheduler.set_progress(progress)
    elif not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step()


def step_on_validation(scheduler: Any, valid_loss: float) -> None:
    """Let a plateau schedule see a validation loss (the others ignore it)."""
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(valid_loss)
