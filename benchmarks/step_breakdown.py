"""Where a training step's time goes, and the FLOP/s it achieves against this machine's matmul peak.

    python benchmarks/step_breakdown.py [--config configs/quickstart.yaml] [--steps 12] [--threads 2] [--bf16|--onednn]

Times, on the same real batches, the whole update and its parts run alone
(forward + backward each): the encoder RNN, the decoder (RNN and attention), the
output layer, the loss, clipping + Adam; "other" is the rest (batching, Python,
autograd book-keeping). FLOPs are counted by torch's FlopCounterMode for matrix
products plus the RNN layers' 2 x gates x (input + hidden) per token and
direction (x 3 for forward + backward) for LSTMs, whose fused kernel torch does not
count. ``--bf16`` runs every part under attnmt's bf16 autocast, as training does
where the CPU has native bf16, and measures the peak with bf16 products;
``--onednn`` runs everything, the peak included, with fp32 products on oneDNN
(``attnmt.products``, as ``matmul: auto`` trains on AMD CPUs with AVX-512).
Prints one JSON line. The code measured is
the installed attnmt: point PYTHONPATH at another checkout to measure it instead.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from attnmt.config import load_config
from attnmt.data import filter_pairs, make_batch, read_parallel, token_batches
from attnmt.model import Seq2Seq
from attnmt.tokenizer import Tokenizer

try:
    from attnmt.loss import sequence_loss
except ImportError:  # attnmt before the architecture issue, to measure "before"
    from attnmt.train import sequence_loss  # type: ignore[attr-defined,no-redef]

ROOT = Path(__file__).parent.parent
GATES = {"lstm": 4}


def matmul_peak(threads: int, size: int = 2048, dtype: torch.dtype = torch.float32, repeats: int = 5) -> float:
    """The best of ``repeats`` timings of a size x size matrix product in ``dtype`` (GFLOP/s)."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def lstm_forward_flops(rnn: torch.nn.LSTM, tokens: int) -> float:
    """Forward FLOPs of an LSTM over ``tokens`` positions: every layer, every direction."""
    total = 0.0
    directions = 2 if rnn.bidirectional else 1
    for layer in range(rnn.num_layers):
        inputs = getattr(rnn, f"weight_ih_l{layer}").shape[1]
        total += directions * 2 * GATES["lstm"] * rnn.hidden_size * (inputs + rnn.hidden_size) * tokens
    return total


def rnn_flops(model: Seq2Seq, batch) -> float:
    """Forward + backward FLOPs of the LSTM layers (torch's fused oneDNN LSTM kernel is not counted; GRUs are)."""
    total = 0.0
    for module, tokens in ((model.encoder, int(batch.src.numel())), (model.decoder, int(batch.tgt_in.numel()))):
        for rnn in (m for m in module.modules() if isinstance(m, torch.nn.LSTM)):
            total += 3 * lstm_forward_flops(rnn, tokens)
    return total


def in_bf16(work: Callable[[], object]) -> Callable[[], None]:
    """``work`` under the autocast attnmt trains with (torch's own, cache off, for versions without it)."""
    try:
        from attnmt.device import autocast

        context = lambda: autocast(torch.device("cpu"), torch.bfloat16)  # noqa: E731
    except ImportError:
        context = lambda: torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False)  # noqa: E731

    def run() -> None:
        with context():
            work()

    return run


def timed(work, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "quickstart.yaml"))
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast, against the bf16 matmul peak")
    parser.add_argument("--onednn", action="store_true", help="fp32 products on oneDNN, its peak too")
    args = parser.parse_args()
    held = ExitStack()  # for the whole run
    if args.onednn:
        from attnmt.products import onednn_products  # not in checkouts from before it

        held.enter_context(onednn_products())
    torch.set_num_threads(args.threads)
    config = load_config(args.config, args.set)
    pairs = read_parallel(config.data.train_src, config.data.train_tgt)
    with tempfile.TemporaryDirectory() as directory:
        data = config.data
        target_vocab = getattr(data, "target_vocab", None)
        extra = {"target_vocab": target_vocab} if target_vocab else {}
        tokenizer = Tokenizer.train(pairs, Path(directory), data.vocab_size, data.tokenizer, True, **extra)
    corpus = filter_pairs(tokenizer.encode_src([p[0] for p in pairs]), tokenizer.encode_tgt([p[1] for p in pairs]), 100)
    torch.manual_seed(1)
    model = Seq2Seq.from_config(config.model, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size, 100).train()
    fused = {"fused": True} if hasattr(model, "output_layer") else {}  # what each version's training uses
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, **fused)
    logits_of = model.logits if hasattr(model, "logits") else model.generator
    batches = [
        make_batch([corpus.src[i] for i in b], [corpus.tgt[i] for i in b]) for b in token_batches(corpus, 2000, 1, 0)
    ]
    batch = max(batches[:50], key=lambda b: b.target_tokens)  # one typical full batch, reused by every part
    smoothing = config.training.label_smoothing

    def step() -> None:
        loss = sequence_loss(model(batch.src, batch.src_lengths, batch.tgt_in), batch.tgt_out, smoothing)
        optimizer.zero_grad()
        (loss / batch.target_tokens).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()

    with torch.no_grad():
        memory, state = model.encode(batch.src, batch.src_lengths)  # fixed inputs for the decoder part
        outputs = model.decoder(batch.tgt_in, state, memory).outputs.detach().requires_grad_()
    logits = logits_of(outputs).detach()
    parts = {
        "whole update": step,
        "encoder": lambda: model.encoder(batch.src, batch.src_lengths)[0].sum().backward(),
        "decoder (RNN + attention)": lambda: model.decoder(batch.tgt_in, state, memory).outputs.sum().backward(),
        "output layer": lambda: logits_of(outputs).sum().backward(),
        "loss": lambda: sequence_loss(logits.clone().requires_grad_(), batch.tgt_out, smoothing).backward(),
        "clip + Adam": lambda: (torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0), optimizer.step()),
    }
    if args.bf16:
        parts = {name: in_bf16(work) for name, work in parts.items()}
        step = parts["whole update"]
    peak_dtype = torch.bfloat16 if args.bf16 else torch.float32
    step()
    peak = matmul_peak(args.threads, dtype=peak_dtype)
    seconds = {name: timed(work, args.steps) for name, work in parts.items()}
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops() + rnn_flops(model, batch)
    whole = seconds["whole update"]
    shares = {name: round(100 * s / whole, 1) for name, s in seconds.items() if name != "whole update"}
    shares["other (batching, Python, autograd)"] = round(100 - sum(shares.values()), 1)
    peak = max(peak, matmul_peak(args.threads, dtype=peak_dtype))
    print(json.dumps({
        "config": Path(args.config).name, "overrides": args.set, "threads": args.threads,
        "precision": "bf16" if args.bf16 else "fp32", "fp32_products": "onednn" if args.onednn else "torch",
        "target_tokens": batch.target_tokens, "update_ms": round(1000 * whole, 1),
        "tgt_tokens_per_s": round(batch.target_tokens / whole, 1), "gflop_per_update": round(flops / 1e9, 2),
        "achieved_gflop_s": round(flops / whole / 1e9, 1), "matmul_peak_gflop_s": round(peak, 1),
        "share_of_peak": round(flops / whole / 1e9 / peak, 2), "percent_of_update": shares,
    }))  # fmt: skip
    held.close()


if __name__ == "__main__":
    main()
