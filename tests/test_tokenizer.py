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
