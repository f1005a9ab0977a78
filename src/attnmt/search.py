"""Decoding: unroll the decoder, feed each chosen word back, stop at <EOS>.

Both searches run batched over sentences (and beams) through one step API, drop
finished sentences from the batch as they go, and work with any *step model*:
a ``Seq2Seq`` or an ensemble of them (``ensemble.py``). Each sentence's maximum
output length depends only on its own source length, so a sentence translates
the same alone or in a batch.

- ``greedy_search`` picks the most probable word at every step.
- ``beam_search`` keeps the K best partial translations. Candidates are scored by
  summed log-probability; a hypothesis that ends in <EOS> among the K best
  candidates of a step is finished, and a sentence is done when it has K finished
  hypotheses (or reaches its maximum length). Finished hypotheses are ranked by
  score / lp(length) with the GNMT length penalty lp(L) = ((5 + L) / 6)^alpha
  (Wu et al. 2016, eq. 14). With K = 1 this is exactly greedy search.
  A sentence also stops as soon as no live hypothesis can still enter its n best:
  log-probabilities are <= 0, so a live score s can at best end as
  s / lp(maximum length) — the same translations, fewer steps. The first step,
  identical for all K hypotheses, runs once per sentence; the K hypotheses then
  share their sentence's encoder memory (``EncoderMemory.for_beams``) instead of
  K copies, and the best continuations are found block by block (``selection.py``).
- ``search`` translates a list of id sequences of any lengths: it sorts them by
  length, cuts batches, runs one of the two searches and restores the order.

Dimension letters: B sentences, K beam size, S source positions, V vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Protocol

import torch

from attnmt import limits
from attnmt.data import pad
from attnmt.errors import InputError
from attnmt.products import PackedWeights, onednn_products
from attnmt.selection import best_continuations
from attnmt.vocab import BOS_ID, EOS_ID
from attnmt.workers import ordered_map, resolve_workers


class Reorderable(Protocol):
    """Encoder memory or decoder state: rows can be selected (and repeated).

    Encoder memory also has ``for_beams(K)``: the memory of K hypotheses per
    sentence (rows ``b * K + k``), shared or copied.
    """

    def reorder(self, indices: torch.Tensor) -> Any: ...


class StepModel(Protocol):
    """What search needs: encode a batch once, then advance all rows by one word.

    ``step`` returns log-probabilities (B, V) of the next word, the new state and
    the step's details (``details.attention`` is None or holds ``weights`` (B, 1, S)).
    """

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> tuple[Any, Any]: ...

    def step(self, prev_tokens: torch.Tensor, state: Any, memory: Any) -> tuple[torch.Tensor, Any, Any]: ...


@dataclass
class Hypothesis:
    """One translation: token ids (without <s> and </s>), its score, its attention.

    ``score`` is the summed log-probability of the tokens and </s> divided by the
    length penalty lp(len(tokens) + 1) (no penalty when alpha = 0); greedy and beam
    search report it alike. ``attention`` (len(tokens) + 1, S) holds the weights of
    every output step including </s>, over the sentence's real source tokens (None
    if not recorded or the model has no attention).
    """

    tokens: list[int]
    score: float
    attention: torch.Tensor | None = None


@dataclass(frozen=True)
class DecodingOptions:
    """How to search: beam size (1 = greedy), n-best, length penalty, output limit, batch size.

    The output limit of a sentence is ``max_length_ratio`` x source tokens +
    ``max_length_extra`` (never more than ``limits.MAX_OUTPUT_TOKENS``).
    """

    beam: int = 5
    nbest: int = 1
    length_penalty: float = 1.0  # GNMT alpha; as ``config.DecodingConfig``
    max_length_ratio: float = 1.5
    max_length_extra: int = 10
    batch_size: int = 64
    onednn: bool = False  # fp32 products on oneDNN (``products.py``); the same translations

    @classmethod
    def from_config(cls, decoding: Any) -> DecodingOptions:
        """The options of a config's ``decoding:`` section."""
        return cls(
            beam=decoding.beam,
            length_penalty=decoding.length_penalty,
            max_length_ratio=decoding.max_length_ratio,
            max_length_extra=decoding.max_length_extra,
            batch_size=decoding.batch_size,
        )

    def with_overrides(
        self,
        beam: int | None = None,
        nbest: int | None = None,
        batch_size: int | None = None,
        length_penalty: float | None = None,
    ) -> Any:
        """A copy with the given values replaced (None keeps the current one)."""
        changes: dict[str, Any] = dict(beam=beam, nbest=nbest, batch_size=batch_size, length_penalty=length_penalty)
        return replace(self, **{key: value for key, value in changes.items() if value is not None})

    def check(self) -> DecodingOptions:
        """Raise ``InputError`` naming the option when a value is out of range; return self."""
        _check_int("beam", self.beam, 1, limits.MAX_BEAM)
        _check_int("nbest", self.nbest, 1, self.beam, f"between 1 and the beam size {self.beam}")
        _check_int("batch_size", self.batch_size, 1, limits.MAX_BATCH_SIZE)
        _check_int("max_length_extra", self.max_length_extra, 0, limits.MAX_LENGTH_EXTRA)
        if not 0.0 <= self.length_penalty <= 10.0:
            raise InputError("length_penalty", f"must be between 0 and 10, got {self.length_penalty}")
        if not 0.0 < self.max_length_ratio <= limits.MAX_LENGTH_RATIO:
            raise InputError(
                "max_length_ratio",
                f"must be above 0 and at most {limits.MAX_LENGTH_RATIO}, got {self.max_length_ratio}",
            )
        return self


