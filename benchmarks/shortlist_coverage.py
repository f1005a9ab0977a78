"""Would a target-vocabulary shortlist pay here? Coverage and size, measured on val2016.

    python benchmarks/shortlist_coverage.py --model RUN [--per-source 10 25 50 100] [--frequent 100 300 1000]

A shortlist (Jean et al. 2015, sec. 3.2; Marian's ``--shortlist``) computes the
output layer only over a batch's candidate words: the F most frequent target
pieces plus, for every source piece in the batch, its K most likely translations
from a lexical table. Here the table is IBM Model 1 (Brown et al. 1993), five
EM iterations over the training pairs of the model's config, tokenised by the
model's own tokenizer. For each (K, F) the script prints, over val2016:

- ``reference_coverage``: share of reference target pieces inside their sentence's list;
- ``output_coverage``: share of the pieces the model itself outputs (beam 5, full
  vocabulary) inside the list: the rest would have to change;
- ``union_per_64``: mean candidates per batch of 64 sentences, against the full
  target vocabulary (the output layer's rows).
"""

from __future__ import annotations

import argparse
import json

import torch

from attnmt import Translator
from attnmt.data import read_parallel
from attnmt.vocab import EOS_ID


def model1(src: list[list[int]], tgt: list[list[int]], src_vocab: int, tgt_vocab: int, iterations: int = 5):
    """IBM Model 1 p(t | s) by EM; returns (source ids, target ids, probabilities) of every co-occurring pair."""
    rows_s, rows_t, rows_occ, occurrences = [], [], [], 0
    for s, t in zip(src, tgt):
        s_ids, t_ids = torch.tensor(s), torch.tensor([*t, EOS_ID])
        rows_s.append(s_ids.repeat(len(t_ids)))
        rows_t.append(t_ids.repeat_interleave(len(s_ids)))
        rows_occ.append(torch.arange(occurrences, occurrences + len(t_ids)).repeat_interleave(len(s_ids)))
        occurrences += len(t_ids)
    s_all, t_all, occ = torch.cat(rows_s), torch.cat(rows_t), torch.cat(rows_occ)
    keys, key_of = torch.unique(s_all * tgt_vocab + t_all, return_inverse=True)
    key_source = keys // tgt_vocab
    prob = torch.ones(keys.numel())
    for _ in range(iterations):
        weight = prob[key_of]
        posterior = weight / torch.zeros(occurrences).index_add_(0, occ, weight)[occ]  # E-step: align each t
        counts = torch.zeros(keys.numel()).index_add_(0, key_of, posterior)
        prob = counts / torch.zeros(src_vocab).index_add_(0, key_source, counts)[key_source]  # M-step
    return key_source, keys % tgt_vocab, prob


def top_per_source(sources: torch.Tensor, targets: torch.Tensor, prob: torch.Tensor, k: int) -> dict[int, list[int]]:
    """The k most probable target pieces of every source piece."""
    order = torch.argsort(sources.double() * 2 - prob.double(), stable=True)  # by source, then p descending
    table: dict[int, list[int]] = {}
    for s, t in zip(sources[order].tolist(), targets[order].tolist()):
        candidates = table.setdefault(s, [])
        if len(candidates) < k:
            candidates.append(t)
    return table


def coverage(table, frequent: set[int], src, refs, outputs) -> dict[str, float]:
    """Reference and output coverage, and the mean union size per batch of 64 sentences."""
    covered_ref = covered_out = total_ref = total_out = 0
    unions, union = [], set(frequent)
    for index, (s, ref, out) in enumerate(zip(src, refs, outputs)):
        candidates = set(frequent)
        for piece in s:
            candidates.update(table.get(piece, []))
        union |= candidates
        if index % 64 == 63:
            unions.append(len(union))
            union = set(frequent)
        covered_ref += sum(piece in candidates for piece in ref)
        covered_out += sum(piece in candidates for piece in out)
        total_ref, total_out = total_ref + len(ref), total_out + len(out)
    return {
        "reference_coverage": round(covered_ref / total_ref, 4),
        "output_coverage": round(covered_out / total_out, 4),
        "union_per_64": round(sum(unions) / len(unions)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--per-source", type=int, nargs="+", default=[10, 25, 50, 100])
    parser.add_argument("--frequent", type=int, nargs="+", default=[100, 300, 1000])
    args = parser.parse_args()
    translator = Translator.load(args.model)
    tokenizer, data = translator.tokenizer, translator.config.data
    train = read_parallel(data.train_src, data.train_tgt, data.train_tsv)
    src = tokenizer.encode_src([p[0] for p in train])
    tgt = tokenizer.encode_tgt([p[1] for p in train])
    sources, targets, prob = model1(src, tgt, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size)
    counts = torch.zeros(tokenizer.tgt_vocab_size)
    for t in tgt:
        counts.index_add_(0, torch.tensor(t, dtype=torch.long), torch.ones(len(t)))
    valid = read_parallel(data.valid_src, data.valid_tgt, data.valid_tsv)
    valid_src = tokenizer.encode_src([p[0] for p in valid])
    refs = tokenizer.encode_tgt([p[1] for p in valid])
    outputs = tokenizer.encode_tgt(translator.translate([p[0] for p in valid], beam=5))
    print(json.dumps({"model": args.model, "target_vocab": tokenizer.tgt_vocab_size}), flush=True)
    for k in args.per_source:
        table = top_per_source(sources, targets, prob, k)
        for f in args.frequent:
            frequent = set(torch.argsort(-counts)[:f].tolist()) | {EOS_ID}
            print(json.dumps({"per_source": k, "frequent": f, **coverage(table, frequent, valid_src, refs, outputs)}))


if __name__ == "__main__":
    main()
