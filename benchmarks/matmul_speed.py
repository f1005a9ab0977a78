"""The CPU's matrix-multiply speed: fp32 through torch's default library and through oneDNN, and bf16.

    python benchmarks/matmul_speed.py [--size 2048] [--threads 2]

Prints GFLOP/s of a size x size matmul in each, whether the CPU reports native
bf16 instructions (AVX512-BF16 or AMX; why ``precision: auto`` may pick fp32),
and whether ``matmul: auto`` sends fp32 products to oneDNN here (``products.py``).
"""

from __future__ import annotations

import argparse
import json

import torch
from step_breakdown import matmul_peak  # this folder's script

from attnmt.device import cpu_supports_bf16
from attnmt.products import auto_onednn, onednn_available, onednn_products


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
        "matmul_auto_picks_onednn": {"training": auto_onednn(cpu), "decoding": auto_onednn(cpu, decoding=True)},
        "float32_gflops": round(matmul_peak(args.threads, args.size), 2),
    }
    if onednn_available():
        with onednn_products():
            result["float32_onednn_gflops"] = round(matmul_peak(args.threads, args.size), 2)
    # emulated bf16 (no native support) takes a minute a product at 2048: time it once
    result["bfloat16_gflops"] = round(matmul_peak(args.threads, args.size, torch.bfloat16, repeats=1), 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
