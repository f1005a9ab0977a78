"""Training: teacher forcing, label-smoothed cross-entropy, Adam, validation, checkpoints.

``train(config, out_dir)`` does the whole job and can be rerun on the same
``out_dir`` to resume: model, optimizer, scheduler, position inside the epoch and
random number generators all come back from ``last.pt`` (``resume.py``), so the
resumed run continues the very same run. The directory holds ``config.yaml``, the
sentencepiece model(s), ``best.pt`` (best validation BLEU), ``last.pt`` and
``train_log.jsonl`` (one JSON object per logged step and per validation).

The loop (``Loop.run``) asks three small questions after every update, each
answered by its own function: is a log row due (``IntervalMeter``), must training
stop (``stop_decision``, a ``Stop`` value), is a validation due
(``validation_due``). Flags that can differ between processes (Ctrl-C, the
clock) are agreed through the ``World`` first, so that under torchrun all
processes stop at the same step; only the main process writes.
"""

from __future__ import annotations

import math
import random
import signal
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from attnmt import checkpoint
from attnmt.checkpoint import Checkpointer
from attnmt.config import Config, TrainingConfig, save_config
from attnmt.data import Batch, EncodedCorpus, make_batch, prepare_data, token_batches
from attnmt.device import choose_precision, pick_device
from attnmt.distributed import World
from attnmt.errors import Interrupted, ModelDirError, TrainingError
from attnmt.files import remove_stale_temporaries
from attnmt.loss import sequence_loss
from attnmt.model import Seq2Seq
from attnmt.reporting import IntervalMeter, Reporter
from attnmt.resume import TrainState, check_resumable, restore_random_state
from attnmt.rundir import RunLock, check_out_dir, truncate_log
from attnmt.schedule import make_scheduler, step_on_update, step_on_validation
from attnmt.tokenizer import Tokenizer
from attnmt.validation import Validator


@dataclass(frozen=True)
class Stop:
    """Why training stops; ``finished`` runs are complete (rerunning them does nothing)."""

    reason: str
    finished: bool = False


INTERRUPTED = Stop("interrupted")

#: Signals that make training save ``last.pt`` and stop.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def stop_decision(state: TrainState, config: TrainingConfig, out_of_time: bool, max_minutes: float) -> Stop | None:
    """A budget that ends the run after this update, or None."""
    if out_of_time:
        return Stop(f"time budget of {max_minutes:g} minutes reached")
    if config.max_steps > 0 and state.step >= config.max_steps:
        return Stop(f"training.max_steps={config.max_steps} reached")
    return None


def validation_due(step: int, config: TrainingConfig, stop: Stop | None) -> bool:
    """Validate every ``valid_every`` updates and whenever a budget stops the run."""
    return step % config.valid_every == 0 or stop is not None


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    best_bleu: float
    stopped_because: str
    target_tokens_per_s: float


