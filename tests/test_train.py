"""Training: logs, checkpoints loadable with weights_only, exact resume after interruption."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from attnmt import checkpoint
from attnmt.config import config_from_dict
from attnmt.device import cpu_supports_bf16
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


@pytest.mark.parametrize("matmul", ["torch", "onednn"])
def test_resume_continues_the_same_run(tmp_path: Path, matmul: str) -> None:
    """40 steps in one go == 20 steps, stop, rerun to 40 (dropout and batch order included)."""
    paths = write_tiny_corpus(tmp_path)
    settings = {"valid_every": 15, "log_every": 5, "matmul": matmul}  # the stop at step 20 is not a validation step
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
    from attnmt.loop import Stop, stop_decision, validation_due
    from attnmt.resume import TrainState

    config = TrainingConfig(max_steps=100, valid_every=40)
    assert stop_decision(TrainState(step=99), config, max_minutes=0) is None
    assert stop_decision(TrainState(step=100), config, 0) == Stop("training.max_steps=100 reached")
    assert stop_decision(TrainState(step=3, train_seconds=149.0), config, max_minutes=2.5) is None
    timed = stop_decision(TrainState(step=3, train_seconds=150.0), config, max_minutes=2.5)
    assert timed == Stop("time budget of 2.5 minutes reached") and not timed.finished
    assert validation_due(80, config, None) and not validation_due(81, config, None)
    assert validation_due(81, config, timed)  # a budget stop validates first


def _rows(run: Path) -> list[dict]:
    def refuse(constant: str) -> None:
        raise ValueError(f"invalid JSON constant {constant}")

    return [json.loads(line, parse_constant=refuse) for line in (run / "train_log.jsonl").read_text().splitlines()]


def _wait_for(condition, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, "training ended before the kill"
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def test_kill_9_at_any_moment_resumes_to_bit_identical_weights(tmp_path: Path) -> None:
    """SIGKILL during tokenizer training, between saves, right after a validation: same final weights."""
    paths = write_tiny_corpus(tmp_path)
    raw = tiny_config(paths, max_steps=150, valid_every=40, log_every=5, save_every=7)
    raw["model"]["dropout"] = 0.2
    train(config_from_dict(raw), tmp_path / "straight", progress=False)

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "attnmt", "train", "--config", str(config), "--out", str(out), "--no-progress"]
    log = out / "train_log.jsonl"

    def rows() -> int:
        return log.read_text().count("\n") if log.is_file() else 0

    moments = [
        lambda: (out / "config.yaml").is_file(),  # before any checkpoint
        lambda: rows() >= 3,  # between saves
        lambda: "valid_bleu" in (log.read_text() if log.is_file() else ""),  # just after a validation
        lambda: rows() >= 24,
    ]
    for moment in moments:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for(moment, process)
        process.kill()
        process.wait(timeout=60)
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr

    straight = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    resumed = torch.load(out / "last.pt", weights_only=True)
    wall = ("train_seconds",)  # the clock, not the run, differs
    assert {k: v for k, v in resumed["train_state"].items() if k not in wall} == {
        k: v for k, v in straight["train_state"].items() if k not in wall
    }
    for name, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][name]), name
    steps = [(r["step"], "valid_loss" in r) for r in _rows(out)]
    assert len(steps) == len(set(steps))  # no replayed row twice
    assert steps == [(r["step"], "valid_loss" in r) for r in _rows(tmp_path / "straight")]
    assert not list(out.glob(".*.tmp"))


def test_sigterm_saves_and_the_same_command_resumes(tmp_path: Path) -> None:
    paths = write_tiny_corpus(tmp_path)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config(paths, max_steps=100_000, valid_every=100_000)), encoding="utf-8")
    out = tmp_path / "run"
    command = [sys.executable, "-m", "attnmt", "train", "--config", str(config), "--out", str(out), "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (out / "train_log.jsonl").is_file() and len(_rows(out)) >= 2, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert "interrupted by SIGTERM" in stderr and "Traceback" not in stderr
    step = torch.load(out / "last.pt", weights_only=True)["train_state"]["step"]
    assert step >= 40
    command += ["--set", f"training.max_steps={step + 3}"]
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0 and json.loads(resumed.stdout)["steps"] == step + 3


def test_a_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from attnmt import loop as train_module
    from attnmt.errors import TrainingError

    paths = write_tiny_corpus(tmp_path)
    raw = tiny_config(paths, max_steps=100, valid_every=1000, save_every=10, log_every=5)
    real_loss, calls = train_module.sequence_loss, []

    def poisoned(logits: torch.Tensor, tgt_out: torch.Tensor, smoothing: float) -> torch.Tensor:
        calls.append(1)
        loss = real_loss(logits, tgt_out, smoothing)
        return loss * float("nan") if len(calls) > 23 else loss

    monkeypatch.setattr(train_module, "sequence_loss", poisoned)
    with pytest.raises(TrainingError, match="the loss became nan at step 24"):
        train(config_from_dict(raw), tmp_path / "run", progress=False)
    saved = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert saved["train_state"]["step"] == 20
    assert all(bool(torch.isfinite(v).all()) for v in saved["model"].values() if v.is_floating_point())
    assert max(r["step"] for r in _rows(tmp_path / "run")) <= 23  # strict JSON, no NaN rows


def test_a_finished_run_reruns_as_a_no_op(tmp_path: Path) -> None:
    paths = write_tiny_corpus(tmp_path)
    raw = tiny_config(paths, max_steps=12, valid_every=5, log_every=4)
    run = tmp_path / "run"
    train(config_from_dict(raw), run, progress=False)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    again = train(config_from_dict(raw), run, progress=False)
    assert again.steps == 12
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_best_copied_over_last_is_refused(tmp_path: Path) -> None:
    from attnmt.errors import ModelDirError

    paths = write_tiny_corpus(tmp_path)
    run = tmp_path / "run"
    train(config_from_dict(tiny_config(paths, max_steps=5)), run, progress=False)
    shutil.copy(run / "best.pt", run / "last.pt")
    with pytest.raises(ModelDirError, match="holds no training state .* a copy of best.pt"):
        train(config_from_dict(tiny_config(paths, max_steps=10)), run, progress=False)


def test_a_full_disk_during_a_save_keeps_the_previous_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from attnmt.errors import AttnmtError

    paths = write_tiny_corpus(tmp_path)
    run = tmp_path / "run"
    train(config_from_dict(tiny_config(paths, max_steps=5)), run, progress=False)
    real_save = torch.save

    def full_disk(payload: object, stream: object) -> None:
        real_save(payload, stream)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(AttnmtError, match=r"cannot write \(No space left on device\); the previous file is intact"):
        train(config_from_dict(tiny_config(paths, max_steps=10, save_every=2)), run, progress=False)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(run / "last.pt", weights_only=True)["train_state"]["step"] == 5
    assert not list(run.glob(".*.tmp"))


@pytest.mark.parametrize("side", ["train_src", "valid_src"])
def test_whitespace_only_corpora_are_named(tmp_path: Path, side: str) -> None:
    from attnmt.errors import DataError

    paths = write_tiny_corpus(tmp_path)
    lines = Path(paths[side]).read_text().count("\n")
    Path(paths[side]).write_text(" \t \n" * lines, encoding="utf-8")
    with pytest.raises(DataError, match=Path(paths[side]).name):
        train(config_from_dict(tiny_config(paths)), tmp_path / "run", progress=False)


def test_cosine_decays_over_the_budget_and_time_counts_over_resumes(tmp_path: Path) -> None:
    from attnmt.loop import budget_progress
    from attnmt.resume import TrainState
    from attnmt.schedule import BudgetCosine

    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.002)
    cosine = BudgetCosine(optimizer, min_lr=0.0)
    lrs = []
    for progress in (0.0, 0.25, 0.5, 1.0, 1.5):
        cosine.set_progress(progress)
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.002, 0.002 * (1 + 2**-0.5) / 2, 0.001, 0.0, 0.0])
    from attnmt.config import TrainingConfig

    config = TrainingConfig(max_steps=1000)
    assert budget_progress(TrainState(step=250, train_seconds=30.0), config, max_minutes=1.0) == 0.5  # time binds
    assert budget_progress(TrainState(step=600, train_seconds=30.0), config, max_minutes=1.0) == 0.6

    paths = write_tiny_corpus(tmp_path)
    raw = tiny_config(paths, max_steps=30, scheduler="cosine", log_every=5, valid_every=100, min_lr=0.0)
    train(config_from_dict(raw), tmp_path / "run", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    lr = [r["lr"] for r in rows if "valid_loss" not in r]
    assert lr == sorted(lr, reverse=True) and lr[-1] == pytest.approx(0.0, abs=1e-12)
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["train_state"]
    assert state["train_seconds"] > 0


def test_cosine_with_decay_start_holds_the_rate_then_cools_down() -> None:
    """decay_start = 0.6: lr stays at its peak for 60 % of the budget, then half a cosine to min_lr."""
    from attnmt.schedule import BudgetCosine

    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.002)
    cosine = BudgetCosine(optimizer, min_lr=0.0, decay_start=0.6)
    lrs = []
    for progress in (0.0, 0.3, 0.6, 0.8, 1.0):
        cosine.set_progress(progress)
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.002, 0.002, 0.002, 0.001, 0.0])
    restored = BudgetCosine(torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.5), min_lr=0.0)
    restored.load_state_dict(cosine.state_dict())
    restored.set_progress(0.8)
    assert restored.optimizer.param_groups[0]["lr"] == pytest.approx(0.001)


def test_cosine_needs_a_budget(tmp_path: Path) -> None:
    paths = write_tiny_corpus(tmp_path)
    raw = tiny_config(paths, max_steps=0, scheduler="cosine")
    with pytest.raises(ConfigError, match="cosine decays over the training budget"):
        train(config_from_dict(raw), tmp_path / "run", progress=False)


def test_a_time_budget_counts_over_resumes(tmp_path: Path) -> None:
    """A run that has used its minutes is done: rerunning it does not train another budget."""
    paths = write_tiny_corpus(tmp_path)
    raw = tiny_config(paths, max_steps=0, valid_every=1000, log_every=10)
    first = train(config_from_dict(raw), tmp_path / "run", max_minutes=0.05, progress=False)
    assert "time budget of 0.05 minutes reached" in first.stopped_because and first.steps > 0
    again = train(config_from_dict(raw), tmp_path / "run", max_minutes=0.05, progress=False)
    assert again.steps == first.steps
    more = train(config_from_dict(raw), tmp_path / "run", max_minutes=0.1, progress=False)
    assert more.steps > first.steps  # a larger budget goes on where the run stopped


def test_a_train_state_from_before_train_seconds_loads() -> None:
    from attnmt.resume import TrainState

    old = {"step": 5, "epoch": 0, "batch_in_epoch": 5, "best_bleu": 1.0, "best_scheduled_bleu": 1.0}
    state = TrainState.from_dict({**old, "bad_validations": 0, "finished": False}, "last.pt")
    assert state.step == 5 and state.train_seconds == 0.0


@pytest.mark.skipif(not cpu_supports_bf16(), reason="needs a CPU with native bf16 (AVX512-BF16 or AMX)")
@pytest.mark.parametrize("rnn", ["gru", "lstm"])
def test_bf16_training_learns_as_well_as_fp32(tmp_path: Path, rnn: str) -> None:
    """bf16 learns the task as fp32 does: both end at the label-smoothing floor (about 0.11).

    When the tiny model first gets it (update 150-350) differs from run to run in
    either precision, so the comparison is made after both have converged.
    """
    paths = write_tiny_corpus(tmp_path)
    final = {}
    for precision in ("fp32", "bf16"):
        raw = tiny_config(paths, precision=precision, max_steps=500, valid_every=500, seed=1)
        raw["model"] = {**raw["model"], "rnn": rnn}  # type: ignore[dict-item]
        train(config_from_dict(raw), tmp_path / precision, progress=False)
        rows = [json.loads(line) for line in (tmp_path / precision / "train_log.jsonl").read_text().splitlines()]
        final[precision] = [r["valid_loss"] for r in rows if "valid_loss" in r][-1]
    assert final["bf16"] < final["fp32"] + 0.05, final
