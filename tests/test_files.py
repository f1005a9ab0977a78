"""Atomic writes: a failed write leaves the previous file whole and says so."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from attnmt.errors import AttnmtError
from attnmt.files import atomic_output, remove_stale_temporaries, write_text


def test_write_text_replaces_whole_files(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    write_text(target, "first\n")
    write_text(target, "second\n")
    assert target.read_text() == "second\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_a_full_disk_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.txt"
    write_text(target, "good\n")

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(AttnmtError, match=r"out\.txt: cannot write \(No space left on device\); the previous file"):
        write_text(target, "half")
    assert target.read_text() == "good\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_an_error_inside_the_block_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with atomic_output(tmp_path / "x.bin", binary=True) as stream:
            stream.write(b"partial")
            raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_folder_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AttnmtError, match="cannot write"):
        write_text(tmp_path / "missing" / "out.txt", "x")


def test_stale_temporaries_are_removed(tmp_path: Path) -> None:
    (tmp_path / ".last.pt.abc123.tmp").write_bytes(b"x" * 100)
    (tmp_path / "last.pt").write_bytes(b"keep")
    assert [p.name for p in remove_stale_temporaries(tmp_path)] == [".last.pt.abc123.tmp"]
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
