"""`attnmt quickstart` end to end: wall time, peak memory, BLEU, model size.

    python benchmarks/quickstart.py [--out /tmp/attnmt-quickstart] [--minutes 11] [--pair en-de]

Runs the real command in a fresh output directory and prints one JSON line with
the wall time of the whole process, its peak resident memory, and the figures the
quickstart itself recorded in test2016_eval.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="/tmp/attnmt-quickstart")
    parser.add_argument("--minutes", type=float, default=None, help="training budget (default: the command's own)")
    parser.add_argument("--pair", default="en-de", choices=["en-de", "de-en", "en-fr"])
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "attnmt", "quickstart", "--out", str(out), "--pair", args.pair]
    if args.minutes:
        command += ["--minutes", str(args.minutes)]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - started
    evaluation = json.loads((out / "test2016_eval.json").read_text())
    import torch

    payload = torch.load(out / "best.pt", weights_only=True)
    parameters = sum(t.numel() for t in payload["model"].values())
    print(
        json.dumps(
            {
                "pair": args.pair,
                "wall_minutes": round(wall / 60, 2),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
                "bleu": evaluation["bleu"],
                "chrf": evaluation["chrf"],
                "signature": evaluation["signature"],
                "beam": evaluation["beam"],
                "train_steps": evaluation["train_steps"],
                "train_tgt_tokens_per_s": evaluation["train_tgt_tokens_per_s"],
                "test_sentences_per_s": evaluation["sentences_per_s"],
                "parameters": parameters,
                "best_pt_mb": round((out / "best.pt").stat().st_size / 2**20, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
