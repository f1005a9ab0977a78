"""Corpus reading errors name file and line; filtering; token-budget batching."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnmt.data import filter_pairs, make_batch, read_lines, read_parallel, token_batches
from attnmt.errors import DataError
from attnmt.vocab import BOS_ID, EOS_ID, PAD_ID


def _write(path: Path, text: str | bytes) -> str:
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return str(path)


def test_reads_plain_gz_and_tsv(tmp_path: Path) -> None:
    src = _write(tmp_path / "a.en", "Hello\nWorld\r\n")
    tgt = str(tmp_path / "a.de.gz")
    with gzip.open(tgt, "wt", encoding="utf-8") as stream:
        stream.write("Hallo\nWelt\n")
    assert read_parallel(src, tgt) == [("Hello", "Hallo"), ("World", "Welt")]
    tsv = _write(tmp_path / "a.tsv", "Hello\tHallo\nWorld\tWelt\n")
    assert read_parallel(tsv=tsv) == [("Hello", "Hallo"), ("World", "Welt")]


def test_bundled_corpus_is_readable() -> None:
    pairs = read_parallel("bundled:multi30k/val.en.gz", "bundled:multi30k/val.de.gz")
    assert len(pairs) == 1014


@pytest.mark.parametrize(
    "case,message",
    [
        ("missing", r"nope\.en: file not found"),
        ("mismatch", r"a\.en has 2 lines but .*b\.de has 3"),
        ("utf8", r"bad\.en:3: not valid UTF-8"),
        ("empty", r"empty\.en: empty corpus"),
        ("tsv", r"c\.tsv:2: expected source<TAB>target"),
    ],
)
def test_errors_name_file_and_line(tmp_path: Path, case: str, message: str) -> None:
    good = _write(tmp_path / "good.de", "x\ny\n")
    if case == "missing":
        call = lambda: read_parallel(str(tmp_path / "nope.en"), good)  # noqa: E731
    elif case == "mismatch":
        call = lambda: read_parallel(_write(tmp_path / "a.en", "1\n2\n"), _write(tmp_path / "b.de", "1\n2\n3\n"))  # noqa: E731
    elif case == "utf8":
        bad = _write(tmp_path / "bad.en", b"fine\nfine\nbro\xffken\n")
        call = lambda: read_parallel(bad, _write(tmp_path / "t.de", "a\nb\nc\n"))  # noqa: E731
    elif case == "empty":
        call = lambda: read_parallel(_write(tmp_path / "empty.en", ""), _write(tmp_path / "e.de", ""))  # noqa: E731
    else:
        call = lambda: read_parallel(tsv=_write(tmp_path / "c.tsv", "a\tb\nno tab here\n"))  # noqa: E731
    with pytest.raises(DataError, match=message):
        call()


def test_read_lines_keeps_empty_lines(tmp_path: Path) -> None:
    assert read_lines(_write(tmp_path / "x.txt", "a\n\nb\n")) == ["a", "", "b"]


def test_filter_counts_empty_and_long_pairs() -> None:
    src = [[5, EOS_ID], [EOS_ID], [5] * 10 + [EOS_ID], [6, EOS_ID]]
    tgt = [[7], [7], [7], []]
    corpus = filter_pairs(src, tgt, max_length=5)
    assert (len(corpus), corpus.dropped_empty, corpus.dropped_long) == (1, 2, 1)


def test_make_batch_shifts_targets() -> None:
    batch = make_batch([[5, 6, EOS_ID], [7, EOS_ID]], [[8, 9], [10]])
    assert batch.tgt_in.tolist() == [[BOS_ID, 8, 9], [BOS_ID, 10, PAD_ID]]
    assert batch.tgt_out.tolist() == [[8, 9, EOS_ID], [10, EOS_ID, PAD_ID]]
    assert batch.src_lengths.tolist() == [3, 2]
    assert batch.target_tokens == 5


def test_token_batches_cover_everything_within_budget_and_are_deterministic() -> None:
    import random

    rng = random.Random(0)
    src = [[5] * rng.randint(1, 30) + [EOS_ID] for _ in range(500)]
    tgt = [[6] * rng.randint(1, 30) for _ in range(500)]
    corpus = filter_pairs(src, tgt, max_length=100)
    batches = token_batches(corpus, batch_tokens=200, seed=1, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(500))
    for batch in batches:
        assert max(len(corpus.tgt[i]) + 1 for i in batch) * len(batch) <= 200 or len(batch) == 1
    assert batches == token_batches(corpus, batch_tokens=200, seed=1, epoch=0)
    assert batches != token_batches(corpus, batch_tokens=200, seed=1, epoch=1)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(src=st.binary(max_size=200), tgt=st.binary(max_size=200), gz=st.booleans())
def test_reading_any_bytes_gives_pairs_or_one_data_error(tmp_path: Path, src: bytes, tgt: bytes, gz: bool) -> None:
    """Random bytes (invalid UTF-8, odd line ends, broken gzip) never raise anything but DataError."""
    src_path = _write(tmp_path / ("s.gz" if gz else "s.txt"), src)
    tgt_path = _write(tmp_path / "t.txt", tgt)
    try:
        pairs = read_parallel(src_path, tgt_path)
    except DataError:
        return
    assert len(pairs) == len(read_lines(tgt_path)) > 0
    assert all(isinstance(a, str) and isinstance(b, str) for a, b in pairs)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
def test_tsv_reading_of_any_text(tmp_path: Path, text: str) -> None:
    tsv = _write(tmp_path / "c.tsv", text)
    try:
        pairs = read_parallel(tsv=tsv)
    except DataError as error:
        assert "c.tsv" in str(error)
        return
    assert len(pairs) == len(read_lines(tsv))


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=100))
def test_decoded_lines_are_the_newline_separated_parts(text: str) -> None:
    from attnmt.data import decode_lines

    lines = decode_lines(text.encode("utf-8"), "stdin")
    expected = text.split("\n")
    if expected[-1] == "":
        expected.pop()
    assert len(lines) == len(expected)
    assert lines == [line.removesuffix("\r") for line in expected]


@pytest.mark.parametrize("pair", ["en-de", "de-en", "en-fr"])
def test_every_bundled_pair_is_readable_and_aligned(pair: str) -> None:
    from attnmt.config import load_config
    from attnmt.quickstart import bundled_config, pair_overrides

    config = load_config(bundled_config("quickstart"), pair_overrides(pair))
    source, target = pair.split("-")
    assert config.data.train_src.endswith(f"train.{source}.gz") and config.data.test_tgt.endswith(f".{target}.gz")
    for split, count in (("valid", 1014), ("test", 1000)):
        pairs = read_parallel(getattr(config.data, f"{split}_src"), getattr(config.data, f"{split}_tgt"))
        assert len(pairs) == count and all(s and t for s, t in pairs)
