"""The training loop: updates, log rows, validations, checkpoints, stopping.

``Loop.run`` asks three small questions after every update, each answered by its
own function: is a log row due (``IntervalMeter``), must training stop
(``stop_decision``, a ``Stop`` value), is a validation due (``validation_due``).
Flags that can differ between processes (Ctrl-C, the clock) are agreed through
the ``World`` first, so that under torchrun all processes stop at the same step;
only the main process writes.

``Update`` is one optimizer update on a *global* batch of about
``training.batch_tokens`` target tokens: the batch is dealt into world size x
``training.accumulate_steps`` micro-batches; each process runs its share, and
each micro-batch's summed loss is divided by the global batch's token count (and
multiplied by the world size, which DistributedDataParallel divides back out).
So N processes with B/N tokens each, or one process accumulating N micro-batches
of B/N, compute the gradient of the same loss as one process with B tokens.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from attnmt.checkpoint import Checkpointer
from attnmt.config import TrainingConfig
from attnmt.data import EncodedCorpus, make_batch, shard, token_batches
from attnmt.distributed import World
from attnmt.errors import TrainingError
from attnmt.loss import sequence_loss
from attnmt.model import Seq2Seq
from attnmt.reporting import IntervalMeter, Reporter
from attnmt.resume import TrainState, random_state
from attnmt.schedule import step_on_update, step_on_validation
from attnmt.validation import Validator


@dataclass(frozen=True)
class Stop:
    """Why training stops; ``finished`` runs are complete (rerunning them does nothing)."""

    reason: str
    finished: bool = False


INTERRUPTED = Stop("interrupted")

#: Signals that make training save ``last.pt`` and stop.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def stop_decision(state: TrainState, config: TrainingConfig, max_minutes: float) -> Stop | None:
    """A budget that ends the run after this update, or None (training time counts over resumes)."""
    if max_minutes > 0 and state.train_seconds >= max_minutes * 60:
        return Stop(f"time budget of {max_minutes:g} minutes reached")
    if config.max_steps > 0 and state.step >= config.max_steps:
        return Stop(f"training.max_steps={config.max_steps} reached")
    return None


def budget_progress(state: TrainState, config: TrainingConfig, max_minutes: float) -> float:
    """The share of the training budget used: the larger of steps / max_steps and time / max_minutes."""
    shares = [0.0]
    if config.max_steps > 0:
        shares.append(state.step / config.max_steps)
    if max_minutes > 0:
        shares.append(state.train_seconds / (max_minutes * 60))
    return max(shares)


def validation_due(step: int, config: TrainingConfig, stop: Stop | None) -> bool:
    """Validate every ``valid_every`` updates and whenever a budget stops the run."""
    return step % config.valid_every == 0 or stop is not None


class Update:
    """One optimizer update: every process's micro-batches, gradients averaged, clip, one step."""

    def __init__(
        self,
        network: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        scaler: Any,
        settings: TrainingConfig,
        world: World,
        device: torch.device,
        autocast: Any,
    ) -> None:
        self.network, self.optimizer, self.scheduler, self.scaler = network, optimizer, scheduler, scaler
        self.settings, self.world, self.device, self.autocast = settings, world, device, autocast

    def __call__(self, corpus: EncodedCorpus, indices: list[int], step: int) -> tuple[float, int]:
        """Update on the global batch ``indices``; return its summed loss and target tokens (all processes).

        A NaN or infinite loss stops training before it reaches the weights
        (``TrainingError``): the checkpoints on disk stay the last good ones.
        """
        world, accumulate = self.world, self.settings.accumulate_steps
        parts = shard(indices, world.size * accumulate)
        mine = [parts[world.rank + world.size * a] for a in range(accumulate)]
        global_tokens = sum(len(corpus.tgt[i]) + 1 for i in indices)
        self.network.train()
        self.optimizer.zero_grad(set_to_none=True)
        local_loss = 0.0
        for number, part in enumerate(mine):
            weight = 1.0 if part else 0.0  # an empty share still takes part in the gradient all-reduce
            batch = make_batch(
                [corpus.src[i] for i in part or indices[:1]], [corpus.tgt[i] for i in part or indices[:1]]
            )
            batch = batch.to(self.device)
            last = number == len(mine) - 1
            with nullcontext() if last or world.size == 1 else self.network.no_sync():  # type: ignore[operator]
                with self.autocast():
                    logits = self.network(batch.src, batch.src_lengths, batch.tgt_in)  # (B, T, V)
                loss = sequence_loss(logits, batch.tgt_out, self.settings.label_smoothing)
                self.scaler.scale(loss * (weight * world.size / global_tokens)).backward()
            local_loss += weight * float(loss.detach())
        (total,) = world.sum(local_loss)
        if not math.isfinite(total):
            raise TrainingError(
                f"the loss became {total} at step {step} (training.lr={self.optimizer.param_groups[0]['lr']:g}); "
                "stopped without saving, so last.pt and best.pt hold the last good weights: lower training.lr "
                "or training.clip_norm and rerun to resume"
            )
        self._step()
        return total, global_tokens

    def _step(self) -> None:
        """Clip the (averaged) gradient norm, step the optimizer (through the fp16 scaler)."""
        if self.settings.clip_norm > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.settings.clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()


