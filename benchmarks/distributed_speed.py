"""Training throughput on one machine: 1 process x 2 threads vs 2 processes x 1 thread (torchrun, gloo).

    python benchmarks/distributed_speed.py [--config configs/quickstart.yaml] [--steps 60]

Trains the config for ``--steps`` updates both ways from scratch (same global
batch of ``training.batch_tokens``), reads target tokens/s from the log rows
(steady state: the first row, with start-up costs, is skipped), and measures the
gloo all-reduce of a tensor as large as the model's gradient, which every update
of a DDP run pays once: its volume is parameters x 4 bytes. Prints JSON lines.
Run it on an idle machine; it is not a CI test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from peers import cpu_flags  # this folder's script

ROOT = Path(__file__).parent.parent


def run(config: str, steps: int, processes: int, threads: int, out: Path) -> dict[str, object]:
    args = ["-m", "attnmt", "train", "--config", config, "--out", str(out), "--no-progress"]
    args += ["--set", f"training.max_steps={steps}", "--set", "training.log_every=10"]
    args += ["--set", f"training.valid_every={10 * steps}", "--set", f"training.threads={threads}"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, *args]
    if processes > 1:
        launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
        command = [sys.executable, *launcher, *args]
    started = time.monotonic()
    subprocess.run(command, check=True, env=env, capture_output=True)
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    speeds = [r["tgt_tokens_per_s"] for r in rows if "valid_loss" not in r][1:]
    return {
        "layout": f"{processes} process(es) x {threads} thread(s)",
        "tgt_tokens_per_s_median": round(statistics.median(speeds), 1),
        "wall_s": round(time.monotonic() - started, 1),
    }


ALL_REDUCE = """
import os, sys, time, torch, torch.distributed as dist
dist.init_process_group("gloo")
torch.set_num_threads(1)
tensor = torch.ones(int(sys.argv[1]))
for _ in range(3):
    dist.all_reduce(tensor)
times = []
for _ in range(10):
    started = time.perf_counter(); dist.all_reduce(tensor); times.append(time.perf_counter() - started)
if dist.get_rank() == 0:
    print(sorted(times)[len(times) // 2])
dist.destroy_process_group()
"""


def all_reduce_seconds(parameters: int) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as script:
        script.write(ALL_REDUCE)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", script.name]
    output = subprocess.run([*command, str(parameters)], check=True, capture_output=True, text=True).stdout
    Path(script.name).unlink()
    return float(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "quickstart.yaml"))
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    print(json.dumps({"cpu_flags": cpu_flags(), "cores": os.cpu_count(), "torch": torch.__version__}))
    with tempfile.TemporaryDirectory() as directory:
        for processes, threads in ((1, 2), (2, 1)):
            result = run(args.config, args.steps, processes, threads, Path(directory) / f"p{processes}")
            print(json.dumps(result), flush=True)
        payload = torch.load(Path(directory) / "p1" / "best.pt", weights_only=True)
    shared = {v.data_ptr(): v.numel() for v in payload["model"].values() if v.is_floating_point()}  # tied: once
    parameters = sum(shared.values())
    seconds = all_reduce_seconds(parameters)
    print(
        json.dumps(
            {
                "parameters": parameters,
                "bytes_per_update": parameters * 4,
                "gloo_all_reduce_ms": round(1000 * seconds, 1),
                "all_reduce_gbit_per_s": round(parameters * 4 * 8 / seconds / 1e9, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
