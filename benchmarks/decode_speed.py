"""Decoding throughput and BLEU of a trained model on Multi30k test2016.

    python benchmarks/decode_speed.py --model runs/quickstart [--beams 1 5] [--threads 2] [--quantize none int8]
                                      [--matmul torch onednn] [--flops] [--workers 1|N|auto] [--repeats 3]

Times ``Translator.translate`` on the 1,000 test sentences (model already loaded;
batches of 64 sentences sorted by length) and prints one JSON line per beam size
and quantisation (fp32 and int8 measured in one run, alternating, for a fair ratio;
with ``--repeats`` the whole round is repeated and a last line gives each one's
fastest run and the int8 / fp32 ratios). ``--workers`` is passed to ``translate``
(``auto``: one single-threaded forked process per thread, as the CLI's default).
With ``--flops`` it also counts the fp32 floating-point work of each search once
(torch's FlopCounterMode for the matrix products, plus the fused LSTM kernels it
cannot see) and reports the achieved GFLOP/s against this machine's fp32 matmul
peak measured in the same run, on the library the fp32 decoding uses (int8: the
same work divided by its time).
``--matmul torch onednn`` also times the fp32 products on each library
(``attnmt.products``; default: the model's ``decoding.matmul``), prints the
torch / oneDNN ratios and how many translations the two give alike.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import time

import torch

from attnmt import Translator
from attnmt.cli import bound_primitive_caches
from attnmt.data import read_parallel
from attnmt.metrics import corpus_scores
from attnmt.model import Seq2Seq
from attnmt.products import onednn_products


def main() -> None:
    bound_primitive_caches()  # as the attnmt command does, before torch builds a oneDNN primitive
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--quantize", nargs="+", default=["none"], choices=["none", "int8"])
    parser.add_argument("--flops", action="store_true", help="count the work and report GFLOP/s against the peak")
    parser.add_argument("--workers", default="1", help="decoding processes: a number or auto (default 1)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--matmul", nargs="+", default=[], choices=["torch", "onednn"])
    args = parser.parse_args()
    args.workers = args.workers if args.workers == "auto" else int(args.workers)
    torch.set_num_threads(args.threads)
    args.work = {}
    translators = {}
    for q, matmul in itertools.product(args.quantize, args.matmul or ["model's"]):
        name = q if len(args.matmul) < 2 else f"{q} {matmul}"
        quantize, products = None if q == "none" else q, matmul if args.matmul else None
        translators[name] = Translator.load(args.model, quantize=quantize, matmul=products)
    pairs = read_parallel("bundled:multi30k/test_2016_flickr.en.gz", "bundled:multi30k/test_2016_flickr.de.gz")
    sources, references = [p[0] for p in pairs], [p[1] for p in pairs]
    for translator in translators.values():
        translator.translate(sources[:64], beam=1)  # warm-up
    if args.flops:
        from step_breakdown import matmul_peak

        fp32 = translators.get("none") or Translator.load(args.model)
        args.work = {beam: decoding_flops(fp32, sources, beam, args.batch_size) for beam in args.beams}
        with onednn_products(fp32.onednn):  # the peak of the library fp32 decoding uses
            peak = matmul_peak(args.threads)
        library = "onednn" if fp32.onednn else "torch"
        print(json.dumps({"matmul_peak_gflop_s": round(peak, 1), "fp32_products_on": library}), flush=True)
    fastest: dict[str, float] = {}
    outputs: dict[str, list[str]] = {}
    for _ in range(args.repeats):
        for beam in args.beams:
            for name, translator in translators.items():
                key = f"{name} beam {beam}"
                seconds, outputs[key] = report(translator, sources, references, beam, name, args)
                fastest[key] = min(fastest.get(key, seconds), seconds)
    if args.repeats > 1 or len(args.matmul) > 1:
        print(json.dumps({"fastest_seconds": fastest, **comparisons(fastest, outputs, args)}))


def comparisons(fastest: dict[str, float], outputs: dict[str, list[str]], args) -> dict[str, object]:
    """int8 / fp32 speed ratios, or torch / oneDNN ones with the number of identical translations."""
    if len(args.matmul) > 1:
        pairs = [(f"{q} torch beam {b}", f"{q} onednn beam {b}") for q in args.quantize for b in args.beams]
        return {
            f"torch/onednn {torch_key.replace(' torch', '')}": {
                "ratio": round(fastest[torch_key] / fastest[onednn_key], 2),
                "identical": sum(a == b for a, b in zip(outputs[torch_key], outputs[onednn_key])),
            }
            for torch_key, onednn_key in pairs
        }
    if {"none", "int8"} <= set(args.quantize):
        return {
            f"int8/fp32 beam {b}": round(fastest[f"none beam {b}"] / fastest[f"int8 beam {b}"], 2) for b in args.beams
        }
    return {}


def decoding_flops(translator: Translator, sources: list[str], beam: int, batch_size: int) -> float:
    """Floating-point operations of translating ``sources`` in fp32: matrix products and LSTM kernels."""
    from step_breakdown import lstm_forward_flops
    from torch.utils.flop_counter import FlopCounterMode

    model = translator.model
    assert isinstance(model, Seq2Seq), "--flops counts a single model"
    lstm_flops: list[float] = []  # one entry per LSTM call (batch-first input: B x T positions)

    def count_lstm(module: torch.nn.Module, inputs: tuple, output: object) -> None:
        lstm_flops.append(lstm_forward_flops(module, inputs[0].shape[0] * inputs[0].shape[1]))

    hooks = [m.register_forward_hook(count_lstm) for m in model.modules() if isinstance(m, torch.nn.LSTM)]
    with FlopCounterMode(display=False) as counter:
        translator.translate(sources, beam=beam, batch_size=batch_size)
    for hook in hooks:
        hook.remove()
    return counter.get_total_flops() + sum(lstm_flops)


def report(
    translator: Translator, sources: list[str], references: list[str], beam: int, quantization: str, args
) -> tuple[float, list[str]]:
    started = time.perf_counter()
    hypotheses = translator.translate(sources, beam=beam, batch_size=args.batch_size, workers=args.workers)
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "model": args.model,
                "quantize": quantization,
                "beam": beam,
                "sentences": len(sources),
                "seconds": round(seconds, 2),
                "sentences_per_s": round(len(sources) / seconds, 1),
                "bleu": corpus_scores(hypotheses, references)["bleu"],
                "threads": args.threads,
                "workers": args.workers,
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                **flop_rate(args.work.get(beam), seconds),
            }
        ),
        flush=True,
    )
    return seconds, hypotheses


def flop_rate(flops: float | None, seconds: float) -> dict[str, float]:
    """The counted fp32 work and the rate it was done at (empty without ``--flops``)."""
    if not flops:
        return {}
    return {"gflop": round(flops / 1e9, 1), "achieved_gflop_s": round(flops / seconds / 1e9, 1)}


if __name__ == "__main__":
    main()
