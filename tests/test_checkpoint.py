"""Checkpoints: atomic, safe to load, and older checkpoints still load."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attnmt import Translator, checkpoint
from attnmt.errors import ModelDirError


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


class _Payload:
    """Unpickling this would create a file: a safe loader must never do it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def _damaged_copy(tiny_model_dir: Path, tmp_path: Path, change) -> Path:
    directory = tmp_path / "damaged"
    shutil.copytree(tiny_model_dir, directory)
    change(directory)
    return directory


def test_a_crafted_checkpoint_never_runs_code(tiny_model_dir: Path, tmp_path: Path) -> None:
    import pickle

    marker = tmp_path / "pwned"

    def craft(directory: Path) -> None:
        with (directory / "best.pt").open("wb") as stream:
            pickle.dump({"format": checkpoint.FORMAT, "model": _Payload(marker)}, stream)
        torch.save({"format": checkpoint.FORMAT, "model": _Payload(marker)}, directory / "last.pt")

    directory = _damaged_copy(tiny_model_dir, tmp_path, craft)
    for name in ("best.pt", "last.pt"):
        with pytest.raises(ModelDirError, match="not a readable checkpoint"):
            Translator.load(directory, checkpoint_name=name)
    result = subprocess.run(
        [sys.executable, "-m", "attnmt", "translate", "--model", str(directory)],
        input="red dog\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2 and "not a readable checkpoint" in result.stderr
    assert "Traceback" not in result.stderr
    assert not marker.exists()


def test_a_yaml_tag_never_runs_code(tmp_path: Path) -> None:
    from attnmt.config import load_config
    from attnmt.errors import ConfigError

    marker = tmp_path / "pwned"
    config = tmp_path / "c.yaml"
    config.write_text(f'model: !!python/object/apply:pathlib.Path.touch ["{marker}"]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(config)
    assert not marker.exists()


def _edit_checkpoint(edit):
    def change(directory: Path) -> None:
        payload = torch.load(directory / "best.pt", weights_only=True)
        edit(payload)
        torch.save(payload, directory / "best.pt")

    return change


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:500])


def _foreign_tokenizer(directory: Path) -> None:
    from attnmt.tokenizer import Tokenizer

    other = directory / "other"
    other.mkdir()
    pairs = [(f"sentence number {i} about cats", f"Satz Nummer {i} über Katzen") for i in range(300)]
    Tokenizer.train(pairs, other, vocab_size=400, model_type="bpe", joint=True)
    shutil.copy(other / "spm.joint.model", directory / "spm.joint.model")


@pytest.mark.parametrize(
    "case,change,message",
    [
        ("random bytes", lambda d: (d / "spm.joint.model").write_bytes(b"\x00garbage" * 50), "not a readable"),
        (
            "truncated",
            lambda d: (d / "spm.joint.model").write_bytes((d / "spm.joint.model").read_bytes()[:500]),
            "sentencepiece",
        ),
        ("foreign tokenizer", _foreign_tokenizer, "is not the one best.pt was trained with"),
        ("no tokenizer", lambda d: (d / "spm.joint.model").unlink(), "no sentencepiece model"),
        ("missing weights", _edit_checkpoint(lambda p: p.pop("model")), "model is missing"),
        ("absurd vocabulary", _edit_checkpoint(lambda p: p.update(src_vocab_size=10**9)), "src_vocab_size"),
        (
            "wrong shape",
            _edit_checkpoint(lambda p: p["model"].update({"output_layer.bias": torch.zeros(3)})),
            "the weights do not fit",
        ),
        (
            "missing parameter",
            _edit_checkpoint(lambda p: p["model"].pop("output_layer.bias")),
            "the weights do not fit",
        ),
        ("NaN weights", _edit_checkpoint(lambda p: p["model"]["output_layer.bias"].fill_(float("nan"))), "NaN"),
        (
            "hanging decoding limit",
            _edit_checkpoint(lambda p: p["config"]["decoding"].update(max_length_extra=10**7)),
            "decoding.max_length_extra",
        ),
        ("not a checkpoint", lambda d: (d / "best.pt").write_text("hello"), "not a readable checkpoint"),
    ],
)
def test_a_damaged_model_directory_is_one_clear_error(
    tiny_model_dir: Path, tmp_path: Path, case: str, change, message: str
) -> None:
    directory = _damaged_copy(tiny_model_dir, tmp_path, change)
    with pytest.raises(ModelDirError, match=message):
        Translator.load(directory)
