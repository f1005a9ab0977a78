"""Decoding throughput and BLEU of a trained model on Multi30k test2016.

    python benchmarks/decode_speed.py --model runs/quickstart [--beams 1 5] [--threads 2] [--quantize none int8]

Times ``Translator.translate`` on the 1,000 test sentences (model already loaded;
batches of 64 sentences sorted by length) and prints one JSON line per beam size
and quantisation (fp32 and int8 measured in one run, alternating, for a fair ratio).
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from attnmt import Translator
from attnmt.data import read_parallel
from attnmt.metrics import corpus_scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--quantize", nargs="+", default=["none"], choices=["none", "int8"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    translators = {q: Translator.load(args.model, quantize=None if q == "none" else q) for q in args.quantize}
    pairs = read_parallel("bundled:multi30k/test_2016_flickr.en.gz", "bundled:multi30k/test_2016_flickr.de.gz")
    sources, references = [p[0] for p in pairs], [p[1] for p in pairs]
    for translator in translators.values():
        translator.translate(sources[:64], beam=1)  # warm-up
    for beam in args.beams:
        for quantization, translator in translators.items():
            report(translator, sources, references, beam, quantization, args)


def report(translator: Translator, sources: list[str], references: list[str], beam: int, quantization: str, args):
    started = time.perf_counter()
    hypotheses = translator.translate(sources, beam=beam, batch_size=args.batch_size)
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
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