def _check_int(name: str, value: Any, low: int, high: int, allowed: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InputError(name, f"must be {allowed or f'an integer from {low} to {high}'}, got {value!r}")


def length_penalty(length: int | torch.Tensor, alpha: float) -> float | torch.Tensor:
    """GNMT length penalty lp(L) = ((5 + L) / 6) ** alpha (Wu et al. 2016, eq. 14)."""
    return ((5 + length) / 6) ** alpha


def max_output_lengths(src_lengths: torch.Tensor, ratio: float, extra: int) -> torch.Tensor:
    """Longest output allowed per sentence (tokens including </s>): ratio * |src| + extra, capped."""
    lengths = (src_lengths.float() * ratio).long() + extra
    return lengths.clamp(1, limits.MAX_OUTPUT_TOKENS)


def _force_eos(log_probs: torch.Tensor, at_limit: torch.Tensor) -> torch.Tensor:
    """Rows where ``at_limit`` is True may only produce </s>."""
    if not bool(at_limit.any()):
        return log_probs
    forced = torch.full_like(log_probs, float("-inf"))
    forced[:, EOS_ID] = 0.0
    return torch.where(at_limit.unsqueeze(1), forced, log_probs)


def _step_weights(details: Any) -> torch.Tensor | None:
    """A step's attention weights (B, 1, S), or None if the model has no attention."""
    return None if details.attention is None else details.attention.weights


def _append_attention(attention: torch.Tensor | None, weights: torch.Tensor | None) -> torch.Tensor | None:
    """Add this step's weights (B, 1, S) to the record (B, t, S); None if not recorded or no attention."""
    if attention is None or weights is None:
        return None
    return torch.cat([attention, weights.float()], dim=1)


@torch.no_grad()
def greedy_search(
    model: StepModel,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    max_lengths: torch.Tensor,
    alpha: float = 0.0,
    record_attention: bool = False,
) -> list[Hypothesis]:
    """Most probable word at each step, for a batch ``src`` (B, S). One hypothesis each."""
    memory, state = model.encode(src, src_lengths)
    batch, device = src.size(0), src.device
    alive = torch.arange(batch, device=device)  # original sentence index of each row
    prev = torch.full((batch,), BOS_ID, dtype=torch.long, device=device)
    tokens = torch.empty(batch, 0, dtype=torch.long, device=device)
    scores = torch.zeros(batch, device=device)
    attention = torch.zeros(batch, 0, src.size(1), device=device) if record_attention else None
    results: list[Hypothesis | None] = [None] * batch
    limit = max_lengths.to(device)
    for t in range(int(limit.max())):
        log_probs, state, details = model.step(prev, state, memory)  # (B', V)
        step_scores, prev = _force_eos(log_probs, limit <= t + 1).max(dim=-1)  # (B',)
        scores = scores + step_scores
        tokens = torch.cat([tokens, prev.unsqueeze(1)], dim=1)
        attention = _append_attention(attention, _step_weights(details))
        finished = prev == EOS_ID
        if not bool(finished.any()):
            continue
        penalty = float(length_penalty(t + 1, alpha))
        for row in finished.nonzero().flatten().tolist():
            sentence = int(alive[row])
            attn = attention[row, :, : int(src_lengths[sentence])].cpu() if attention is not None else None
            results[sentence] = Hypothesis(tokens[row, :-1].tolist(), float(scores[row]) / penalty, attn)
        keep = (~finished).nonzero().flatten()
        if keep.numel() == 0:
            break
        alive, prev, tokens, scores, limit = alive[keep], prev[keep], tokens[keep], scores[keep], limit[keep]
        memory, state = memory.reorder(keep), state.reorder(keep)
        attention = attention[keep] if attention is not None else None
    return [r if r is not None else Hypothesis([], float("-inf")) for r in results]


@dataclass
class _Finished:
    """A finished beam hypothesis: its length-penalised score, tokens and attention."""

    score: float
    tokens: list[int]
    attention: torch.Tensor | None


class _Beams:
    """The K live hypotheses of every unfinished sentence, and the finished ones.

    Rows are grouped in blocks of K per sentence: row ``b * K + k`` is hypothesis k
    of the b-th sentence still alive (``alive[b]`` is its index in the batch).
    """

    def __init__(
        self,
        src_lengths: torch.Tensor,
        max_lengths: torch.Tensor,
        beam: int,
        alpha: float,
        record: bool,
        width: int,
        nbest: int = 1,
    ) -> None:
        batch, device = src_lengths.size(0), src_lengths.device
        self.beam, self.alpha, self.nbest, self.src_lengths, self.device = beam, alpha, nbest, src_lengths, device
        self.alive = list(range(batch))
        self.limits = max_lengths.to(device)
        self.scores = torch.full((batch, beam), float("-inf"), device=device)
        self.scores[:, 0] = 0.0  # all beams start identical: keep one
        self.prev = torch.full((batch * beam,), BOS_ID, dtype=torch.long, device=device)
        self.history = torch.empty(batch * beam, 0, dtype=torch.long, device=device)
        self.attention = torch.zeros(batch * beam, 0, width, device=device) if record else None
        self.finished: list[list[_Finished]] = [[] for _ in range(batch)]
        self.rank = torch.arange(2 * beam, device=device)

    def advance(self, log_probs: torch.Tensor, weights: torch.Tensor | None, t: int) -> torch.Tensor:
        """Extend every hypothesis by one word; return the rows (B'*K,) the state must follow.

        The 2K best candidates of each sentence (hypothesis k's summed log-probability
        plus log p(word)) are found without ranking all K * V (``selection.py``).
        """
        beam = self.beam
        log_probs = _force_eos(log_probs, (self.limits <= t + 1).repeat_interleave(beam))
        top_scores, from_beam, token = best_continuations(self.scores, log_probs, 2 * beam)  # (B', 2K) each
        self.attention = _append_attention(self.attention, weights)
        is_eos = token == EOS_ID
        self._finish(is_eos & (self.rank < beam) & (top_scores > float("-inf")), top_scores, from_beam, t)
        order = (is_eos.long() * 2 * beam + self.rank).argsort(dim=1)[:, :beam]  # K best that go on: (B', K)
        self.scores = top_scores.gather(1, order)
        blocks = torch.arange(len(self.alive), device=self.device).unsqueeze(1) * beam
        chosen = (blocks + from_beam.gather(1, order)).view(-1)  # (B'*K,)
        self.prev = token.gather(1, order).view(-1)
        self.history = torch.cat([self.history[chosen], self.prev.unsqueeze(1)], dim=1)
        self.attention = self.attention[chosen] if self.attention is not None else None
        return chosen

    def _finish(self, ends: torch.Tensor, top_scores: torch.Tensor, from_beam: torch.Tensor, t: int) -> None:
        """Record candidates that end in </s> among the K best of a step (at most K per sentence)."""
        penalty = float(length_penalty(t + 1, self.alpha))
        for row, j in ends.nonzero().tolist():
            sentence = self.alive[row]
            if len(self.finished[sentence]) >= self.beam:
                continue
            source = row * self.beam + int(from_beam[row, j])
            length = int(self.src_lengths[sentence])
            attn = self.attention[source, :, :length].cpu() if self.attention is not None else None
            self.finished[sentence].append(
                _Finished(float(top_scores[row, j]) / penalty, self.history[source].tolist(), attn)
            )

    def _done(self) -> torch.Tensor:
        """Which alive sentences (B',) are done: K finished, or no live hypothesis can enter the n best.

        A live hypothesis with summed log-probability s (<= 0, and only falling) can
        at best finish as s / lp(limit): if that is below the n-th best finished
        score, search can stop without changing the n best.
        """
        hyps = [self.finished[sentence] for sentence in self.alive]
        full = torch.tensor([len(h) >= self.beam for h in hyps], device=self.device)
        nth_best = [
            sorted((f.score for f in h), reverse=True)[self.nbest - 1] if len(h) >= self.nbest else -math.inf
            for h in hyps
        ]  # finished scores are finite, so -inf means "fewer than n finished"
        if max(nth_best) == -math.inf:
            return full
        best_possible = self.scores.max(dim=1).values / length_penalty(self.limits.to(self.scores.dtype), self.alpha)
        return full | (torch.tensor(nth_best, device=self.device) >= best_possible)

    def drop_done(self) -> tuple[torch.Tensor | None, bool]:
        """Remove the sentences that are done; the rows kept (None if none was removed), and whether all are done."""
        done = self._done()
        if bool(done.all()):
            return None, True
        if not bool(done.any()):
            return None, False
        keep_sentences = (~done).nonzero().flatten()
        rows = (keep_sentences.unsqueeze(1) * self.beam + torch.arange(self.beam, device=self.device)).view(-1)
        self.alive = [self.alive[i] for i in keep_sentences.tolist()]
        self.limits, self.scores = self.limits[keep_sentences], self.scores[keep_sentences]
        self.prev, self.history = self.prev[rows], self.history[rows]
        self.attention = self.attention[rows] if self.attention is not None else None
        return rows, False

    def best(self, nbest: int) -> list[list[Hypothesis]]:
        ranked = (sorted(hyps, key=lambda f: -f.score)[:nbest] for hyps in self.finished)
        return [[Hypothesis(f.tokens, f.score, f.attention) for f in hyps] for hyps in ranked]


@torch.no_grad()
def beam_search(
    model: StepModel,
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
        raise InputError("nbest", f"must be between 1 and the beam size {beam}, got {nbest}")
    memory, state = model.encode(src, src_lengths)
    beams = _Beams(src_lengths, max_lengths, beam, alpha, record_attention, src.size(1), nbest)
    # The first step is the same for all K hypotheses of a sentence: run it once per sentence.
    log_probs, state, details = model.step(beams.prev[::beam], state, memory)  # (B, V)
    expand = torch.arange(src.size(0), device=src.device).repeat_interleave(beam)  # (B*K,)
    memory, state, weights = memory.for_beams(beam), state.reorder(expand), _step_weights(details)
    log_probs, weights = log_probs.index_select(0, expand), None if weights is None else weights.index_select(0, expand)
    for t in range(int(beams.limits.max())):
        if t > 0:
            log_probs, state, details = model.step(beams.prev, state, memory)  # (B'*K, V)
            weights = _step_weights(details)
        state = state.reorder(beams.advance(log_probs, weights, t))
        rows, all_done = beams.drop_done()
        if all_done:
            break
        if rows is not None:
            memory, state = memory.reorder(rows), state.reorder(rows)
    return beams.best(nbest)


def _search_batch(
    model: StepModel, batch: list[list[int]], options: DecodingOptions, device: torch.device, record_attention: bool
) -> list[list[Hypothesis]]:
    """One batch of id sequences: greedy search for beam 1, beam search otherwise."""
    src, lengths = (tensor.to(device) for tensor in pad(batch))
    limit = max_output_lengths(lengths, options.max_length_ratio, options.max_length_extra)
    alpha = options.length_penalty
    if options.beam == 1:
        return [[h] for h in greedy_search(model, src, lengths, limit, alpha, record_attention)]
    return beam_search(model, src, lengths, limit, options.beam, alpha, options.nbest, record_attention)


def search(
    model: StepModel,
    src_ids: list[list[int]],
    options: DecodingOptions,
    device: torch.device,
    record_attention: bool = False,
    workers: int | str = 1,
    packed: PackedWeights | None = None,
) -> list[list[Hypothesis]]:
    """Translate id sequences (each ending in </s>) batch by batch; ``options.nbest`` each, in input order.

    Sentences are sorted by length so that each batch holds similar lengths
    (little padding); each result goes back to its input position. With
    ``workers`` > 1 (or "auto") the batches are shared among forked processes (``workers.py``).
    With ``options.onednn``, products read the ``packed`` weights (``products.py``).
    """
    options.check()
    workers = resolve_workers(workers, device)
    order = sorted(range(len(src_ids)), key=lambda i: -len(src_ids[i]))
    chunks = [order[start : start + options.batch_size] for start in range(0, len(order), options.batch_size)]

    def run(chunk: list[int]) -> list[list[Hypothesis]]:
        with onednn_products(options.onednn, packed):  # here, in the process and thread that decodes
            return _search_batch(model, [src_ids[i] for i in chunk], options, device, record_attention)

    found = {i: hyps for chunk, done in zip(chunks, ordered_map(run, chunks, workers)) for i, hyps in zip(chunk, done)}
    return [found[i] for i in range(len(src_ids))]
