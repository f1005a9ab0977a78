"""The CPU's matrix-multiply speed in fp32 and bf16 (why ``precision: auto`` may pick fp32).

    python benchmarks/matmul_speed.py [--size 2048] [--threads 2]

Prints GFLOP/s of a size x size matmul in each dtype and whether the CPU reports
native bf16 instructions (AVX512-BF16 or AMX).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from attnmt.device import cpu_supports_bf16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result: dict[str, object] = {"size": args.size, "threads": args.threads, "native_bf16": cpu_supports_bf16()}
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.randn(args.size, args.size).to(dtype)
        a @ a  # warm-up
        repeats = 5 if dtype == torch.float32 else 1
        started = time.perf_counter()
        for _ in range(repeats):
            a @ a
        seconds = (time.perf_counter() - started) / repeats
        result[f"{str(dtype).split('.')[-1]}_gflops"] = round(2 * args.size**3 / seconds / 1e9, 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
