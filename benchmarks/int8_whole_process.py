"""``attnmt translate`` with and without ``--quantize int8``, whole processes, on inputs of several sizes.

    python benchmarks/int8_whole_process.py --model RUN [--lines 1 1000 10000] [--beams 1 5] [--repeats 2]
                                            [--source bundled:multi30k/test_2016_flickr.en.gz]

Each process is timed from its start to its end, as a user running the command
sees it: Python and torch start-up, model loading (and quantising), decoding with
the CLI's defaults (``--workers auto``), writing the output. The input is the first
N lines of ``--source`` (default: test2016, then the training sentences after it
when N is larger, e.g. 10,000). One line alone measures the start-up both pay.
fp32 and int8 take turns, ``--repeats`` times; each one's fastest run counts.
Prints one JSON line per input size and beam: seconds and the int8 / fp32 ratio.
One heavy process at a time: run it on an idle machine. CI does not run it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from attnmt.data import read_lines

SOURCES = ["bundled:multi30k/test_2016_flickr.en.gz", "bundled:multi30k/train.en.gz"]


def first_lines(sources: list[str], count: int) -> list[str]:
    """The first ``count`` lines of the sources, read one after another."""
    lines: list[str] = []
    for source in sources:
        lines += read_lines(source)[: count - len(lines)]
        if len(lines) >= count:
            break
    if len(lines) < count:
        raise SystemExit(f"the sources hold only {len(lines)} lines, not {count}")
    return lines


def run_once(model: str, source: Path, beam: int, int8: bool, output: Path) -> float:
    """Seconds of one whole ``attnmt translate`` process."""
    command = [sys.executable, "-m", "attnmt", "translate", "--model", model, "--beam", str(beam)]
    command += ["--input", str(source), "--output", str(output)] + (["--quantize", "int8"] if int8 else [])
    started = time.perf_counter()
    subprocess.run(command, check=True, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--lines", type=int, nargs="+", default=[1, 1000, 10000])
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--source", nargs="+", default=SOURCES, help="files whose first lines are the input")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        for count in args.lines:
            source = Path(directory) / f"source.{count}.txt"
            source.write_text("".join(line + "\n" for line in first_lines(args.source, count)), encoding="utf-8")
            for beam in args.beams:
                best = {False: float("inf"), True: float("inf")}
                for _ in range(args.repeats):
                    for int8 in (False, True):
                        output = Path(directory) / f"out.{int(int8)}.txt"
                        best[int8] = min(best[int8], run_once(args.model, source, beam, int8, output))
                print(json.dumps({
                    "lines": count, "beam": beam, "fp32_s": round(best[False], 2), "int8_s": round(best[True], 2),
                    "int8_over_fp32": round(best[False] / best[True], 2),
                }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
