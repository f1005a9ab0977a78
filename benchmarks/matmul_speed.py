"""The CPU's matrix-multiply speed: fp32 through torch's default library and through oneDNN, and bf16.

    python benchmarks/matmul_speed.py [--size 2048] [--threads 2]

Prints GFLOP/s of a size x size matmul in each, whether the CPU reports native
bf16 instructions (AVX512-BF16 or AMX; why ``precision: auto`` may pick fp32),
and whether ``matmul: auto`` sends fp32 products to oneDNN here (``products.py``).
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import AbstractContextManager, nullcontext

import torch

from attnmt.device import cpu_supports_bf16
from attnmt.products import auto_onednn, onednn_available, onednn_products


def gflops(size: int, dtype: torch.dtype, library: AbstractContextManager[object], repeats: int) -> float:
    """GFLOP/s of a size x size product in ``dtype``, inside ``library`` (best of ``repeats``)."""
    a = torch.randn(size, size).to(dtype)
    best = float("inf")
    with library:
        a @ a  # warm-up
        for _ in range(repeats):
            started = time.perf_counter()
            a @ a
            best = min(best, time.perf_counter() - started)
    return round(2 * size**3 / best / 1e9, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    result: dict[str, object] = {
        "size": args.size,
        "threads": args.threads,
        "native_bf16": cpu_supports_bf16(),
        "matmul_auto_picks_onednn": auto_onednn(cpu),
        "float32_gflops": gflops(args.size, torch.float32, nullcontext(), 5),
    }
    if onednn_available():
        result["float32_onednn_gflops"] = gflops(args.size, torch.float32, onednn_products(), 5)
    result["bfloat16_gflops"] = gflops(args.size, torch.bfloat16, nullcontext(), 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
