"""Writing files so that nothing is ever half-written.

Every file attnmt writes (checkpoints, config.yaml, translations, attention
files, pictures) goes to a temporary sibling first, is flushed to disk, and is
renamed over the target only when complete: a full disk, a kill or an error
leaves the previous file as it was. A write that fails is an ``AttnmtError``
naming the file and saying that the earlier version is intact.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from attnmt.errors import AttnmtError

#: Temporary files end in this suffix (and start with a dot); stale ones are removed when a run starts.
TEMPORARY_SUFFIX = ".tmp"


@contextmanager
def atomic_output(path: str | Path, binary: bool = False) -> Iterator[IO[Any]]:
    """A stream to a temporary file that replaces ``path`` when the block ends without error."""
    path = Path(path)
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX, dir=path.parent)
    except OSError as error:
        raise AttnmtError(f"{path}: cannot write ({error.strerror})") from None
    try:
        with os.fdopen(handle, "wb" if binary else "w", encoding=None if binary else "utf-8") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        kept = "; the previous file is intact" if path.exists() else ""
        raise AttnmtError(f"{path}: cannot write ({error.strerror}){kept}") from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_output(path) as stream:
        stream.write(text)


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete temporaries left by killed writes in ``directory`` (call it holding the run's lock)."""
    stale = [p for p in directory.glob(f".*{TEMPORARY_SUFFIX}") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def copy_file(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` atomically."""
    with atomic_output(target, binary=True) as stream:
        stream.write(source.read_bytes())
