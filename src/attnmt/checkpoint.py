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

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from attnmt.config import Config, config_from_dict
from attnmt.errors import ConfigError, ModelDirError, require_model_dir
from attnmt.files import atomic_output
from attnmt.model import Seq2Seq
from attnmt.resume import TrainState
from attnmt.tokenizer import Tokenizer, tokenizer_fingerprint

FORMAT = "attnmt-1"

#: Folder of a run directory where ``training.keep_checkpoints`` keeps the weights of recent validations.
KEPT_DIR = "checkpoints"

#: Parameter names of older checkpoints and their current names.
RENAMED_PARAMETERS = {"generator.": "output_layer."}


def save_atomic(payload: dict[str, Any], path: Path) -> None:
    """Write ``payload`` to ``path`` via a temporary file and an atomic rename."""
    with atomic_output(path, binary=True) as stream:
        torch.save({"format": FORMAT, **payload}, stream)


def load(path: Path) -> dict[str, Any]:
    """Load an attnmt checkpoint safely; a missing or foreign file is a ModelDirError."""
    if not path.is_file():
        raise ModelDirError(f"{path}: checkpoint not found")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols; the error below says it all
            warnings.simplefilter("ignore")
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


#: Entries every checkpoint holds, and their types.
REQUIRED = {"model": dict, "config": dict, "src_vocab_size": int, "tgt_vocab_size": int, "max_source_length": int}


def check_payload(payload: dict[str, Any], path: Path) -> Config:
    """The checkpoint's config, once its entries have the right types and sane sizes."""
    for key, kind in REQUIRED.items():
        if not isinstance(payload.get(key), kind):
            raise ModelDirError(f"{path}: damaged checkpoint ({key} is missing or not a {kind.__name__})")
    try:
        config = config_from_dict(payload["config"], origin=str(path))
    except ConfigError as error:
        raise ModelDirError(f"{path}: the config inside is not valid ({error})") from None
    for key in ("src_vocab_size", "tgt_vocab_size"):
        if not 4 < payload[key] <= 1_000_000:
            raise ModelDirError(f"{path}: damaged checkpoint ({key} = {payload[key]})")
    if not 0 < payload["max_source_length"] <= 10_000:
        raise ModelDirError(f"{path}: damaged checkpoint (max_source_length = {payload['max_source_length']})")
    return config


def build_model(payload: dict[str, Any], config: Config, path: Path = Path("checkpoint")) -> Seq2Seq:
    """A model with the architecture of ``config`` and the (finite) weights of a checkpoint."""
    model = Seq2Seq.from_config(
        config.model, payload["src_vocab_size"], payload["tgt_vocab_size"], payload["max_source_length"]
    )
    state = model_state(payload)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as error:
        first = str(error).split("\n\t")[1].strip() if "\n\t" in str(error) else str(error)[:200]
        raise ModelDirError(f"{path}: the weights do not fit the model its config describes ({first})") from None
    if not all(bool(torch.isfinite(value).all()) for value in state.values() if value.is_floating_point()):
        raise ModelDirError(f"{path}: the weights hold NaN or infinite values")
    return model


@dataclass
class LoadedModel:
    """A model directory read back: the model (eval mode, CPU), its tokenizer and config."""

    model: Seq2Seq
    tokenizer: Tokenizer
    config: Config
    payload: dict[str, Any]


def check_tokenizer(tokenizer: Tokenizer, payload: dict[str, Any], directory: Path, path: Path) -> None:
    """The sentencepiece model(s) must be the very ones the checkpoint was trained with."""
    expected = payload.get("tokenizer_sha256")
    if isinstance(expected, dict) and expected != tokenizer_fingerprint(directory):
        raise ModelDirError(
            f"{directory}: the sentencepiece model is not the one {path.name} was trained with "
            "(its checksum differs); copy the model directory whole"
        )
    sizes = (tokenizer.src_vocab_size, tokenizer.tgt_vocab_size)
    if sizes != (payload["src_vocab_size"], payload["tgt_vocab_size"]):
        raise ModelDirError(
            f"{directory}: the sentencepiece model has {sizes[0]}/{sizes[1]} pieces but {path.name} was trained "
            f"with {payload['src_vocab_size']}/{payload['tgt_vocab_size']}"
        )


def load_model_dir(directory: Path, checkpoint_name: str = "best.pt") -> LoadedModel:
    """Read, check and rebuild a model directory written by ``attnmt train``."""
    require_model_dir(directory)
    path = directory / checkpoint_name
    payload = load(path)
    config = check_payload(payload, path)
    tokenizer = Tokenizer.load(directory)
    check_tokenizer(tokenizer, payload, directory, path)
    model = build_model(payload, config, path).eval()
    return LoadedModel(model, tokenizer, config, payload)


class Checkpointer:
    """Writes ``last.pt`` (with everything needed to resume) and ``best.pt`` (weights) atomically."""

    def __init__(self, out_dir: Path, config: Config, sizes: dict[str, int], device: torch.device) -> None:
        self.out_dir, self.config, self.sizes, self.device = out_dir, config, sizes, device

    def save(self, name: str, model: Seq2Seq, state: TrainState, training: dict[str, Any] | None = None) -> None:
        payload: dict[str, Any] = {
            "model": model.state_dict(),
            "config": self.config.to_dict(),
            "step": state.step,
            "best_valid_bleu": state.best_bleu,
            "tokenizer_sha256": tokenizer_fingerprint(self.out_dir),
            **self.sizes,
        }
        if training is not None:
            payload.update(training, train_state=vars(state).copy())
        save_atomic(payload, self.out_dir / name)

    def keep(self, model: Seq2Seq, state: TrainState, keep: int) -> None:
        """Save this validation's weights as ``checkpoints/step-NNNNNNN.pt``; delete all but the newest ``keep``."""
        folder = self.out_dir / KEPT_DIR
        folder.mkdir(exist_ok=True)
        self.save(f"{KEPT_DIR}/step-{state.step:07d}.pt", model, state)
        for old in sorted(folder.glob("step-*.pt"))[:-keep]:
            old.unlink()
