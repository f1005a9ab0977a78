"""Checkpoints and model directories: atomic writes, safe loading, nothing executed.

A checkpoint holds only tensors and plain Python values (dicts, lists, numbers,
strings), so it loads under torch's safe unpickler (``weights_only=True``): a
crafted file cannot run code. It is written to a temporary file in the same
directory, flushed to disk, then renamed over the old one: an interrupted save
never leaves a broken ``best.pt`` or ``last.pt``.

A *model directory* (what ``attnmt train`` writes) holds ``config.yaml``, the
sentencepiece model(s) and the checkpoints; ``load_model_dir`` rebuilds the
model from a checkpoint's config and weights.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from attnmt.config import Config, config_from_dict
from attnmt.errors import ConfigError, ModelDirError
from attnmt.model import Seq2Seq
from attnmt.resume import TrainState, random_state
from attnmt.tokenizer import Tokenizer

FORMAT = "attnmt-1"

#: Parameter names of older checkpoints and their current names.
RENAMED_PARAMETERS = {"generator.": "output_layer."}


def save_atomic(payload: dict[str, Any], path: Path) -> None:
    """Write ``payload`` to ``path`` via a temporary file and an atomic rename."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save({"format": FORMAT, **payload}, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load(path: Path) -> dict[str, Any]:
    """Load an attnmt checkpoint safely; a missing or foreign file is a ModelDirError."""
    if not path.is_file():
        raise ModelDirError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt files
        raise ModelDirError(f"{path}: not a readable checkpoint ({type(error).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelDirError(f"{path}: not an attnmt checkpoint")
    return payload


def model_state(payload: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model weights of a checkpoint, with parameters of older versions renamed."""
    state = {}
    for name, value in payload["model"].items():
        for old, new in RENAMED_PARAMETERS.items():
            if name.startswith(old):
                name = new + name[len(old) :]
        state[name] = value
    return state


def build_model(payload: dict[str, Any], config: Config) -> Seq2Seq:
    """A model with the architecture of ``config`` and the weights of a checkpoint."""
    model = Seq2Seq.from_config(
        config.model, payload["src_vocab_size"], payload["tgt_vocab_size"], payload["max_source_length"]
    )
    model.load_state_dict(model_state(payload))
    return model


@dataclass
class LoadedModel:
    """A model directory read back: the model (eval mode, CPU), its tokenizer and config."""

    model: Seq2Seq
    tokenizer: Tokenizer
    config: Config
    payload: dict[str, Any]


def load_model_dir(directory: Path, checkpoint_name: str = "best.pt") -> LoadedModel:
    """Read and rebuild a model directory written by ``attnmt train``."""
    if not directory.is_dir():
        raise ModelDirError(f"{directory}: model directory not found")
    path = directory / checkpoint_name
    payload = load(path)
    try:
        config = config_from_dict(payload["config"], origin=str(path))
    except ConfigError as error:
        raise ModelDirError(f"{path}: the config inside is not valid ({error})") from None
    model = build_model(payload, config).eval()
    return LoadedModel(model, Tokenizer.load(directory), config, payload)


class Checkpointer:
    """Writes ``last.pt`` (with everything needed to resume) and ``best.pt`` (weights) atomically."""

    def __init__(self, out_dir: Path, config: Config, sizes: dict[str, int], device: torch.device) -> None:
        self.out_dir, self.config, self.sizes, self.device = out_dir, config, sizes, device

    def save(self, name: str, model: Seq2Seq, state: TrainState, training: dict[str, Any] | None = None) -> None:
        payload: dict[str, Any] = {
            "model": model.state_dict(),
            "config": self.config.to_dict(),
            "step": state.step,
            **self.sizes,
        }
        if training is not None:
            payload.update(training, train_state=vars(state).copy(), rng=random_state(self.device))
        save_atomic(payload, self.out_dir / name)