class Loop:
    """The training loop proper: updates, log rows, validations, checkpoints, stopping."""

    def __init__(
        self,
        model: Seq2Seq,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        state: TrainState,
        train: EncodedCorpus,
        settings: TrainingConfig,
        validator: Validator,
        checkpointer: Checkpointer,
        reporter: Reporter,
        world: World,
        device: torch.device,
        autocast: Any,
        max_minutes: float,
    ) -> None:
        self.model, self.optimizer, self.scheduler, self.state = model, optimizer, scheduler, state
        self.train, self.settings, self.validator, self.checkpointer = train, settings, validator, checkpointer
        self.reporter, self.world, self.device, self.autocast = reporter, world, device, autocast
        self.max_minutes = max_minutes
        self.meter = IntervalMeter()
        self.recent: dict[str, Any] = {}  # last logged training loss and speed, repeated in validation rows
        self.last_validated_step = -1
        self.interrupted = 0  # the number of the signal that asked to stop
        self.updates = 0  # optimizer updates made by this process

    def train_step(self, batch: Batch) -> float:
        """Forward, label-smoothed loss averaged over target tokens, backward, clip, update.

        A NaN or infinite loss stops training before it reaches the weights
        (``TrainingError``): the checkpoints on disk stay the last good ones.
        """
        self.model.train()
        with self.autocast():
            logits = self.model(batch.src, batch.src_lengths, batch.tgt_in)  # (B, T, V)
        loss = sequence_loss(logits, batch.tgt_out, self.settings.label_smoothing)
        (not_finite,) = self.world.any(not math.isfinite(float(loss.detach())))
        if not_finite:
            raise TrainingError(
                f"the loss became {float(loss.detach())} at step {self.state.step + 1} (training.lr="
                f"{self.optimizer.param_groups[0]['lr']:g}); stopped without saving, so last.pt and best.pt hold "
                "the last good weights: lower training.lr or training.clip_norm and rerun to resume"
            )
        self.optimizer.zero_grad(set_to_none=True)
        (loss / batch.target_tokens).backward()
        if self.settings.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.clip_norm)
        self.optimizer.step()
        step_on_update(self.scheduler)
        return float(loss.detach())

    def save_last(self) -> None:
        training = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}
        if self.world.is_main:
            self.checkpointer.save("last.pt", self.model, self.state, training)

    def run(self) -> Stop:
        """Train until a stop; SIGINT (Ctrl-C) and SIGTERM (timeout, docker stop, Slurm) save and stop."""
        if threading.current_thread() is not threading.main_thread():
            return self._run()
        previous = {signum: signal.signal(signum, self._on_signal) for signum in STOP_SIGNALS}
        try:
            return self._run()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _on_signal(self, signum: int, frame: Any) -> None:
        """First signal: finish the current step, save last.pt, stop. A second one stops at once."""
        self.interrupted = self.interrupted or signum
        signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)

    def _run(self) -> Stop:
        state, settings = self.state, self.settings
        started = time.monotonic()
        budget = self.max_minutes * 60 if self.max_minutes > 0 else math.inf
        stop = Stop("finished", finished=True) if state.finished else stop_decision(state, settings, False, 0)
        while stop is None and state.epoch < settings.max_epochs:
            batches = token_batches(self.train, settings.batch_tokens, settings.seed, state.epoch)
            with self.reporter.epoch_bar(len(batches), state.batch_in_epoch, state.epoch) as bar:
                while stop is None and state.batch_in_epoch < len(batches):
                    stop = self._update(batches[state.batch_in_epoch], bar, time.monotonic() - started >= budget)
            if stop is None:
                state.epoch += 1
                state.batch_in_epoch = 0
        if stop is None:
            if self.last_validated_step != state.step and self.updates:
                self.validate_and_save(scheduled=False)
            stop = Stop(f"training.max_epochs={settings.max_epochs} reached", finished=True)
        return stop

    def _update(self, indices: list[int], bar: Any, out_of_time: bool) -> Stop | None:
        """One optimizer update on the batch ``indices``, then logging, validation and the stop decision."""
        state = self.state
        batch = make_batch([self.train.src[i] for i in indices], [self.train.tgt[i] for i in indices])
        loss = self.train_step(batch.to(self.device))
        state.step += 1
        state.batch_in_epoch += 1
        self.updates += 1
        self.meter.add(loss, batch.target_tokens)
        bar.update(1)
        if state.step % self.settings.log_every == 0:
            self._log_interval(bar)
        interrupted, out_of_time = self.world.any(bool(self.interrupted), out_of_time)
        if interrupted:
            return INTERRUPTED
        stop = stop_decision(state, self.settings, out_of_time, self.max_minutes)
        if validation_due(state.step, self.settings, stop):
            early = self.validate_and_save(scheduled=state.step % self.settings.valid_every == 0, bar=bar)
            self.meter.restart()  # validation time is not training time
            stop = early or stop
        elif self.settings.save_every and state.step % self.settings.save_every == 0:
            self.save_last()  # bounds what a kill costs
        return stop

    def _log_interval(self, bar: Any) -> None:
        state = self.state
        row = {"step": state.step, "epoch": state.epoch + 1, **self.meter.take(self.optimizer.param_groups[0]["lr"])}
        if not self.recent:  # the first row of this process says what the data held
            row.update(
                train_pairs=len(self.train),
                dropped_empty=self.train.dropped_empty,
                dropped_long=self.train.dropped_long,
            )
        self.reporter.row(row)
        self.recent = {"loss": row["loss"], "tgt_tokens_per_s": row["tgt_tokens_per_s"]}
        bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{row['tgt_tokens_per_s']:.0f}")

    def validate_and_save(self, scheduled: bool, bar: Any = None) -> Stop | None:
        """Validate, log, save best/last; return an early stop or None.

        Only ``scheduled`` validations (every ``valid_every`` steps) step the plateau
        scheduler and count for early stopping; the extra validation when a budget
        stops the run only updates ``best.pt``, so that a resumed run follows the
        same learning-rate schedule as one that never stopped.
        """
        state = self.state
        scores = self.world.from_main(self.validator(self.model) if self.world.is_main else None)
        self.last_validated_step = state.step
        if scheduled:
            step_on_validation(self.scheduler, scores["valid_loss"])
        lr = self.optimizer.param_groups[0]["lr"]
        row = {"step": state.step, "epoch": state.epoch + 1, "lr": lr, **self.recent}
        self.reporter.row({**row, **{k: round(v, 4) for k, v in scores.items()}})
        self.reporter.message(
            f"step {state.step}: valid loss {scores['valid_loss']:.3f}, ppl {scores['valid_ppl']:.2f}, "
            f"greedy BLEU {scores['valid_bleu']:.2f}",
            bar,
        )
        if scores["valid_bleu"] > state.best_bleu:
            state.best_bleu = scores["valid_bleu"]
            if self.world.is_main:
                self.checkpointer.save("best.pt", self.model, state)
        if self.settings.keep_checkpoints and self.world.is_main:
            self.checkpointer.keep(self.model, state, self.settings.keep_checkpoints)
        stop = self._early_stopping(scheduled, scores["valid_bleu"])
        self.save_last()
        return stop

    def _early_stopping(self, scheduled: bool, bleu: float) -> Stop | None:
        """Count scheduled validations without a better BLEU; stop after ``early_stopping`` of them."""
        state, patience = self.state, self.settings.early_stopping
        if not scheduled:
            return None
        if bleu > state.best_scheduled_bleu:
            state.best_scheduled_bleu, state.bad_validations = bleu, 0
            return None
        state.bad_validations += 1
        if patience > 0 and state.bad_validations >= patience:
            return Stop(f"early stopping after {state.bad_validations} validations without a better BLEU", True)
        return None


