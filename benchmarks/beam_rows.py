"""How much decoder work a search spends beyond the words it outputs, on Multi30k test2016.

    python benchmarks/beam_rows.py --model RUN [--beams 1 5] [--length-penalty 0.6]

Counts the rows (hypotheses) of every decoder step over the 1,000 test
sentences and divides by the output tokens (with </s>) times the beam size. A
search that stopped each sentence the moment its best hypothesis ended would
read 1.0: the excess is the most that a looser stopping rule (such as
OpenNMT-py's: stop when the top beam has ended) could save, at the price of
different translations.
"""

from __future__ import annotations

import argparse
import json

import torch

from attnmt import Translator
from attnmt.data import read_parallel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--length-penalty", type=float)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    translator = Translator.load(args.model)
    test = "bundled:multi30k/test_2016_flickr"
    sources = [p[0] for p in read_parallel(f"{test}.en.gz", f"{test}.de.gz")]
    counts = {"rows": 0, "steps": 0}
    step = translator.model.step

    def counted_step(prev_tokens, state, memory):  # type: ignore[no-untyped-def]
        counts["rows"] += prev_tokens.numel()
        counts["steps"] += 1
        return step(prev_tokens, state, memory)

    translator.model.step = counted_step  # type: ignore[method-assign]
    for beam in args.beams:
        counts.update(rows=0, steps=0)
        outputs = translator.translate(sources, beam=beam, batch_size=64, length_penalty=args.length_penalty)
        tokens = sum(len(ids) + 1 for ids in translator.tokenizer.encode_tgt(outputs))
        row = {"beam": beam, "decoder_rows": counts["rows"], "steps": counts["steps"], "output_tokens": tokens}
        print(json.dumps({**row, "rows_per_output_token_and_beam": round(counts["rows"] / tokens / beam, 3)}))


if __name__ == "__main__":
    main()
