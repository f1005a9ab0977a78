"""Checkpoint averaging: the mean of a run's last N kept checkpoints is often a better model.

Training with ``training.keep_checkpoints: N`` keeps the weights of the last N
validations in ``RUN_DIR/checkpoints/``. ``average_run`` takes the last N of
them and writes a new model directory whose ``best.pt`` holds their element-wise
mean, theta = (1/N) sum_i theta_i (Junczys-Dowmunt et al. 2016; Vaswani et al.
2017, sec. 6.1), with the run's config and tokenizer: it loads, translates and
evaluates like any model directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from attnmt.checkpoint import KEPT_DIR, check_payload, load, model_state, save_atomic
from attnmt.errors import AttnmtError, ModelDirError
from attnmt.files import copy_file
from attnmt.rundir import check_out_dir
from attnmt.tokenizer import TOKENIZER_FILES


def kept_checkpoints(run_dir: Path) -> list[Path]:
    """The kept checkpoints of a run, oldest first."""
    return sorted((run_dir / KEPT_DIR).glob("step-*.pt"))


def average_states(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Element-wise mean of floating-point tensors (summed in float64); other tensors must agree."""
    averaged = {}
    for name, first in states[0].items():
        if first.is_floating_point():
            total = torch.stack([state[name].double() for state in states]).sum(dim=0)
            averaged[name] = (total / len(states)).to(first.dtype)
        else:
            if not all(torch.equal(state[name], first) for state in states):
                raise ModelDirError(f"checkpoints disagree on the non-trainable tensor {name}")
            averaged[name] = first
    return averaged


def average_run(run_dir: Path, last: int, out_dir: Path) -> dict[str, Any]:
    """Average the last ``last`` kept checkpoints of ``run_dir`` into the model directory ``out_dir``."""
    if not run_dir.is_dir():
        raise ModelDirError(f"{run_dir}: run directory not found")
    available = kept_checkpoints(run_dir)
    if len(available) < last:
        raise AttnmtError(
            f"{run_dir}: {len(available)} kept checkpoint(s), {last} asked for; train with "
            f"training.keep_checkpoints >= {last} (checkpoints are kept at each validation)"
        )
    chosen = available[-last:]
    payloads = [load(path) for path in chosen]
    configs = [check_payload(payload, path) for payload, path in zip(payloads, chosen)]
    if any(config.model != configs[0].model for config in configs):
        raise ModelDirError(f"{run_dir}: the kept checkpoints come from different models")
    states = [model_state(payload) for payload in payloads]
    if any(state.keys() != states[0].keys() for state in states):
        raise ModelDirError(f"{run_dir}: the kept checkpoints hold different parameters")
    check_out_dir(out_dir)
    for name in ("config.yaml", *TOKENIZER_FILES):
        if (run_dir / name).is_file():
            copy_file(run_dir / name, out_dir / name)
    newest = payloads[-1]
    averaged = {
        **{key: value for key, value in newest.items() if key != "format"},
        "model": average_states(states),
        "averaged_from": [path.name for path in chosen],
    }
    save_atomic(averaged, out_dir / "best.pt")
    return {"out": str(out_dir), "averaged": [str(path) for path in chosen], "step": newest.get("step")}
