"""Training: set up a run, resume it if it was stopped, run the loop, save what it reached.

``train(config, out_dir)`` does the whole job and can be rerun on the same
``out_dir`` to resume: model, optimizer, scheduler, position inside the epoch and
random number generators all come back from ``last.pt`` (``resume.py``), so the
resumed run continues the very same run. The directory holds ``config.yaml``, the
sentencepiece model(s), ``best.pt`` (best validation BLEU), ``last.pt`` and
``train_log.jsonl`` (one JSON object per logged step and per validation).

Under torchrun every process runs ``train``; the main one alone owns the run
directory (lock, config, tokenizer, checkpoints, log) and hands the others what
they need through the ``World``: the tokenizer, and on resume the saved state.
The loop itself is in ``loop.py``.
"""

from __future__ import annotations

import os
import random
import signal
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attnmt import checkpoint
from attnmt.checkpoint import Checkpointer
from attnmt.config import Config, save_config
from attnmt.data import EncodedCorpus, prepare_data
from attnmt.device import autocast, choose_precision, pick_device, precision_name
from attnmt.distributed import LAUNCHED, World, init_world
from attnmt.errors import ConfigError, Interrupted, ModelDirError, TrainingError
from attnmt.files import remove_stale_temporaries
from attnmt.loop import INTERRUPTED, Loop, Stop, Update
from attnmt.model import Seq2Seq
from attnmt.products import choose_onednn, onednn_products
from attnmt.reporting import Reporter
from attnmt.resume import TrainState, check_resumable, restore_random_state
from attnmt.rundir import RunLock, check_out_dir, truncate_log
from attnmt.schedule import make_scheduler
from attnmt.tokenizer import Tokenizer
from attnmt.validation import Validator

#: What ``last.pt`` must hold besides the weights to resume a run.
TRAINING_ENTRIES = ("optimizer", "scheduler", "train_state", "rng")


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    best_bleu: float
    stopped_because: str
    target_tokens_per_s: float


