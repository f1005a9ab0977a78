"""Checkpoints: atomic, safe to load, and older checkpoints still load."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from attnmt import Translator, checkpoint


def test_a_checkpoint_of_an_older_version_still_loads(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Before output_layer had its name it was called generator."""
    old_dir = tmp_path / "old"
    shutil.copytree(tiny_model_dir, old_dir)
    payload = torch.load(old_dir / "best.pt", weights_only=True)
    payload["model"] = {k.replace("output_layer.", "generator."): v for k, v in payload["model"].items()}
    assert any(k.startswith("generator.") for k in payload["model"])
    torch.save(payload, old_dir / "best.pt")
    sentences = ["red dog", "the small cat sits"]
    assert Translator.load(old_dir).translate(sentences) == Translator.load(tiny_model_dir).translate(sentences)


def test_atomic_save_replaces_and_leaves_nothing_behind(tmp_path: Path) -> None:
    checkpoint.save_atomic({"x": torch.ones(2)}, tmp_path / "a.pt")
    checkpoint.save_atomic({"x": torch.zeros(2)}, tmp_path / "a.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]
    assert torch.equal(checkpoint.load(tmp_path / "a.pt")["x"], torch.zeros(2))