class Trainer:
    """One training run in ``out_dir``: set-up, then the loop, then the final save."""

    def __init__(self, config: Config, out_dir: Path, max_minutes: float, progress: bool = True) -> None:
        self.config = config
        self.out_dir = out_dir
        self.max_minutes = max_minutes or config.training.max_minutes
        self.world = World()
        self.reporter = Reporter(out_dir / "train_log.jsonl", progress, self.world.is_main)
        self.device = pick_device(config.training.device)
        self.autocast_dtype = choose_precision(config.training.precision, self.device)

    def autocast(self) -> Any:
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def run(self) -> TrainResult:
        check_out_dir(self.out_dir)
        with RunLock(self.out_dir):
            remove_stale_temporaries(self.out_dir)
            return self._run_locked()

    def _run_locked(self) -> TrainResult:
        config, out_dir = self.config, self.out_dir
        resuming = (out_dir / "last.pt").is_file()
        if resuming:
            check_resumable(config, out_dir)
        else:
            truncate_log(self.reporter.log_path, 0)  # rows of an attempt killed before its first save
        save_config(config, out_dir / "config.yaml")  # first: marks the directory as an attnmt run
        torch.manual_seed(config.training.seed)
        random.seed(config.training.seed)
        tokenizer, train, valid = prepare_data(config, out_dir, resuming, self.reporter.message)
        self.reporter.message(
            f"{len(train)} training pairs kept, {train.dropped_empty} empty and {train.dropped_long} longer than "
            f"{config.data.max_length} tokens skipped; {len(valid)} validation pairs"
        )
        loop = self._build_loop(tokenizer, train, valid, resuming)
        stop = loop.run()
        return self._finish(loop, stop)

    def _build_loop(
        self, tokenizer: Tokenizer, train: EncodedCorpus, valid: list[tuple[str, str]], resuming: bool
    ) -> Loop:
        config = self.config
        max_source_length = config.data.max_length
        model = Seq2Seq.from_config(config.model, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size, max_source_length)
        model.to(self.device)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.training.lr)
        scheduler = make_scheduler(optimizer, config.training)
        state = TrainState()
        if resuming:
            state = self._resume(model, optimizer, scheduler)
        parameters = sum(p.numel() for p in model.parameters())
        self.reporter.message(
            f"model: {config.model.rnn} {config.model.decoder} decoder, {model.attention_name} attention, "
            f"{parameters / 1e6:.1f}M parameters; device {self.device}, "
            f"precision {self.autocast_dtype or 'fp32'}, {torch.get_num_threads()} threads"
        )
        sizes = {
            "src_vocab_size": tokenizer.src_vocab_size,
            "tgt_vocab_size": tokenizer.tgt_vocab_size,
            "max_source_length": max_source_length,
        }
        validator = Validator(tokenizer, valid, config, self.device, self.autocast)
        checkpointer = Checkpointer(self.out_dir, config, sizes, self.device)
        return Loop(
            model, optimizer, scheduler, state, train, config.training, validator, checkpointer,
            self.reporter, self.world, self.device, self.autocast, self.max_minutes,
        )  # fmt: skip

    def _resume(self, model: Seq2Seq, optimizer: torch.optim.Optimizer, scheduler: Any) -> TrainState:
        path = self.out_dir / "last.pt"
        payload = checkpoint.load(path)
        missing = [key for key in ("optimizer", "scheduler", "train_state", "rng") if key not in payload]
        if missing:
            raise ModelDirError(
                f"{path}: holds no training state ({', '.join(missing)} missing: a copy of best.pt?); "
                "put the right last.pt back, or delete it to start training over"
            )
        checkpoint.check_payload(payload, path)
        state = TrainState.from_dict(payload["train_state"], str(path))
        try:
            model.load_state_dict(checkpoint.model_state(payload))
            optimizer.load_state_dict(payload["optimizer"])
            scheduler.load_state_dict(payload["scheduler"])
            restore_random_state(payload["rng"], self.device)
        except (RuntimeError, ValueError, KeyError, TypeError) as error:
            raise ModelDirError(f"{path}: does not fit this run ({type(error).__name__}); use a new --out") from None
        dropped = truncate_log(self.reporter.log_path, state.step)
        if dropped:
            self.reporter.message(f"dropped {dropped} log rows after step {state.step}: they will be replayed")
        self.reporter.message(
            f"resuming {self.out_dir} at step {state.step} (epoch {state.epoch + 1}, batch {state.batch_in_epoch})"
        )
        return state

    def _finish(self, loop: Loop, stop: Stop) -> TrainResult:
        state = loop.state
        if stop is INTERRUPTED:
            loop.save_last()
            name = signal.Signals(loop.interrupted).name if loop.interrupted else "a signal"
            self.reporter.message(
                f"interrupted by {name} at step {state.step}; last.pt saved, rerun the same command to resume"
            )
            raise Interrupted(loop.interrupted or signal.SIGINT)
        if loop.updates or stop.finished != state.finished:
            state.finished = stop.finished
            loop.save_last()
        if self.world.is_main and not (self.out_dir / "best.pt").is_file():
            loop.checkpointer.save("best.pt", loop.model, state)
        self.reporter.message(f"stopped: {stop.reason}; best validation BLEU {state.best_bleu:.2f}")
        return TrainResult(self.out_dir, state.step, state.best_bleu, stop.reason, loop.meter.overall_tokens_per_s())


def train(config: Config, out_dir: str | Path, max_minutes: float = 0.0, progress: bool = True) -> TrainResult:
    """Train (or resume training) a model in ``out_dir``; see the module docstring."""
    return Trainer(config, Path(out_dir), max_minutes, progress).run()
