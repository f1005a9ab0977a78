"""Evaluation with sacreBLEU: corpus BLEU and chrF on detokenised text, with signatures."""

from __future__ import annotations

from typing import Any

import sacrebleu

#: Source-length buckets (in words) for BLEU by sentence length, Bahdanau et al. Fig. 2 style.
LENGTH_BUCKETS: list[tuple[int, int]] = [
    (1, 5),
    (6, 10),
    (11, 15),
    (16, 20),
    (21, 25),
    (26, 30),
    (31, 40),
    (41, 50),
    (51, 10_000),
]


def corpus_scores(hypotheses: list[str], references: list[str]) -> dict[str, Any]:
    """sacreBLEU BLEU (13a, cased) and chrF of ``hypotheses`` against one reference each."""
    bleu = sacrebleu.metrics.BLEU()
    chrf = sacrebleu.metrics.CHRF()
    bleu_score = bleu.corpus_score(hypotheses, [references])
    chrf_score = chrf.corpus_score(hypotheses, [references])
    return {
        "bleu": round(bleu_score.score, 2),
        "chrf": round(chrf_score.score, 2),
        "signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
        "bleu_detail": str(bleu_score),
    }


def bleu_by_length(
    sources: list[str], hypotheses: list[str], references: list[str], buckets: list[tuple[int, int]] = LENGTH_BUCKETS
) -> list[dict[str, Any]]:
    """Corpus BLEU of the sentences in each source-length bucket (length in words)."""
    rows = []
    for low, high in buckets:
        chosen = [i for i, s in enumerate(sources) if low <= len(s.split()) <= high]
        if not chosen:
            continue
        score = sacrebleu.metrics.BLEU().corpus_score(
            [hypotheses[i] for i in chosen], [[references[i] for i in chosen]]
        )
        rows.append({"min_words": low, "max_words": high, "sentences": len(chosen), "bleu": round(score.score, 2)})
    return rows
