"""Training throughput (target tokens/s) of a config on its real training batches.

    python benchmarks/train_speed.py [--config configs/quickstart.yaml] [--steps 60] [--threads 2]
    python benchmarks/train_speed.py --config configs/luong_general.yaml --steps 4 --warmup 0 --emulated-bf16

Runs real optimisation steps (forward, loss, backward, clip, Adam) on the first
batches of epoch 1, after a few warm-up steps, and prints one JSON line. Run it on
an idle machine: a busy second core makes two OpenMP threads many times slower.
Like the ``attnmt`` command, it keeps at most 16 oneDNN primitives in each of
torch's two caches unless ``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` or
``LRU_CACHE_CAPACITY`` is set (``=1024`` is the default of each).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import torch

from attnmt.cli import PRIMITIVE_CACHES, bound_primitive_caches
from attnmt.config import TrainingConfig, load_config
from attnmt.data import Batch, filter_pairs, make_batch, read_parallel, token_batches
from attnmt.device import autocast, choose_precision
from attnmt.loss import sequence_loss
from attnmt.model import Seq2Seq
from attnmt.tokenizer import Tokenizer

ROOT = Path(__file__).parent.parent


def update(
    model: Seq2Seq, optimizer: torch.optim.Optimizer, batch: Batch, dtype: torch.dtype | None, training: TrainingConfig
) -> None:
    """One real optimisation step on ``batch``: forward under autocast, loss, backward, clipping, the optimizer."""
    with autocast(torch.device("cpu"), dtype):
        logits = model(batch.src, batch.src_lengths, batch.tgt_in)
    loss = sequence_loss(logits, batch.tgt_out, training.label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    (loss / batch.target_tokens).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), training.clip_norm)
    optimizer.step()


def main() -> None:
    bound_primitive_caches()  # as the attnmt command does, before torch builds a oneDNN primitive
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "quickstart.yaml"))
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], help="config override, e.g. model.attention=dot")
    parser.add_argument(
        "--emulated-bf16",
        action="store_true",
        help="bf16 autocast even on a CPU without native bf16 (very slow there): for peak memory, not speed",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(args.config, args.set)
    pairs = read_parallel(config.data.train_src, config.data.train_tgt)
    with tempfile.TemporaryDirectory() as directory:
        tokenizer = Tokenizer.train(
            pairs,
            Path(directory),
            config.data.vocab_size,
            config.data.tokenizer,
            True,
            target_vocab=config.data.target_vocab,
        )
    corpus = filter_pairs(
        tokenizer.encode_src([p[0] for p in pairs]), tokenizer.encode_tgt([p[1] for p in pairs]), config.data.max_length
    )
    torch.manual_seed(config.training.seed)
    model = Seq2Seq.from_config(
        config.model, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size, config.data.max_length
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=config.training.lr)
    dtype = torch.bfloat16 if args.emulated_bf16 else choose_precision(config.training.precision, torch.device("cpu"))
    batches = token_batches(corpus, config.training.batch_tokens, config.training.seed, 0)
    model.train()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # data, tokenizer and model
    tokens, started = 0, time.perf_counter()
    for index, indices in enumerate(batches[: args.warmup + args.steps]):
        if index == args.warmup:
            tokens, started = 0, time.perf_counter()
        batch = make_batch([corpus.src[i] for i in indices], [corpus.tgt[i] for i in indices])
        update(model, optimizer, batch, dtype, config.training)
        tokens += batch.target_tokens
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "config": Path(args.config).name,
                "overrides": args.set,
                "attention": config.model.attention,
                "decoder": config.model.decoder,
                "input_feeding": config.model.input_feeding,
                "parameters": sum(p.numel() for p in model.parameters()),
                "precision": str(dtype or "fp32"),
                "threads": args.threads,
                "steps": args.steps,
                "tgt_tokens_per_s": round(tokens / seconds, 1),
                "ms_per_step": round(1000 * seconds / args.steps, 1),
                "peak_rss_before_steps_mb": round(rss_before, 1),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "primitive_caches": {name: os.environ[name] for name, _ in PRIMITIVE_CACHES},
            }
        )
    )


if __name__ == "__main__":
    main()
