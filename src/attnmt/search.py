"""Decoding: unroll the decoder, feed each chosen word back, stop at <EOS>.

Both searches run batched over sentences (and beams) through ``Seq2Seq.step`` and
drop finished sentences from the batch as they go. Each sentence's maximum output
length depends only on its own source length, so a sentence translates the same
alone or in a batch.

- ``greedy_search`` picks the most probable word at every step.
- ``beam_search`` keeps the K best partial translations. Candidates are scored by
  summed log-probability; a hypothesis that ends in <EOS> among the K best
  candidates of a step is finished, and a sentence is done when it has K finished
  hypotheses (or reaches its maximum length). Finished hypotheses are ranked by
  score / lp(length) with the GNMT length penalty lp(L) = ((5 + L) / 6)^alpha
  (Wu et al. 2016, eq. 14). With K = 1 this is exactly greedy search.

Dimension letters: B sentences, K beam size, S source positions, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from attnmt.model import Seq2Seq
from attnmt.vocab import BOS_ID, EOS_ID


@dataclass
class Hypothesis:
    """One translation: token ids (without <s> and </s>), its score, its attention.

    ``score`` is the summed log-probability (including </s>) divided by the length
    penalty; ``attention`` (len(tokens) + 1, S) holds the weights of every output
    step including </s>, over the sentence's real source tokens (None if not
    recorded or the model has no attention).
    """

    tokens: list[int]
    score: float
    attention: torch.Tensor | None = None


def length_penalty(length: int | torch.Tensor, alpha: float) -> float | torch.Tensor:
    """GNMT length penalty lp(L) = ((5 + L) / 6) ** alpha (Wu et al. 2016, eq. 14)."""
    return ((5 + length) / 6) ** alpha


def max_output_lengths(src_lengths: torch.Tensor, ratio: float, extra: int) -> torch.Tensor:
    """Longest output allowed per sentence (tokens including </s>): ratio * |src| + extra."""
    return (src_lengths.float() * ratio).long() + extra


def _force_eos(log_probs: torch.Tensor, at_limit: torch.Tensor) -> torch.Tensor:
    """Rows where ``at_limit`` is True may only produce </s>."""
    if not bool(at_limit.any()):
        return log_probs
    forced = torch.full_like(log_probs, float("-inf"))
    forced[:, EOS_ID] = 0.0
    return torch.where(at_limit.unsqueeze(1), forced, log_probs)


@torch.no_grad()
def greedy_search(
    model: Seq2Seq,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    max_lengths: torch.Tensor,
    record_attention: bool = False,
) -> list[Hypothesis]:
    """Most probable word at each step, for a batch ``src`` (B, S). One hypothesis each."""
    memory, state = model.encode(src, src_lengths)
    batch = src.size(0)
    alive = torch.arange(batch)  # original sentence index of each row
    prev = torch.full((batch,), BOS_ID, dtype=torch.long, device=src.device)
    tokens = torch.empty(batch, 0, dtype=torch.long, device=src.device)
    scores = torch.zeros(batch, device=src.device)
    attention = src.new_zeros(batch, 0, src.size(1), dtype=torch.float) if record_attention else None
    results: list[Hypothesis | None] = [None] * batch
    limits = max_lengths.to(src.device)
    for t in range(int(limits.max())):
        log_probs, state, details = model.step(prev, state, memory)  # (B', V)
        log_probs = _force_eos(log_probs, limits <= t + 1)
        step_scores, prev = log_probs.max(dim=-1)  # (B',)
        scores = scores + step_scores
        tokens = torch.cat([tokens, prev.unsqueeze(1)], dim=1)
        weights = details.attention.weights if details.attention is not None else None
        if attention is not None and weights is not None:
            attention = torch.cat([attention, weights.float()], dim=1)
        finished = prev == EOS_ID
        if bool(finished.any()):
            for row in finished.nonzero().flatten().tolist():
                sentence = int(alive[row])
                length = int(src_lengths[sentence])
                attn = attention[row, :, :length].cpu() if attention is not None and weights is not None else None
                results[sentence] = Hypothesis(tokens[row, :-1].tolist(), float(scores[row]), attn)
            keep = (~finished).nonzero().flatten()
            if keep.numel() == 0:
                break
            alive, prev, tokens, scores, limits = alive[keep], prev[keep], tokens[keep], scores[keep], limits[keep]
            memory, state = memory.reorder(keep), state.reorder(keep)
            if attention is not None:
                attention = attention[keep]
    return [r if r is not None else Hypothesis([], float("-inf")) for r in results]


@dataclass
class _Finished:
    """A finished beam hypothesis before conversion (raw score kept for ranking)."""

    score: float
    tokens: list[int]
    attention: torch.Tensor | None


@torch.no_grad()
def beam_search(
    model: Seq2Seq,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    max_lengths: torch.Tensor,
    beam: int,
    alpha: float = 0.0,
    nbest: int = 1,
    record_attention: bool = False,
) -> list[list[Hypothesis]]:
    """The ``nbest`` best translations of each sentence in ``src`` (B, S), best first."""
    if not 1 <= nbest <= beam:
        raise ValueError(f"nbest must be between 1 and the beam size {beam}, got {nbest}")
    batch, device = src.size(0), src.device
    memory, state = model.encode(src, src_lengths)
    expand = torch.arange(batch, device=device).repeat_interleave(beam)  # (B*K,)
    memory, state = memory.reorder(expand), state.reorder(expand)
    alive = list(range(batch))  # original sentence index of each row block
    limits = max_lengths.to(device)
    beam_scores = torch.full((batch, beam), float("-inf"), device=device)
    beam_scores[:, 0] = 0.0  # all beams start identical: keep one
    prev = torch.full((batch * beam,), BOS_ID, dtype=torch.long, device=device)
    history = torch.empty(batch * beam, 0, dtype=torch.long, device=device)
    attention = torch.zeros(batch * beam, 0, src.size(1), device=device) if record_attention else None
    finished: list[list[_Finished]] = [[] for _ in range(batch)]
    rank = torch.arange(2 * beam, device=device)
    for t in range(int(limits.max())):
        log_probs, state, details = model.step(prev, state, memory)  # (B'*K, V)
        vocab = log_probs.size(-1)
        at_limit = (limits <= t + 1).repeat_interleave(beam)
        log_probs = _force_eos(log_probs, at_limit)
        candidates = (beam_scores.view(-1, 1) + log_probs).view(-1, beam * vocab)  # (B', K*V)
        top_scores, top_ids = candidates.topk(2 * beam, dim=1)  # (B', 2K)
        from_beam, token = top_ids // vocab, top_ids % vocab
        weights = details.attention.weights if details.attention is not None else None
        if attention is not None and weights is not None:
            attention = torch.cat([attention, weights.float()], dim=1)
        # Finish hypotheses that end in </s> among the K best candidates.
        is_eos = token == EOS_ID
        for row, j in (is_eos & (rank < beam) & (top_scores > float("-inf"))).nonzero().tolist():
            sentence = alive[row]
            if len(finished[sentence]) >= beam:
                continue
            source = row * beam + int(from_beam[row, j])
            length = int(src_lengths[sentence])
            attn = attention[source, :, :length].cpu() if attention is not None and weights is not None else None
            score = float(top_scores[row, j]) / float(length_penalty(t + 1, alpha))
            finished[sentence].append(_Finished(score, history[source].tolist(), attn))
        # Continue with the K best candidates that did not end in </s>.
        order = (is_eos.long() * 2 * beam + rank).argsort(dim=1)[:, :beam]  # (B', K)
        beam_scores = top_scores.gather(1, order)
        chosen = (torch.arange(len(alive), device=device).unsqueeze(1) * beam + from_beam.gather(1, order)).view(-1)
        prev = token.gather(1, order).view(-1)
        history = torch.cat([history[chosen], prev.unsqueeze(1)], dim=1)
        state = state.reorder(chosen)
        if attention is not None:
            attention = attention[chosen]
        done = torch.tensor([len(finished[s]) >= beam for s in alive], device=device)
        if bool(done.all()):
            break
        if bool(done.any()):
            keep_sentences = (~done).nonzero().flatten()
            keep_rows = (keep_sentences.unsqueeze(1) * beam + torch.arange(beam, device=device)).view(-1)
            alive = [alive[i] for i in keep_sentences.tolist()]
            limits, beam_scores = limits[keep_sentences], beam_scores[keep_sentences]
            prev, history = prev[keep_rows], history[keep_rows]
            memory, state = memory.reorder(keep_rows), state.reorder(keep_rows)
            if attention is not None:
                attention = attention[keep_rows]
    return [
        [Hypothesis(f.tokens, f.score, f.attention) for f in sorted(hyps, key=lambda f: -f.score)[:nbest]]
        for hyps in finished
    ]
