"""sentencepiece: trained, saved and loaded; any Unicode text is representable."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnmt.tokenizer import Tokenizer
from attnmt.vocab import EOS_ID, UNK_ID

PAIRS = [("the cat sits on the mat", "die Katze sitzt auf der Matte"), ("a dog runs", "ein Hund rennt")] * 50


@pytest.mark.parametrize("joint", [True, False])
def test_train_save_load_round_trip(tmp_path: Path, joint: bool) -> None:
    tokenizer = Tokenizer.train(PAIRS, tmp_path, vocab_size=300, model_type="bpe", joint=joint)
    loaded = Tokenizer.load(tmp_path)
    ids = loaded.encode_src(["the cat runs"])[0]
    assert ids == tokenizer.encode_src(["the cat runs"])[0]
    assert ids[-1] == EOS_ID
    assert loaded.decode_tgt(loaded.encode_tgt(["die Katze rennt"])[0]) == "die Katze rennt"


def test_unseen_characters_survive_through_bytes(tmp_path: Path) -> None:
    tokenizer = Tokenizer.train(PAIRS, tmp_path, vocab_size=300, model_type="unigram", joint=True)
    text = "Größe 😀 日本 ßü"
    ids = tokenizer.encode_tgt([text])[0]
    assert UNK_ID not in ids
    assert tokenizer.decode_tgt(ids) == text


TEXT = st.text(st.characters(blacklist_characters="▁", blacklist_categories=("Cs",)), max_size=60)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    return Tokenizer.train(PAIRS, tmp_path_factory.mktemp("spm"), vocab_size=300, model_type="bpe", joint=True)


@settings(max_examples=200, deadline=None)
@given(text=TEXT)
def test_any_text_round_trips_to_its_normal_form(trained: Tokenizer, text: str) -> None:
    """Byte fallback: whatever the text, decoding its pieces gives back sentencepiece's normal form of it."""
    ids = trained.encode_tgt([text])[0]
    assert UNK_ID not in ids
    expected = str(trained.tgt.normalize(text)).replace("▁", " ").removeprefix(" ")
    assert trained.decode_tgt(ids) == expected


def test_the_target_vocabulary_holds_the_pieces_the_target_side_uses(tmp_path: Path) -> None:
    pairs = [("the cat sits on the mat", "die Katze sitzt auf der Matte"), ("a dog runs", "ein Hund rennt")] * 50
    tokenizer = Tokenizer.train(pairs, tmp_path, vocab_size=300, model_type="bpe", joint=True, target_vocab="used")
    full = (
        Tokenizer.train(pairs, tmp_path / "all", vocab_size=300, model_type="bpe", joint=True)
        if ((tmp_path / "all").mkdir() is None)
        else None
    )
    assert full is not None and tokenizer.src_vocab_size == full.tgt_vocab_size
    assert 4 < tokenizer.tgt_vocab_size < tokenizer.src_vocab_size
    assert tokenizer.tgt_pieces([0, 1, 2, 3]) == ["<pad>", "<unk>", "<s>", "</s>"]
    for _, target in pairs[:2]:
        ids = tokenizer.encode_tgt([target])[0]
        assert all(0 <= i < tokenizer.tgt_vocab_size for i in ids) and UNK_ID not in ids
        assert tokenizer.decode_tgt(ids) == target
    assert "▁cat" not in tokenizer.tgt_pieces(list(range(tokenizer.tgt_vocab_size)))  # English only
    assert UNK_ID in tokenizer.encode_tgt(["the cat"])[0]  # a piece the target side never used
    copy = Tokenizer.from_model_files(tokenizer.model_files(tmp_path))
    assert copy.target_ids == Tokenizer.load(tmp_path).target_ids == tokenizer.target_ids


@pytest.mark.parametrize("content", [b"not json", b"[5, 6]", b"[0, 1, 2, 3, 99999]", b"[0, 1, 2, 3, 7, 7]"])
def test_a_damaged_target_vocabulary_is_refused(tmp_path: Path, content: bytes) -> None:
    from attnmt.errors import ModelDirError
    from attnmt.tokenizer import TARGET_VOCAB

    Tokenizer.train(PAIRS, tmp_path, vocab_size=300, model_type="bpe", joint=True, target_vocab="used")
    (tmp_path / TARGET_VOCAB).write_bytes(content)
    with pytest.raises(ModelDirError, match="not a target vocabulary"):
        Tokenizer.load(tmp_path)
