"""The vocabulary projection plus loss of one training step: torch's cross-entropy vs attnmt's.

    python benchmarks/loss_speed.py [--tokens 2000] [--vocab 8000] [--threads 2]

Forward and backward of logits = h W and the label-smoothed loss, for N target
tokens and a V-word vocabulary, with and without huge-page allocations
(THP_MEM_ALLOC_ENABLE, which must be set before torch starts, so each setting
runs in its own process).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, sys, time, torch
from torch.nn import functional as F
from attnmt.loss import label_smoothed_nll
tokens, vocab, threads = map(int, sys.argv[1:4])
torch.set_num_threads(threads)
torch.manual_seed(0)
h = torch.randn(tokens, 512)
weight = torch.randn(512, vocab, requires_grad=True)
target = torch.randint(1, vocab, (tokens,))
def torch_loss():
    F.cross_entropy(h @ weight, target, ignore_index=0, label_smoothing=0.1, reduction="sum").backward()
def attnmt_loss():
    label_smoothed_nll(h @ weight, target, 0.1, 0).backward()
result = {}
for name, fn in (("torch_cross_entropy_ms", torch_loss), ("attnmt_label_smoothed_nll_ms", attnmt_loss)):
    for _ in range(3):
        fn()
    start = time.perf_counter()
    for _ in range(20):
        fn()
    result[name] = round((time.perf_counter() - start) / 20 * 1000, 1)
print(json.dumps(result))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    for huge_pages in ("0", "1"):
        env = {**os.environ, "THP_MEM_ALLOC_ENABLE": huge_pages}
        output = subprocess.run(
            [sys.executable, "-c", CHILD, str(args.tokens), str(args.vocab), str(args.threads)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        print(
            json.dumps(
                {"tokens": args.tokens, "vocab": args.vocab, "huge_pages": huge_pages == "1", **json.loads(output)}
            )
        )


if __name__ == "__main__":
    main()
