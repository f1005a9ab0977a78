"""Training: teacher forcing, label-smoothed cross-entropy, Adam, validation, checkpoints.

``train(config, out_dir)`` does the whole job and can be rerun on the same
``out_dir`` to resume: model, optimizer, scheduler, position inside the epoch and
random number generators all come back from ``last.pt``, so the resumed run
continues the very same run. The directory holds ``config.yaml``, the
sentencepiece model(s), ``best.pt`` (best validation BLEU), ``last.pt`` and
``train_log.jsonl`` (one JSON object per logged step and per validation).
"""

from __future__ import annotations

import json
import math
import random
import signal
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from attnmt import checkpoint
from attnmt.config import Config, config_from_dict, read_yaml, save_config
from attnmt.data import Batch, EncodedCorpus, filter_pairs, make_batch, read_parallel, token_batches
from attnmt.device import choose_precision, pick_device
from attnmt.errors import ConfigError
from attnmt.loss import label_smoothed_nll
from attnmt.metrics import corpus_scores
from attnmt.model import Seq2Seq
from attnmt.tokenizer import Tokenizer
from attnmt.translator import search_hypotheses
from attnmt.vocab import PAD_ID


def sequence_loss(logits: torch.Tensor, tgt_out: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Summed label-smoothed cross-entropy over all real target tokens (B, T, V) vs (B, T)."""
    return label_smoothed_nll(logits.reshape(-1, logits.size(-1)), tgt_out.reshape(-1), label_smoothing, PAD_ID)


def make_scheduler(optimizer: torch.optim.Optimizer, config: Config) -> Any:
    """Plateau decay on validation loss, linear warmup then 1/sqrt decay, or constant."""
    t = config.training
    if t.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=t.decay_factor, patience=t.patience, min_lr=t.min_lr
        )
    if t.scheduler == "warmup_decay":
        warmup = max(1, t.warmup_steps)
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min((step + 1) / warmup, math.sqrt(warmup / max(step + 1, warmup)))
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


@dataclass
class TrainState:
    """Counters saved in ``last.pt`` so that a rerun resumes exactly."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_bleu: float = -1.0
    best_scheduled_bleu: float = -1.0
    bad_validations: int = 0
    finished: bool = False


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    best_bleu: float
    stopped_because: str
    target_tokens_per_s: float


def prepare_data(config: Config, out_dir: Path, resuming: bool, log: Any) -> tuple[Tokenizer, EncodedCorpus, Any]:
    """Read the corpora, train (or load) the tokenizer, encode and filter."""
    d = config.data
    if not (d.train_tsv or (d.train_src and d.train_tgt)):
        raise ConfigError("data: give train_src and train_tgt (or train_tsv)")
    if not (d.valid_tsv or (d.valid_src and d.valid_tgt)):
        raise ConfigError("data: give valid_src and valid_tgt (or valid_tsv)")
    train_pairs = read_parallel(d.train_src, d.train_tgt, d.train_tsv)
    valid_pairs = read_parallel(d.valid_src, d.valid_tgt, d.valid_tsv)
    if resuming and Tokenizer.exists(out_dir):
        tokenizer = Tokenizer.load(out_dir)
    else:
        log(f"training {d.tokenizer} sentencepiece model(s), vocab {d.vocab_size}, joint={d.joint_vocab}")
        kept = [p for p in train_pairs if p[0] and p[1]]
        tokenizer = Tokenizer.train(kept, out_dir, d.vocab_size, d.tokenizer, d.joint_vocab, config.training.seed)
    train = filter_pairs(
        tokenizer.encode_src([p[0] for p in train_pairs]),
        tokenizer.encode_tgt([p[1] for p in train_pairs]),
        d.max_length,
    )
    if len(train) == 0:
        raise ConfigError(f"data: no training pair is left after filtering by data.max_length={d.max_length}")
    valid = [p for p in valid_pairs if p[0]]
    return tokenizer, train, valid


class Trainer:
    """One training run in ``out_dir``; ``run`` trains until a stopping rule fires."""

    def __init__(self, config: Config, out_dir: Path, max_minutes: float, progress: bool = True) -> None:
        self.config = config
        self.out_dir = out_dir
        self.max_minutes = max_minutes or config.training.max_minutes
        self.progress = progress
        self.device = pick_device(config.training.device)
        self.autocast_dtype = choose_precision(config.training.precision, self.device)
        self.log_path = out_dir / "train_log.jsonl"

    def log(self, message: str) -> None:
        print(f"[attnmt] {message}", file=sys.stderr, flush=True)

    def write_log(self, row: dict[str, Any]) -> None:
        with self.log_path.open("a", encoding="utf-8") as stream:
            stream.write(json.dumps(row) + "\n")

    def autocast(self) -> Any:
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def run(self) -> TrainResult:
        config, out_dir = self.config, self.out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        last_path = out_dir / "last.pt"
        resuming = last_path.is_file()
        if resuming:
            check_resumable(config, out_dir)
        torch.manual_seed(config.training.seed)
        random.seed(config.training.seed)
        tokenizer, train, valid = prepare_data(config, out_dir, resuming, self.log)
        save_config(config, out_dir / "config.yaml")
        self.log(
            f"{len(train)} training pairs kept, {train.dropped_empty} empty and {train.dropped_long} longer than "
            f"{config.data.max_length} tokens skipped; {len(valid)} validation pairs"
        )
        max_source_length = config.data.max_length
        model = Seq2Seq.from_config(config.model, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size, max_source_length)
        model.to(self.device)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.training.lr)
        scheduler = make_scheduler(optimizer, config)
        state = TrainState()
        if resuming:
            payload = checkpoint.load(last_path)
            model.load_state_dict(payload["model"])
            optimizer.load_state_dict(payload["optimizer"])
            scheduler.load_state_dict(payload["scheduler"])
            state = TrainState(**payload["train_state"])
            torch.set_rng_state(payload["rng"]["torch"])
            random.setstate(payload["rng"]["python"])
            self.log(f"resuming {out_dir} at step {state.step} (epoch {state.epoch + 1}, batch {state.batch_in_epoch})")
        parameters = sum(p.numel() for p in model.parameters())
        self.log(
            f"model: {config.model.rnn} {config.model.decoder} decoder, {model.attention_name} attention, "
            f"{parameters / 1e6:.1f}M parameters; device {self.device}, "
            f"precision {self.autocast_dtype or 'fp32'}, {torch.get_num_threads()} threads"
        )
        sizes = {
            "src_vocab_size": tokenizer.src_vocab_size,
            "tgt_vocab_size": tokenizer.tgt_vocab_size,
            "max_source_length": max_source_length,
        }
        loop = _Loop(self, model, optimizer, scheduler, state, tokenizer, train, valid, sizes)
        return loop.run()


