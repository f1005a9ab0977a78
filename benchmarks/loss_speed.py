"""Training-step throughput with torch's cross-entropy vs attnmt's in-place loss.

    python benchmarks/loss_speed.py [--steps 60] [--threads 2]

Whole training steps (forward, loss, backward, Adam) of the quickstart model on
real Multi30k batches, the two losses alternating step by step in one process, so
that the machine's drift and noise hit both alike. Prints target tokens/s of each.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from attnmt.config import load_config
from attnmt.data import filter_pairs, make_batch, read_parallel, token_batches
from attnmt.loss import label_smoothed_nll
from attnmt.model import Seq2Seq
from attnmt.tokenizer import Tokenizer
from attnmt.vocab import PAD_ID

ROOT = Path(__file__).parent.parent


def torch_loss(logits: torch.Tensor, target: torch.Tensor, epsilon: float) -> torch.Tensor:
    flat = logits.reshape(-1, logits.size(-1)).float()
    return F.cross_entropy(flat, target.reshape(-1), ignore_index=PAD_ID, label_smoothing=epsilon, reduction="sum")


def attnmt_loss(logits: torch.Tensor, target: torch.Tensor, epsilon: float) -> torch.Tensor:
    return label_smoothed_nll(logits.reshape(-1, logits.size(-1)), target.reshape(-1), epsilon, PAD_ID)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(ROOT / "configs" / "quickstart.yaml")
    pairs = read_parallel(config.data.train_src, config.data.train_tgt)[:8000]
    with tempfile.TemporaryDirectory() as directory:
        tokenizer = Tokenizer.train(
            pairs, Path(directory), config.data.vocab_size, "bpe", True, target_vocab=config.data.target_vocab
        )
    corpus = filter_pairs(tokenizer.encode_src([p[0] for p in pairs]), tokenizer.encode_tgt([p[1] for p in pairs]), 100)
    torch.manual_seed(0)
    model = Seq2Seq.from_config(config.model, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size, 100)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.training.lr)
    losses = {"torch_cross_entropy": torch_loss, "attnmt_label_smoothed_nll": attnmt_loss}
    totals = {name: [0.0, 0] for name in losses}
    batches = token_batches(corpus, config.training.batch_tokens, seed=1, epoch=0)
    for index, indices in enumerate(batches[: args.steps + 4]):
        name = list(losses)[index % 2]
        batch = make_batch([corpus.src[i] for i in indices], [corpus.tgt[i] for i in indices])
        started = time.perf_counter()
        logits = model(batch.src, batch.src_lengths, batch.tgt_in)
        loss = losses[name](logits, batch.tgt_out, config.training.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        (loss / batch.target_tokens).backward()
        optimizer.step()
        if index >= 4:  # warm-up
            totals[name][0] += time.perf_counter() - started
            totals[name][1] += batch.target_tokens
    print(json.dumps({f"{name}_tgt_tokens_per_s": round(n / s, 1) for name, (s, n) in totals.items()}))


if __name__ == "__main__":
    main()
