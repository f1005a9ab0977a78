"""Exact resume: what ``last.pt`` holds besides the weights, and the checks before resuming.

A resumed run is the very same run: the optimizer and scheduler states, the
position inside the epoch (``TrainState``) and every random number generator
(Python's, torch's CPU one and, when CUDA is used, each CUDA device's) come back
from ``last.pt``, so dropout masks and batch order continue as if the run had
never stopped.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from attnmt.config import Config, config_from_dict, read_yaml
from attnmt.errors import ConfigError, ModelDirError


@dataclass
class TrainState:
    """Counters saved in ``last.pt`` so that a rerun resumes exactly.

    ``step`` counts optimizer updates, ``epoch`` (0-based) and ``batch_in_epoch``
    say which batch comes next; the BLEU fields and ``bad_validations`` drive
    best-checkpoint selection and early stopping; ``finished`` marks a run that
    ended for good (early stopping, max_epochs), so that a rerun does nothing;
    ``train_seconds`` is the wall time trained so far, over all resumes (time
    budgets and the cosine schedule count it).
    """

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_bleu: float = -1.0
    best_scheduled_bleu: float = -1.0
    bad_validations: int = 0
    finished: bool = False
    train_seconds: float = 0.0

    @classmethod
    def from_dict(cls, values: Any, origin: str) -> TrainState:
        """The counters of a checkpoint (one written before ``train_seconds`` existed reads it as 0)."""
        names = {f.name for f in fields(cls)}
        required = names - {"train_seconds"}
        if not isinstance(values, dict) or not required <= set(values) <= names:
            raise ModelDirError(f"{origin}: train_state must hold exactly {', '.join(sorted(names))}")
        return cls(**values)


def random_state(device: torch.device) -> dict[str, Any]:
    """Every random generator that training draws from."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_random_state(state: dict[str, Any], device: torch.device) -> None:
    """Put back what ``random_state`` saved (CUDA generators only if they were saved)."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def check_resumable(config: Config, out_dir: Path) -> None:
    """A resumed run must keep the data and model of the saved one (training may change)."""
    saved_path = out_dir / "config.yaml"
    if not saved_path.is_file():
        return
    saved = config_from_dict(read_yaml(saved_path), origin=str(saved_path))
    for section in ("data", "model"):
        old, new = getattr(saved, section), getattr(config, section)
        for key, value in vars(new).items():
            if getattr(old, key) != value:
                raise ConfigError(
                    f"{section}.{key}: {out_dir} was trained with {getattr(old, key)!r}, not {value!r}; "
                    f"use a new --out directory or the saved config"
                )