class Loop:
    """The training loop proper: updates, log rows, validations, checkpoints, stopping."""

    def __init__(
        self,
        model: Seq2Seq,
        update: Update,
        state: TrainState,
        train: EncodedCorpus,
        validator: Validator,
        checkpointer: Checkpointer,
        reporter: Reporter,
        max_minutes: float,
    ) -> None:
        self.model, self.update, self.state, self.train = model, update, state, train
        self.optimizer, self.scheduler, self.settings = update.optimizer, update.scheduler, update.settings
        self.validator, self.checkpointer, self.reporter, self.world = validator, checkpointer, reporter, update.world
        self.max_minutes = max_minutes
        self.meter = IntervalMeter()
        self.recent: dict[str, Any] = {}  # last logged training loss and speed, repeated in validation rows
        self.last_validated_step = -1
        self.interrupted = 0  # the number of the signal that asked to stop
        self.updates = 0  # optimizer updates made by this process

    def save_last(self) -> None:
        """Everything needed to resume, in ``last.pt`` (every process's random state is gathered first)."""
        states = self.world.gather(random_state(self.update.device))
        if self.world.is_main:
            training = {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": states[0],
                "rng_by_rank": states,
            }
            if self.update.scaler.is_enabled():
                training["scaler"] = self.update.scaler.state_dict()
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
        self.clock = time.monotonic()
        stop = Stop("finished", finished=True) if state.finished else stop_decision(state, settings, self.max_minutes)
        while stop is None and state.epoch < settings.max_epochs:
            batches = token_batches(self.train, settings.batch_tokens, settings.seed, state.epoch)
            with self.reporter.epoch_bar(len(batches), state.batch_in_epoch, state.epoch) as bar:
                while stop is None and state.batch_in_epoch < len(batches):
                    stop = self._update(batches[state.batch_in_epoch], bar)
            if stop is None:
                state.epoch += 1
                state.batch_in_epoch = 0
        if stop is None:
            if self.last_validated_step != state.step and self.updates:
                self.validate_and_save(scheduled=False)
            stop = Stop(f"training.max_epochs={settings.max_epochs} reached", finished=True)
        return stop

    def _update(self, indices: list[int], bar: Any) -> Stop | None:
        """One optimizer update on the batch ``indices``, then logging, validation and the stop decision."""
        state = self.state
        loss, tokens = self.update(self.train, indices, state.step + 1)
        state.step += 1
        state.batch_in_epoch += 1
        self.updates += 1
        self._count_time()
        step_on_update(self.scheduler, budget_progress(state, self.settings, self.max_minutes))
        self.meter.add(loss, tokens)
        bar.update(1)
        if state.step % self.settings.log_every == 0:
            self._log_interval(bar)
        (interrupted,) = self.world.any(bool(self.interrupted))
        if interrupted:
            return INTERRUPTED
        stop = stop_decision(state, self.settings, self.max_minutes)
        if validation_due(state.step, self.settings, stop):
            early = self.validate_and_save(scheduled=state.step % self.settings.valid_every == 0, bar=bar)
            self.meter.restart()  # validation time is not training time
            stop = early or stop
        elif self.settings.save_every and state.step % self.settings.save_every == 0:
            self.save_last()  # bounds what a kill costs
        return stop

    def _count_time(self) -> None:
        """Add the wall time since the last update (validations included) to the run's training time.

        Every process takes the largest count, so that all stop and decay alike.
        """
        now = time.monotonic()
        (self.state.train_seconds,) = self.world.maximum(self.state.train_seconds + now - self.clock)
        self.clock = now

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
        scores = self.world.on_main(lambda: self.validator(self.model))
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