def check_resumable(config: Config, out_dir: Path) -> None:
    """A resumed run must keep the data and model of the saved one (training may change)."""
    saved_path = out_dir / "config.yaml"
    if not saved_path.is_file():
        return
    saved = config_from_dict(read_yaml(saved_path), origin=str(saved_path))
    for section in ("data", "model"):
        old, new = getattr(saved, section), getattr(config, section)
        for key, value in vars(new).items():
            if getattr(old, key) != value:
                raise ConfigError(
                    f"{section}.{key}: {out_dir} was trained with {getattr(old, key)!r}, not {value!r}; "
                    f"use a new --out directory or the saved config"
                )


class _Loop:
    """The training loop proper (kept apart from set-up so each part reads on its own)."""

    def __init__(
        self,
        trainer: Trainer,
        model: Seq2Seq,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        state: TrainState,
        tokenizer: Tokenizer,
        train: EncodedCorpus,
        valid: list[tuple[str, str]],
        sizes: dict[str, int],
    ) -> None:
        self.t = trainer
        self.model, self.optimizer, self.scheduler, self.state = model, optimizer, scheduler, state
        self.tokenizer, self.train, self.valid, self.sizes = tokenizer, train, valid, sizes
        valid_src = tokenizer.encode_src([p[0] for p in valid])
        valid_tgt = tokenizer.encode_tgt([p[1] for p in valid])
        self.valid_ids = valid_src
        self.valid_loss_corpus = filter_pairs(valid_src, valid_tgt, trainer.config.data.max_length)
        self.recent: dict[str, float] = {}  # last logged training loss and speed, repeated in validation rows
        self.last_validated_step = -1

    def train_step(self, batch: Batch) -> float:
        """Forward, label-smoothed loss averaged over target tokens, backward, clip, update."""
        config = self.t.config.training
        self.model.train()
        with self.t.autocast():
            logits = self.model(batch.src, batch.src_lengths, batch.tgt_in)  # (B, T, V)
        loss = sequence_loss(logits, batch.tgt_out, config.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        (loss / batch.target_tokens).backward()
        if config.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.clip_norm)
        self.optimizer.step()
        if not isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step()
        return float(loss.detach())

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Validation loss and perplexity (teacher forcing) and greedy BLEU."""
        self.model.eval()
        total_loss, total_tokens = 0.0, 0
        corpus = self.valid_loss_corpus
        for indices in token_batches(corpus, self.t.config.training.batch_tokens, seed=0, epoch=0):
            batch = make_batch([corpus.src[i] for i in indices], [corpus.tgt[i] for i in indices]).to(self.t.device)
            with self.t.autocast():
                logits = self.model(batch.src, batch.src_lengths, batch.tgt_in)
            total_loss += float(sequence_loss(logits, batch.tgt_out, 0.0))
            total_tokens += batch.target_tokens
        hyps = search_hypotheses(self.model, self.valid_ids, self.t.config, self.t.device, beam=1, batch_size=128)
        outputs = [self.tokenizer.decode_tgt(h[0].tokens) for h in hyps]
        scores = corpus_scores(outputs, [p[1] for p in self.valid])
        valid_loss = total_loss / max(1, total_tokens)
        return {"valid_loss": valid_loss, "valid_ppl": math.exp(min(valid_loss, 50)), "valid_bleu": scores["bleu"]}

    def save(self, name: str, with_training_state: bool) -> None:
        payload: dict[str, Any] = {
            "model": self.model.state_dict(),
            "config": self.t.config.to_dict(),
            "step": self.state.step,
            **self.sizes,
        }
        if with_training_state:
            payload.update(
                optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict(),
                train_state=vars(self.state).copy(),
                rng={"torch": torch.get_rng_state(), "python": random.getstate()},
            )
        checkpoint.save_atomic(payload, self.t.out_dir / name)

    def _on_interrupt(self, signum: int, frame: Any) -> None:
        """First Ctrl-C: finish the current step, save last.pt, stop. A second one stops at once."""
        self.interrupted = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def run(self) -> TrainResult:
        self.interrupted = False
        in_main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, self._on_interrupt) if in_main_thread else None
        try:
            return self._run()
        finally:
            if in_main_thread:
                signal.signal(signal.SIGINT, previous)

    def _run(self) -> TrainResult:
        from tqdm import tqdm

        config = self.t.config.training
        state = self.state
        started = time.monotonic()
        budget = self.t.max_minutes * 60 if self.t.max_minutes > 0 else math.inf
        interval_loss, interval_tokens, interval_start = 0.0, 0, time.monotonic()
        total_tokens, total_time = 0, 0.0
        stopped = "finished" if state.finished else ""
        first_row = True
        while not stopped and state.epoch < config.max_epochs:
            batches = token_batches(self.train, config.batch_tokens, config.seed, state.epoch)
            bar = tqdm(
                total=len(batches),
                initial=state.batch_in_epoch,
                desc=f"epoch {state.epoch + 1}",
                disable=not self.t.progress,
                unit="batch",
                dynamic_ncols=True,
                file=sys.stderr,
            )
            try:
                while state.batch_in_epoch < len(batches):
                    indices = batches[state.batch_in_epoch]
                    batch = make_batch([self.train.src[i] for i in indices], [self.train.tgt[i] for i in indices])
                    loss = self.train_step(batch.to(self.t.device))
                    state.step += 1
                    state.batch_in_epoch += 1
                    interval_loss += loss
                    interval_tokens += batch.target_tokens
                    bar.update(1)
                    if state.step % config.log_every == 0:
                        seconds = time.monotonic() - interval_start
                        row = {
                            "step": state.step,
                            "epoch": state.epoch + 1,
                            "loss": round(interval_loss / max(1, interval_tokens), 4),
                            "lr": self.optimizer.param_groups[0]["lr"],
                            "tgt_tokens_per_s": round(interval_tokens / max(seconds, 1e-9), 1),
                            "elapsed_s": round(time.monotonic() - started, 1),
                        }
                        if first_row:
                            row.update(
                                train_pairs=len(self.train),
                                dropped_empty=self.train.dropped_empty,
                                dropped_long=self.train.dropped_long,
                            )
                            first_row = False
                        self.t.write_log(row)
                        self.recent = {"loss": row["loss"], "tgt_tokens_per_s": row["tgt_tokens_per_s"]}
                        bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{row['tgt_tokens_per_s']:.0f}")
                        total_tokens += interval_tokens
                        total_time += seconds
                        interval_loss, interval_tokens, interval_start = 0.0, 0, time.monotonic()
                    out_of_time = time.monotonic() - started >= budget
                    at_max_steps = config.max_steps > 0 and state.step >= config.max_steps
                    if self.interrupted:
                        stopped = "interrupted"
                        break
                    scheduled = state.step % config.valid_every == 0
                    if scheduled or out_of_time or at_max_steps:
                        stopped = self.validate_and_save(bar, scheduled)
                        interval_start = time.monotonic()  # validation time is not training time
                    if not stopped and out_of_time:
                        stopped = f"time budget of {self.t.max_minutes:g} minutes reached"
                    if not stopped and at_max_steps:
                        stopped = f"training.max_steps={config.max_steps} reached"
                    if stopped:
                        break
            finally:
                bar.close()
            if not stopped:
                state.epoch += 1
                state.batch_in_epoch = 0
        if stopped == "interrupted":
            self.save("last.pt", with_training_state=True)
            self.t.log(f"interrupted at step {state.step}; last.pt saved, rerun the same command to resume")
            raise KeyboardInterrupt
        if not stopped:
            stopped = f"training.max_epochs={config.max_epochs} reached"
            if self.last_validated_step != state.step:
                self.validate_and_save(None, scheduled=False)
        if "early stopping" in stopped or "max_epochs" in stopped:
            state.finished = True
        self.save("last.pt", with_training_state=True)
        if not (self.t.out_dir / "best.pt").is_file():
            self.save("best.pt", with_training_state=False)
        self.t.log(f"stopped: {stopped}; best validation BLEU {state.best_bleu:.2f}")
        return TrainResult(
            self.t.out_dir, state.step, state.best_bleu, stopped, total_tokens / total_time if total_time else 0.0
        )

    def validate_and_save(self, bar: Any, scheduled: bool) -> str:
        """Validate, log, save best/last; return a stop reason or ''.

        Only ``scheduled`` validations (every ``valid_every`` steps) step the plateau
        scheduler and count for early stopping; the extra validation when a budget
        stops the run only updates ``best.pt``, so that a resumed run follows the
        same learning-rate schedule as one that never stopped.
        """
        config = self.t.config.training
        state = self.state
        scores = self.validate()
        self.last_validated_step = state.step
        if scheduled and isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(scores["valid_loss"])
        row = {
            "step": state.step,
            "epoch": state.epoch + 1,
            "loss": self.recent.get("loss"),
            "lr": self.optimizer.param_groups[0]["lr"],
            "tgt_tokens_per_s": self.recent.get("tgt_tokens_per_s"),
            **{k: round(v, 4) for k, v in scores.items()},
        }
        self.t.write_log(row)
        message = (
            f"[attnmt] step {state.step}: valid loss {scores['valid_loss']:.3f}, ppl {scores['valid_ppl']:.2f}, "
            f"greedy BLEU {scores['valid_bleu']:.2f}"
        )
        if bar is not None:
            bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)
        stop = ""
        if scores["valid_bleu"] > state.best_bleu:
            state.best_bleu = scores["valid_bleu"]
            self.save("best.pt", with_training_state=False)
        if scheduled and scores["valid_bleu"] > state.best_scheduled_bleu:
            state.best_scheduled_bleu = scores["valid_bleu"]
            state.bad_validations = 0
        elif scheduled:
            state.bad_validations += 1
            if config.early_stopping > 0 and state.bad_validations >= config.early_stopping:
                stop = f"early stopping after {state.bad_validations} validations without a better BLEU"
        self.save("last.pt", with_training_state=True)
        return stop


def train(config: Config, out_dir: str | Path, max_minutes: float = 0.0, progress: bool = True) -> TrainResult:
    """Train (or resume training) a model in ``out_dir``; see the module docstring."""
    return Trainer(config, Path(out_dir), max_minutes, progress).run()
