"""attnmt's Dropout against nn.Dropout: the same masks, in less time? Whole training updates, in one process.

    python benchmarks/dropout_speed.py [--config configs/luong_general.yaml] [--steps 60] [--precision bf16|fp32]

Runs real updates (forward, loss, backward, clip, Adam) of the config's model on
its first training batches. Every batch is run twice, once with each dropout,
taking turns at going first; before each run torch's generator is set to the
same state, so both draw the same random numbers. Prints the median update
time of each, their ratio, whether this torch's CPU ``bernoulli_`` and float64
``torch.rand`` give the same masks here (``dropout.same_draws``; where they do
not, attnmt's Dropout is nn.Dropout), and the time of one dropout call of each
kind on a (57, 35, 512) tensor.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from train_speed import update as train_update  # this folder's script: the same update it times

from attnmt.cli import bound_primitive_caches
from attnmt.config import load_config
from attnmt.data import filter_pairs, make_batch, read_parallel, token_batches
from attnmt.device import choose_precision
from attnmt.dropout import Dropout, same_draws
from attnmt.model import Seq2Seq
from attnmt.tokenizer import Tokenizer

ROOT = Path(__file__).parent.parent
FORWARDS = {"nn.Dropout": nn.Dropout.forward, "attnmt Dropout": Dropout.forward}


def call_ms(forward, inputs: torch.Tensor, repeat: int = 30) -> float:
    """Median milliseconds of one training-mode dropout call through ``forward``."""
    module = Dropout(0.3).train()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        forward(module, inputs)
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def prepare(config_path: str, precision: str, threads: int) -> tuple[Any, Seq2Seq, Any, Any, torch.dtype | None]:
    """The config, a fresh model of it, its Adam, its tokenized training corpus, and the autocast dtype."""
    torch.set_num_threads(threads)
    config = load_config(config_path, [f"training.precision={precision}"])
    pairs = read_parallel(config.data.train_src, config.data.train_tgt)
    with tempfile.TemporaryDirectory() as directory:
        data = config.data
        tokenizer = Tokenizer.train(
            pairs, Path(directory), data.vocab_size, data.tokenizer, True, target_vocab=data.target_vocab
        )
    src, tgt = tokenizer.encode_src([p[0] for p in pairs]), tokenizer.encode_tgt([p[1] for p in pairs])
    corpus = filter_pairs(src, tgt, data.max_length)
    torch.manual_seed(config.training.seed)
    model = Seq2Seq.from_config(config.model, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size, data.max_length)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.training.lr, fused=True)
    return config, model.train(), optimizer, corpus, choose_precision(config.training.precision, torch.device("cpu"))


def alternate(
    variants: dict[str, Callable[[], None]], prepared: tuple, steps: int, warmup: int = 3
) -> dict[str, list[float]]:
    """Seconds of each real update, every batch run once per variant (``variants[name]()`` switches to it),
    the variants taking turns at going first, torch's generator set to the same state before each."""
    config, model, optimizer, corpus, dtype = prepared
    batches = token_batches(corpus, config.training.batch_tokens, config.training.seed, 0)[: warmup + steps]
    times: dict[str, list[float]] = {name: [] for name in variants}
    for index, indices in enumerate(batches):
        batch = make_batch([corpus.src[i] for i in indices], [corpus.tgt[i] for i in indices])
        state = torch.get_rng_state()
        for name in list(variants)[:: 1 if index % 2 else -1]:
            variants[name]()
            torch.set_rng_state(state)
            started = time.perf_counter()
            train_update(model, optimizer, batch, dtype, config.training)
            if index >= warmup:
                times[name].append(time.perf_counter() - started)
    return times


def ab_parser(description: str | None) -> argparse.ArgumentParser:
    """The options of an alternating comparison: --config (the matched model's), --steps, --threads."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "luong_general.yaml"))
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    return parser


def main() -> None:
    bound_primitive_caches()
    parser = ab_parser(__doc__)
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    prepared = prepare(args.config, args.precision, args.threads)
    dtype = prepared[-1]

    def use(name: str) -> Callable[[], None]:
        def switch() -> None:
            Dropout.forward = FORWARDS[name]  # type: ignore[method-assign]

        return switch

    times = alternate({name: use(name) for name in FORWARDS}, prepared, args.steps)
    Dropout.forward = FORWARDS["attnmt Dropout"]  # type: ignore[method-assign]
    inputs = torch.randn(57, 35, 512, dtype=dtype or torch.float32)
    medians = {name: round(1000 * statistics.median(seconds), 1) for name, seconds in times.items()}
    report = {
        "config": Path(args.config).name,
        "precision": str(dtype or "fp32"),
        "threads": args.threads,
        "updates_each": args.steps,
        "same_draws": same_draws(),
        "median_update_ms": medians,
        "nn_over_attnmt": round(medians["nn.Dropout"] / medians["attnmt Dropout"], 3),
        "one_call_ms_57x35x512": {name: round(call_ms(forward, inputs), 2) for name, forward in FORWARDS.items()},
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
