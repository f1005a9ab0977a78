"""Validation: loss and perplexity under teacher forcing, and greedy BLEU, on the validation set.

Training validates every ``training.valid_every`` updates: the loss drives the
plateau learning-rate schedule, the BLEU chooses ``best.pt`` and early stopping.
BLEU is sacreBLEU's on detokenised greedy translations (``search.search`` with
beam 1), so it is the figure ``attnmt evaluate --beam 1`` would print.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from attnmt.config import Config
from attnmt.data import filter_pairs, make_batch, token_batches
from attnmt.loss import sequence_loss
from attnmt.metrics import corpus_scores
from attnmt.model import Seq2Seq
from attnmt.search import DecodingOptions, search
from attnmt.tokenizer import Tokenizer


class Validator:
    """Validation loss and perplexity (teacher forcing) and greedy BLEU on the validation set."""

    def __init__(
        self, tokenizer: Tokenizer, valid: list[tuple[str, str]], config: Config, device: torch.device, autocast: Any
    ) -> None:
        self.tokenizer, self.references, self.device, self.autocast = tokenizer, [p[1] for p in valid], device, autocast
        self.src_ids = tokenizer.encode_src([p[0] for p in valid])
        self.loss_corpus = filter_pairs(self.src_ids, tokenizer.encode_tgt(self.references), config.data.max_length)
        self.batch_tokens = config.training.batch_tokens
        self.options = DecodingOptions.from_config(config.decoding).with_overrides(beam=1, batch_size=128)

    @torch.no_grad()
    def __call__(self, model: Seq2Seq) -> dict[str, float]:
        model.eval()
        total_loss, total_tokens = 0.0, 0
        corpus = self.loss_corpus
        for indices in token_batches(corpus, self.batch_tokens, seed=0, epoch=0):
            batch = make_batch([corpus.src[i] for i in indices], [corpus.tgt[i] for i in indices]).to(self.device)
            with self.autocast():
                logits = model(batch.src, batch.src_lengths, batch.tgt_in)
            total_loss += float(sequence_loss(logits, batch.tgt_out, 0.0))
            total_tokens += batch.target_tokens
        hyps = search(model, self.src_ids, self.options, self.device)
        outputs = [self.tokenizer.decode_tgt(h[0].tokens) for h in hyps]
        valid_loss = total_loss / max(1, total_tokens)
        bleu = corpus_scores(outputs, self.references)["bleu"]
        return {"valid_loss": valid_loss, "valid_ppl": math.exp(min(valid_loss, 50)), "valid_bleu": bleu}