class Trainer:
    """One training run in ``out_dir`` (one process of it, under torchrun)."""

    def __init__(
        self, config: Config, out_dir: Path, max_minutes: float, progress: bool = True, world: World | None = None
    ) -> None:
        self.config = config
        self.out_dir = out_dir
        self.max_minutes = max_minutes or config.training.max_minutes
        if config.training.scheduler == "cosine" and not (self.max_minutes or config.training.max_steps):
            raise ConfigError(
                "training.scheduler: cosine decays over the training budget: set training.max_steps or "
                "training.max_minutes (or --max-minutes)"
            )
        self.world = world or init_world(config.training.device, config.training.threads)
        self.reporter = Reporter(out_dir / "train_log.jsonl", progress, self.world.is_main)
        self.device = pick_device(config.training.device, self.world.local_rank)
        self.autocast_dtype = choose_precision(config.training.precision, self.device)
        # fp32 products on oneDNN where it is the faster library; autocast's products are there already
        self.onednn = choose_onednn(config.training.matmul, self.device) and self.autocast_dtype is None

    def autocast(self) -> AbstractContextManager[object]:
        return autocast(self.device, self.autocast_dtype)

    def run(self) -> TrainResult:
        with ExitStack() as held:
            held.enter_context(onednn_products(self.onednn))
            resuming = self.world.on_main(lambda: self._open_run_directory(held))
            torch.manual_seed(self.config.training.seed + self.world.rank)
            random.seed(self.config.training.seed + self.world.rank)
            tokenizer, train, valid = prepare_data(self.config, self._tokenizer_for(resuming), self.reporter.message)
            loop = self._build_loop(tokenizer, train, valid, resuming)
            stop = loop.run()
            return self._finish(loop, stop)

    def _open_run_directory(self, held: ExitStack) -> bool:
        """Main process: check and lock ``out_dir``, clean it, save the config; True if resuming."""
        config, out_dir = self.config, self.out_dir
        check_out_dir(out_dir)
        held.enter_context(RunLock(out_dir))
        remove_stale_temporaries(out_dir)
        resuming = (out_dir / "last.pt").is_file()
        if resuming:
            check_resumable(config, out_dir)
        else:
            truncate_log(self.reporter.log_path, 0)  # rows of an attempt killed before its first save
        save_config(config, out_dir / "config.yaml")  # marks the directory as an attnmt run
        return resuming

    def _tokenizer_for(self, resuming: bool) -> Any:
        """Train (or, resuming, load) the tokenizer in the main process; every process gets a copy."""
        d, out_dir = self.config.data, self.out_dir

        def make(pairs: list[tuple[str, str]]) -> dict[str, bytes]:
            if resuming and Tokenizer.exists(out_dir):
                tokenizer = Tokenizer.load(out_dir)
            else:
                self.reporter.message(f"training {d.tokenizer} sentencepiece model(s), vocab {d.vocab_size}")
                tokenizer = Tokenizer.train(
                    pairs, out_dir, d.vocab_size, d.tokenizer, d.joint_vocab, target_vocab=d.target_vocab
                )
            return tokenizer.model_files(out_dir)

        return lambda pairs: Tokenizer.from_model_files(self.world.on_main(lambda: make(pairs)))

    def _build_loop(
        self, tokenizer: Tokenizer, train: EncodedCorpus, valid: list[tuple[str, str]], resuming: bool
    ) -> Loop:
        config = self.config
        max_source_length = config.data.max_length
        model = Seq2Seq.from_config(config.model, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size, max_source_length)
        model.to(self.device)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.training.lr, fused=True)  # one kernel for all
        scheduler = make_scheduler(optimizer, config.training)
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.autocast_dtype == torch.float16)
        state = self._resume(model, optimizer, scheduler, scaler) if resuming else TrainState()
        network = self._distribute(model)
        self._describe(model)
        sizes = {
            "src_vocab_size": tokenizer.src_vocab_size,
            "tgt_vocab_size": tokenizer.tgt_vocab_size,
            "max_source_length": max_source_length,
        }
        update = Update(network, optimizer, scheduler, scaler, config.training, self.world, self.device, self.autocast)
        validator = Validator(tokenizer, valid, config, self.device, self.autocast)
        checkpointer = Checkpointer(self.out_dir, config, sizes, self.device)
        return Loop(model, update, state, train, validator, checkpointer, self.reporter, self.max_minutes)

    def _distribute(self, model: Seq2Seq) -> nn.Module:
        """The model as DistributedDataParallel when several processes train (gradients averaged)."""
        if self.world.size == 1:
            return model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    def _describe(self, model: Seq2Seq) -> None:
        config, world = self.config.model, self.world
        parameters = sum(p.numel() for p in model.parameters())
        processes = f"{world.size} processes x " if world.size > 1 else ""
        self.reporter.message(
            f"model: {config.rnn} {config.decoder} decoder, {model.attention_name} attention, "
            f"{parameters / 1e6:.1f}M parameters; device {self.device}, "
            f"precision {precision_name(self.autocast_dtype)}{' (products on oneDNN)' if self.onednn else ''}, "
            f"{processes}{torch.get_num_threads()} threads"
        )

    def _resume(self, model: Seq2Seq, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any) -> TrainState:
        """Load ``last.pt`` (main process) and put every saved state back, in every process."""
        path = self.out_dir / "last.pt"
        payload = self.world.on_main(lambda: self._read_last(path))
        state = TrainState.from_dict(payload["train_state"], str(path))
        try:
            model.load_state_dict(checkpoint.model_state(payload))
            optimizer.load_state_dict(payload["optimizer"])
            scheduler.load_state_dict(payload["scheduler"])
            if "scaler" in payload and scaler.is_enabled():
                scaler.load_state_dict(payload["scaler"])
        except (RuntimeError, ValueError, KeyError, TypeError) as error:
            raise ModelDirError(f"{path}: does not fit this run ({type(error).__name__}); use a new --out") from None
        self._restore_random_state(payload, state)
        self.reporter.message(
            f"resuming {self.out_dir} at step {state.step} (epoch {state.epoch + 1}, batch {state.batch_in_epoch})"
        )
        return state

    def _read_last(self, path: Path) -> dict[str, Any]:
        payload = checkpoint.load(path)
        missing = [key for key in TRAINING_ENTRIES if key not in payload]
        if missing:
            raise ModelDirError(
                f"{path}: holds no training state ({', '.join(missing)} missing: a copy of best.pt?); "
                "put the right last.pt back, or delete it to start training over"
            )
        checkpoint.check_payload(payload, path)
        state = TrainState.from_dict(payload["train_state"], str(path))
        dropped = truncate_log(self.reporter.log_path, state.step)
        if dropped:
            self.reporter.message(f"dropped {dropped} log rows after step {state.step}: they will be replayed")
        return payload

    def _restore_random_state(self, payload: dict[str, Any], state: TrainState) -> None:
        """Each process's saved generators; with another number of processes, fresh ones per rank."""
        by_rank = payload.get("rng_by_rank")
        if isinstance(by_rank, list) and len(by_rank) == self.world.size:
            restore_random_state(by_rank[self.world.rank], self.device)
        elif self.world.size == 1:
            restore_random_state(payload["rng"], self.device)
        else:
            seed = self.config.training.seed + 1000 * state.step + self.world.rank
            torch.manual_seed(seed)
            random.seed(seed)

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
    trainer = Trainer(config, Path(out_dir), max_minutes, progress)
    finished = False
    try:
        result = trainer.run()
        finished = True
        return result
    except RuntimeError as error:
        if trainer.world.size == 1:
            raise
        if os.environ.get(LAUNCHED):
            raise SystemExit(1) from None  # `attnmt train --nproc` names the process that failed
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        message = f"process {trainer.world.rank} lost contact with the other training processes ({first})"
        raise TrainingError(message) from None
    finally:
        trainer.world.close(finished)
