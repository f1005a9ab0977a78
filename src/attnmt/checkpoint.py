"""Checkpoints: atomic writes, loadable with ``torch.load(weights_only=True)``.

A checkpoint holds only tensors and plain Python values (dicts, lists, numbers,
strings), so it loads under torch's safe unpickler. It is written to a temporary
file in the same directory, flushed to disk, then renamed over the old one: an
interrupted save never leaves a broken ``best.pt`` or ``last.pt``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from attnmt.errors import ModelDirError

FORMAT = "attnmt-1"


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
