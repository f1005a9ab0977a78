"""bf16 logits through the loss in blocks of rows against converting them all to fp32 first: whole updates.

    python benchmarks/loss_blocks_speed.py [--config configs/luong_general.yaml] [--steps 60] [--block 524288]

``attnmt.loss`` works on low-precision logits a block of rows at a time (the
fp32 arithmetic in cache-sized pieces, the gradient written over the bf16
logits); the alternative converts the (N, V) logits to fp32 as a whole, as
autocast code usually does, and converts the gradient back. Both give the same
bits (tests/test_loss.py). Every batch is run once with each, taking turns at
going first (``dropout_speed.alternate``). Prints the median update time of
each and their ratio. Needs a CPU with native bf16 to mean anything.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path

import torch
from dropout_speed import ab_parser, alternate, prepare  # this folder's script

import attnmt.loss
from attnmt.cli import bound_primitive_caches

BLOCKWISE = attnmt.loss._BlockwiseNLL.apply


def fp32_first(logits: torch.Tensor, target: torch.Tensor, epsilon: float, ignore_index: int) -> torch.Tensor:
    return attnmt.loss._LabelSmoothedNLL.apply(logits.float(), target, epsilon, ignore_index)


def main() -> None:
    bound_primitive_caches()
    parser = ab_parser(__doc__)
    parser.add_argument("--block", type=int, default=attnmt.loss.BLOCK_ELEMENTS, help="elements per block")
    args = parser.parse_args()
    attnmt.loss.BLOCK_ELEMENTS = args.block
    prepared = prepare(args.config, "bf16", args.threads)

    def use(function: Callable[..., torch.Tensor]) -> Callable[[], None]:
        def switch() -> None:
            attnmt.loss._BlockwiseNLL.apply = function  # type: ignore[method-assign]

        return switch

    times = alternate({"fp32 first": use(fp32_first), "blocks": use(BLOCKWISE)}, prepared, args.steps)
    medians = {name: round(1000 * statistics.median(seconds), 1) for name, seconds in times.items()}
    report = {
        "config": Path(args.config).name,
        "threads": args.threads,
        "block_elements": args.block,
        "updates_each": args.steps,
        "median_update_ms": medians,
        "fp32_first_over_blocks": round(medians["fp32 first"] / medians["blocks"], 3),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
