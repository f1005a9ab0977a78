"""Checkpoint averaging: kept checkpoints, their mean, and a loadable model directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attnmt import Translator
from attnmt.averaging import average_run, average_states, kept_checkpoints
from attnmt.config import config_from_dict
from attnmt.errors import AttnmtError
from attnmt.train import train
from conftest import tiny_config, write_tiny_corpus


def test_averaging_two_copies_of_a_checkpoint_gives_that_checkpoint() -> None:
    state = {"w": torch.randn(3, 4), "b": torch.randn(4), "steps": torch.tensor([3])}
    averaged = average_states([state, {k: v.clone() for k, v in state.items()}])
    assert all(torch.equal(averaged[k], state[k]) for k in state)


def test_averaging_is_the_element_wise_mean() -> None:
    a, b, c = (torch.full((2, 2), x) for x in (1.0, 2.0, 6.0))
    assert torch.equal(average_states([{"w": a}, {"w": b}, {"w": c}])["w"], torch.full((2, 2), 3.0))


@pytest.fixture(scope="module")
def kept_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("kept")
    paths = write_tiny_corpus(directory)
    raw = tiny_config(paths, max_steps=100, valid_every=20, keep_checkpoints=3)
    train(config_from_dict(raw), directory / "run", progress=False)
    return directory / "run"


def test_training_keeps_the_newest_checkpoints(kept_run: Path) -> None:
    assert [p.name for p in kept_checkpoints(kept_run)] == ["step-0000060.pt", "step-0000080.pt", "step-0000100.pt"]
    newest = torch.load(kept_checkpoints(kept_run)[-1], weights_only=True)
    last = torch.load(kept_run / "last.pt", weights_only=True)
    assert all(torch.equal(newest["model"][k], v) for k, v in last["model"].items())


def test_average_command_writes_a_model_directory(kept_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "averaged"
    result = subprocess.run(
        [sys.executable, "-m", "attnmt", "average", "--model", str(kept_run), "--last", "2", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["averaged"]) == 2
    payload = torch.load(out / "best.pt", weights_only=True)
    states = [torch.load(p, weights_only=True)["model"] for p in kept_checkpoints(kept_run)[-2:]]
    for name, value in payload["model"].items():
        assert torch.allclose(value, (states[0][name] + states[1][name]) / 2, atol=1e-6)
    translator = Translator.load(out)  # a complete model directory: config, tokenizer, checked weights
    assert len(translator.translate(["red dog", "a cat"])) == 2


def test_average_one_checkpoint_is_that_checkpoint(kept_run: Path, tmp_path: Path) -> None:
    average_run(kept_run, 1, tmp_path / "one")
    averaged = torch.load(tmp_path / "one" / "best.pt", weights_only=True)["model"]
    newest = torch.load(kept_checkpoints(kept_run)[-1], weights_only=True)["model"]
    assert all(torch.equal(averaged[k], newest[k]) for k in newest)


def test_asking_for_more_checkpoints_than_kept(kept_run: Path, tmp_path: Path) -> None:
    with pytest.raises(AttnmtError, match="3 kept checkpoint.*5 asked for.*keep_checkpoints >= 5"):
        average_run(kept_run, 5, tmp_path / "x")
