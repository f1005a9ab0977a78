"""Parallel corpora: reading, checking, filtering and token-budget batching.

A corpus is two line-aligned text files (plain or .gz) or one tab-separated file.
Reading is strict: a missing file, a line-count mismatch, invalid UTF-8 or an
empty corpus is a ``DataError`` naming the file (and line). Training pairs that
are empty or longer than ``max_length`` tokens are dropped and counted.

Batches hold about ``batch_tokens`` padded target tokens. Sentences are sorted by
length inside large shuffled pools (length bucketing, little padding) and the
batches are shuffled; the order depends only on the seed and the epoch, so an
interrupted epoch can be replayed exactly.
"""

from __future__ import annotations

import gzip
import importlib.resources
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from attnmt.config import BUNDLED_PREFIX, Config
from attnmt.errors import ConfigError, DataError, require_file
from attnmt.tokenizer import Tokenizer
from attnmt.vocab import BOS_ID, EOS_ID, PAD_ID


def resolve_path(path: str) -> Path:
    """A user path, or a ``bundled:`` path inside the installed package."""
    if path.startswith(BUNDLED_PREFIX):
        return Path(str(importlib.resources.files("attnmt") / "corpora" / path[len(BUNDLED_PREFIX) :]))
    return Path(path).expanduser()


