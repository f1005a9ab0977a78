"""Training: logs, checkpoints loadable with weights_only, exact resume after interruption."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from attnmt import checkpoint
from attnmt.config import config_from_dict
from attnmt.errors import ConfigError
from attnmt.train import train
from conftest import tiny_config, write_tiny_corpus


def test_run_directory_holds_everything(tiny_model_dir: Path) -> None:
    names = {p.name for p in tiny_model_dir.iterdir()}
    assert {"config.yaml", "best.pt", "last.pt", "train_log.jsonl", "spm.joint.model"} <= names
    rows = [json.loads(line) for line in (tiny_model_dir / "train_log.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "valid_loss" not in r]
    valid_rows = [r for r in rows if "valid_loss" in r]
    assert train_rows and valid_rows
    for row in rows:
        assert {"step", "epoch", "loss", "lr", "tgt_tokens_per_s"} <= row.keys()
    for row in valid_rows:
        assert {"valid_loss", "valid_ppl", "valid_bleu"} <= row.keys()
    assert train_rows[0]["dropped_empty"] == 0 and train_rows[0]["dropped_long"] == 0
    assert train_rows[-1]["loss"] < train_rows[0]["loss"]
    assert max(r["valid_bleu"] for r in valid_rows) > 50  # the tiny task is learnable


def test_checkpoints_load_with_weights_only(tiny_model_dir: Path) -> None:
    for name in ("best.pt", "last.pt"):
        payload = torch.load(tiny_model_dir / name, map_location="cpu", weights_only=True)
        assert payload["format"] == checkpoint.FORMAT
    assert "optimizer" in torch.load(tiny_model_dir / "last.pt", weights_only=True)


def test_resume_continues_the_same_run(tmp_path: Path) -> None:
    """40 steps in one go == 20 steps, stop, rerun to 40 (dropout and batch order included)."""
    paths = write_tiny_corpus(tmp_path)
    settings = {"valid_every": 15, "log_every": 5}  # the stop at step 20 is not a validation step
    model_settings = {"dropout": 0.2}

    def config(max_steps: int):
        raw = tiny_config(paths, max_steps=max_steps, **settings)
        raw["model"].update(model_settings)
        return config_from_dict(raw)

    train(config(40), tmp_path / "straight", progress=False)
    train(config(20), tmp_path / "resumed", progress=False)
    train(config(40), tmp_path / "resumed", progress=False)
    straight = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    assert straight["train_state"]["step"] == resumed["train_state"]["step"] == 40
    for name, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][name]), name


def test_resume_refuses_a_different_model(tmp_path: Path) -> None:
    paths = write_tiny_corpus(tmp_path)
    train(config_from_dict(tiny_config(paths, max_steps=5)), tmp_path / "run", progress=False)
    raw = tiny_config(paths, max_steps=10)
    raw["model"]["attention"] = "dot"
    with pytest.raises(ConfigError, match="model.attention: .* was trained with 'general'"):
        train(config_from_dict(raw), tmp_path / "run", progress=False)


def test_early_stopping_stops_when_bleu_does_not_improve(tmp_path: Path) -> None:
    paths = write_tiny_corpus(tmp_path)
    raw = tiny_config(paths, max_steps=100, valid_every=5, early_stopping=2, lr=1e-12, log_every=5)
    result = train(config_from_dict(raw), tmp_path / "run", progress=False)
    assert "early stopping after 2 validations" in result.stopped_because
    assert result.steps == 15  # validation 1 sets the best, 2 and 3 do not beat it
    again = train(config_from_dict(raw), tmp_path / "run", progress=False)  # a finished run stays finished
    assert again.steps == 15


def test_warmup_decay_schedule(tmp_path: Path) -> None:
    paths = write_tiny_corpus(tmp_path)
    raw = tiny_config(paths, max_steps=30, scheduler="warmup_decay", warmup_steps=20, lr=0.01, log_every=5)
    train(config_from_dict(raw), tmp_path / "run", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    lr = {r["step"]: r["lr"] for r in rows if "valid_loss" not in r}
    assert lr[5] < lr[10] < lr[15] < lr[20]  # linear warmup
    assert lr[20] == pytest.approx(0.01, rel=0.06)
    assert lr[30] < lr[20]  # then 1/sqrt decay


def test_stop_and_validation_decisions() -> None:
    from attnmt.config import TrainingConfig
    from attnmt.resume import TrainState
    from attnmt.train import Stop, stop_decision, validation_due

    config = TrainingConfig(max_steps=100, valid_every=40)
    assert stop_decision(TrainState(step=99), config, out_of_time=False, max_minutes=0) is None
    assert stop_decision(TrainState(step=100), config, False, 0) == Stop("training.max_steps=100 reached")
    timed = stop_decision(TrainState(step=3), config, out_of_time=True, max_minutes=2.5)
    assert timed == Stop("time budget of 2.5 minutes reached") and not timed.finished
    assert validation_due(80, config, None) and not validation_due(81, config, None)
    assert validation_due(81, config, timed)  # a budget stop validates first
