"""fp32 training updates with their matrix products on MKL (torch's default) and on oneDNN.

    python benchmarks/products_speed.py [--config configs/luong_general.yaml] [--steps 60]

``attnmt.products.onednn_products`` sends the fp32 ``mm`` and ``addmm`` of a
CPU step (forward and backward) to oneDNN. Every batch runs once each way,
taking turns at going first (``dropout_speed.alternate``); prints the median
update time of each, their ratio, and this machine's CPU flags that matter.
"""

from __future__ import annotations

import json
import statistics
from contextlib import ExitStack
from pathlib import Path

import torch
from dropout_speed import ab_parser, alternate, prepare  # this folder's scripts
from peers import cpu_flags

from attnmt.cli import bound_primitive_caches
from attnmt.products import auto_onednn, onednn_products


def main() -> None:
    bound_primitive_caches()
    args = ab_parser(__doc__).parse_args()
    prepared = prepare(args.config, "fp32", args.threads)
    stack = ExitStack()

    def mkl() -> None:
        stack.close()

    def onednn() -> None:
        stack.close()
        stack.enter_context(onednn_products())

    times = alternate({"mkl": mkl, "onednn": onednn}, prepared, args.steps)
    stack.close()
    medians = {name: round(1000 * statistics.median(seconds), 1) for name, seconds in times.items()}
    report = {
        "config": Path(args.config).name,
        "threads": args.threads,
        "updates_each": args.steps,
        "cpu_flags": cpu_flags(),
        "auto_picks_onednn": auto_onednn(torch.device("cpu")),
        "median_update_ms": medians,
        "mkl_over_onednn": round(medians["mkl"] / medians["onednn"], 3),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
