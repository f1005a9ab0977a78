"""Errors a user can cause and fix: the CLI prints them as one line and exits 2."""

from __future__ import annotations

from pathlib import Path


class AttnmtError(Exception):
    """A mistake in the user's input (file, config key, argument), not a bug."""


class ConfigError(AttnmtError):
    """A config key or value is wrong; the message names the key and what is allowed."""


class DataError(AttnmtError):
    """A corpus file is missing, unreadable or inconsistent; the message names file and line."""


class ModelDirError(AttnmtError):
    """A model directory is missing or does not hold a trained attnmt model."""


class InputError(AttnmtError):
    """A request option or input text is out of range; ``field`` names it (a CLI option or JSON field)."""

    def __init__(self, field: str, message: str, index: int | None = None) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.detail = message
        self.index = index  # which input text, when one text is at fault


class TrainingError(AttnmtError):
    """Training cannot go on (the loss became NaN, a checkpoint cannot be written); the message says what is kept."""


class WorkerLost(AttnmtError):
    """A decoding worker process ended abruptly (killed from outside, or out of memory)."""


class Interrupted(Exception):
    """Training stopped on a signal (SIGINT, SIGTERM) after saving ``last.pt``; the exit status is 128 + signum."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum


def require_model_dir(directory: Path) -> None:
    """A model directory must exist (checked by the library, and by the CLI before it imports torch)."""
    if not directory.is_dir():
        raise ModelDirError(f"{directory}: model directory not found")


def require_file(path: str, resolved: Path) -> None:
    """An input file the user named as ``path`` (found at ``resolved``) must exist and be a file."""
    if not resolved.is_file():
        raise DataError(f"{path}: file not found" if not resolved.exists() else f"{path}: not a file")
