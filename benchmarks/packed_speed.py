"""fp32 decoding products with weights packed in oneDNN's layout, against the weights as they are.

    python benchmarks/packed_speed.py [--threads 1] [--model RUN [--workers 1|auto] [--repeats 3] [--lone 100]]

First the products of a decoder step (the matched model's shapes: output layer,
GRU input and recurrence, W_c) at the row counts a search meets, each through
oneDNN with the plain weight and with the weight packed once
(``attnmt.products.PackedWeights``): GFLOP/s, whether the results are the same
bits, and whether a row's result depends on how many rows are multiplied.
With ``--model`` it then translates test2016 with greedy and beam 5, taking
turns with and without the packed weights (``Translator.packed_weights``), and
prints each one's fastest time, the ratio and how many translations are identical;
with ``--lone N`` also the median time of N sentences translated one at a time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
from peers import cpu_flags  # this folder's script

from attnmt import Translator
from attnmt.cli import bound_primitive_caches
from attnmt.data import read_parallel

#: (K, N) of the matched model's decoding products: output layer, GRU input and recurrence, W_c.
SHAPES = [(512, 8000), (768, 1536), (512, 1536), (1024, 512)]
ROWS = [320, 64, 20, 5, 1]
TEST2016 = ("bundled:multi30k/test_2016_flickr.en.gz", "bundled:multi30k/test_2016_flickr.de.gz")


def seconds_per_call(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, repeats: int = 30) -> float:
    """Seconds of one oneDNN product X W^T + b (two calls first to build and warm its primitive)."""
    linear = torch.ops.mkldnn._linear_pointwise
    for _ in range(2):
        linear(x, weight, bias, "none", [], "")
    started = time.perf_counter()
    for _ in range(repeats):
        linear(x, weight, bias, "none", [], "")
    return (time.perf_counter() - started) / repeats


def products_table() -> None:
    """GFLOP/s of X W^T + b, plain and packed, and whether the bits agree."""
    linear = torch.ops.mkldnn._linear_pointwise
    for k, n in SHAPES:
        weight, bias = torch.randn(n, k) * 0.05, torch.randn(n)
        packed = torch.ops.mkldnn._reorder_linear_weight(weight, 64)
        rows = torch.randn(max(ROWS), k)
        every_row = linear(rows, packed, bias, "none", [], "")
        for m in ROWS:
            x = rows[:m]
            plain = seconds_per_call(x, weight, bias)
            fast = seconds_per_call(x, packed, bias)
            result = linear(x, packed, bias, "none", [], "")
            row = {"K": k, "N": n, "rows": m, "plain_gflop_s": round(2 * m * k * n / plain / 1e9)}
            row["packed_gflop_s"] = round(2 * m * k * n / fast / 1e9)
            row["same_bits_as_plain"] = torch.equal(result, linear(x, weight, bias, "none", [], ""))
            row["same_bits_as_all_rows"] = torch.equal(result, every_row[:m])
            print(json.dumps(row), flush=True)


def _switchable(model: str) -> tuple[Translator, Callable[[str], None]]:
    """A translator decoding on oneDNN, and ``use("packed" | "plain")``: with its packed weights, or with none."""
    translator = Translator.load(model, matmul="onednn")
    made = translator.packed_weights()

    def use(name: str) -> None:
        translator.packed_weights = (lambda: made) if name == "packed" else (lambda: None)  # type: ignore[method-assign]

    return translator, use


def translations(model: str, workers: int | str, repeats: int) -> None:
    """test2016 with and without packed weights, taking turns; fastest times, ratios, identical outputs."""
    translator, use = _switchable(model)
    sources = [source for source, _ in read_parallel(*TEST2016)]
    translator.translate(sources[:64], beam=1, workers=workers)  # warm-up
    fastest: dict[tuple[int, str], float] = {}
    outputs: dict[tuple[int, str], list[str]] = {}
    for _ in range(repeats):
        for beam in (1, 5):
            for name in ("plain", "packed"):
                use(name)
                started = time.perf_counter()
                outputs[(beam, name)] = translator.translate(sources, beam=beam, workers=workers)
                seconds = time.perf_counter() - started
                fastest[(beam, name)] = min(fastest.get((beam, name), seconds), seconds)
    for beam in (1, 5):
        same = sum(a == b for a, b in zip(outputs[(beam, "plain")], outputs[(beam, "packed")]))
        plain, packed = fastest[(beam, "plain")], fastest[(beam, "packed")]
        print(
            json.dumps(
                {
                    "beam": beam,
                    "plain_s": round(plain, 3),
                    "packed_s": round(packed, 3),
                    "plain/packed": round(plain / packed, 3),
                    "identical": same,
                    "sentences": len(sources),
                }
            )
        )


def lone_sentences(model: str, count: int) -> None:
    """Median latency of ``count`` test sentences translated one at a time (as server requests), both ways."""
    translator, use = _switchable(model)
    pairs = read_parallel(*TEST2016)
    for beam in (1, 5):
        seconds: dict[str, list[float]] = {"plain": [], "packed": []}
        same = 0
        for source, _ in pairs[:count]:
            outputs = {}
            for name in ("plain", "packed"):
                use(name)
                started = time.perf_counter()
                outputs[name] = translator.translate([source], beam=beam, workers=1)
                seconds[name].append(time.perf_counter() - started)
            same += outputs["plain"] == outputs["packed"]
        plain, packed = (statistics.median(seconds[name]) for name in ("plain", "packed"))
        row = {"lone_sentences": count, "beam": beam, "plain_ms": round(1000 * plain, 2)}
        row |= {"packed_ms": round(1000 * packed, 2), "plain/packed": round(plain / packed, 3), "identical": same}
        print(json.dumps(row), flush=True)


def main() -> None:
    bound_primitive_caches()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", help="also translate test2016 with this model directory")
    parser.add_argument("--workers", default="1", help="decoding processes for --model: a number or auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lone", type=int, default=0, help="with --model: also time this many sentences one by one")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(json.dumps({"cpu_flags": cpu_flags(), "threads": args.threads}), flush=True)
    products_table()
    if args.model:
        translations(args.model, args.workers if args.workers == "auto" else int(args.workers), args.repeats)
        if args.lone:
            lone_sentences(args.model, args.lone)


if __name__ == "__main__":
    main()