def decode_lines(raw: bytes, name: str) -> list[str]:
    """Lines of UTF-8 text, split at "\\n" only (a final "\\r" is dropped: CRLF files read alike).

    Unicode line separators (U+2028, U+0085, form feed, ...) stay inside their line,
    so line N of the output always belongs to line N of the input. Invalid UTF-8 is
    a ``DataError`` naming ``name`` and the line.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise DataError(f"{name}:{line}: not valid UTF-8 (byte {raw[error.start]:#04x})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_lines(path: str) -> list[str]:
    """All lines of a UTF-8 text file (plain or .gz), without line endings."""
    resolved = resolve_path(path)
    require_file(path, resolved)
    try:
        raw = gzip.decompress(resolved.read_bytes()) if resolved.suffix == ".gz" else resolved.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path}: cannot read ({error})") from None
    return decode_lines(raw, path)


def read_parallel(src: str = "", tgt: str = "", tsv: str = "") -> list[tuple[str, str]]:
    """Sentence pairs from two aligned files or one TSV file (source<TAB>target)."""
    if tsv:
        pairs = []
        for number, line in enumerate(read_lines(tsv), start=1):
            fields = line.split("\t")
            if len(fields) != 2:
                raise DataError(f"{tsv}:{number}: expected source<TAB>target, found {len(fields)} field(s)")
            pairs.append((fields[0].strip(), fields[1].strip()))
        if not pairs:
            raise DataError(f"{tsv}: empty corpus")
        return pairs
    if not src or not tgt:
        raise DataError("a corpus needs both a source and a target file (or one TSV file)")
    src_lines, tgt_lines = read_lines(src), read_lines(tgt)
    if len(src_lines) != len(tgt_lines):
        raise DataError(
            f"{src} has {len(src_lines)} lines but {tgt} has {len(tgt_lines)}: parallel files must be line-aligned"
        )
    if not src_lines:
        raise DataError(f"{src}: empty corpus")
    return [(s.strip(), t.strip()) for s, t in zip(src_lines, tgt_lines)]


@dataclass
class EncodedCorpus:
    """Token ids of kept pairs (sources end in </s>; targets have neither <s> nor </s>)."""

    src: list[list[int]]
    tgt: list[list[int]]
    dropped_empty: int = 0
    dropped_long: int = 0

    def __len__(self) -> int:
        return len(self.src)

    def target_tokens(self) -> int:
        """Target tokens per epoch, counting the </s> the decoder must predict."""
        return sum(len(t) + 1 for t in self.tgt)


def filter_pairs(src: list[list[int]], tgt: list[list[int]], max_length: int) -> EncodedCorpus:
    """Drop empty pairs and pairs with a side longer than ``max_length`` tokens."""
    corpus = EncodedCorpus([], [])
    for s, t in zip(src, tgt):
        if len(s) <= 1 or not t:  # the source always holds </s>
            corpus.dropped_empty += 1
        elif len(s) > max_length or len(t) + 1 > max_length:
            corpus.dropped_long += 1
        else:
            corpus.src.append(s)
            corpus.tgt.append(t)
    return corpus


@dataclass
class Batch:
    """Padded tensors of one batch.

    ``src`` (B, S) and ``src_lengths`` (B,); ``tgt_in`` (B, T) starts with <s>,
    ``tgt_out`` (B, T) ends with </s> (the words to predict); ``target_tokens`` is
    the number of real target tokens (the loss is averaged over them).
    """

    src: torch.Tensor
    src_lengths: torch.Tensor
    tgt_in: torch.Tensor
    tgt_out: torch.Tensor
    target_tokens: int

    def to(self, device: torch.device) -> Batch:
        return Batch(
            self.src.to(device),
            self.src_lengths.to(device),
            self.tgt_in.to(device),
            self.tgt_out.to(device),
            self.target_tokens,
        )


def pad(sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists into (B, max length) with PAD_ID; also return lengths."""
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    padded = torch.full((len(sequences), int(lengths.max())), PAD_ID, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        padded[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
    return padded, lengths


def make_batch(src: list[list[int]], tgt: list[list[int]]) -> Batch:
    """Teacher-forcing batch: decoder input <s> y_1..y_n, output y_1..y_n </s>."""
    src_tensor, src_lengths = pad(src)
    tgt_in, _ = pad([[BOS_ID] + t for t in tgt])
    tgt_out, tgt_lengths = pad([t + [EOS_ID] for t in tgt])
    return Batch(src_tensor, src_lengths, tgt_in, tgt_out, int(tgt_lengths.sum()))


def shard(indices: list[int], parts: int) -> list[list[int]]:
    """Deal a batch's sentences into ``parts`` shares of about equal size and length (round-robin).

    The batch is sorted by length, so dealing it like cards gives every share the
    same mix of lengths. With fewer sentences than parts some shares are empty.
    """
    return [indices[part::parts] for part in range(parts)]


def token_batches(corpus: EncodedCorpus, batch_tokens: int, seed: int, epoch: int) -> list[list[int]]:
    """Index lists of the batches of one epoch, about ``batch_tokens`` padded targets each.

    Shuffle, sort pools of ~100 batches by (target, source) length, cut batches
    whose padded target size stays within the budget, shuffle the batches. The
    result depends only on (seed, epoch).
    """
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(len(corpus), generator=generator).tolist()
    mean_length = max(1, corpus.target_tokens() // max(1, len(corpus)))
    pool_size = max(1, 100 * batch_tokens // mean_length)
    batches: list[list[int]] = []
    for start in range(0, len(order), pool_size):
        pool = sorted(order[start : start + pool_size], key=lambda i: (len(corpus.tgt[i]), len(corpus.src[i])))
        batch: list[int] = []
        longest = 0
        for index in pool:
            length = len(corpus.tgt[index]) + 1
            if batch and max(longest, length) * (len(batch) + 1) > batch_tokens:
                batches.append(batch)
                batch, longest = [], 0
            batch.append(index)
            longest = max(longest, length)
        if batch:
            batches.append(batch)
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffled]


def prepare_data(
    config: Config, tokenizer_for: Callable[[list[tuple[str, str]]], Tokenizer], log: Callable[[str], None]
) -> tuple[Tokenizer, EncodedCorpus, list[tuple[str, str]]]:
    """Read the corpora, get the tokenizer (``tokenizer_for`` the usable training pairs), encode and filter."""
    d = config.data
    if not (d.train_tsv or (d.train_src and d.train_tgt)):
        raise ConfigError("data: give train_src and train_tgt (or train_tsv)")
    if not (d.valid_tsv or (d.valid_src and d.valid_tgt)):
        raise ConfigError("data: give valid_src and valid_tgt (or valid_tsv)")
    train_pairs = read_parallel(d.train_src, d.train_tgt, d.train_tsv)
    valid_pairs = read_parallel(d.valid_src, d.valid_tgt, d.valid_tsv)
    kept = [p for p in train_pairs if p[0] and p[1]]
    if not kept:
        raise DataError(f"{d.train_tsv or d.train_src}: no sentence pair has text on both sides")
    valid = [p for p in valid_pairs if p[0]]
    if not valid:
        raise DataError(f"{d.valid_tsv or d.valid_src}: every validation source line is empty")
    tokenizer = tokenizer_for(kept)
    train = filter_pairs(
        tokenizer.encode_src([p[0] for p in train_pairs]),
        tokenizer.encode_tgt([p[1] for p in train_pairs]),
        d.max_length,
    )
    if len(train) == 0:
        raise ConfigError(f"data: no training pair is left after filtering by data.max_length={d.max_length}")
    log(
        f"{len(train)} training pairs kept, {train.dropped_empty} empty and {train.dropped_long} longer than "
        f"{d.max_length} tokens skipped; {len(valid)} validation pairs"
    )
    return tokenizer, train, valid
