"""Ensembles average the members' probabilities: one member is that model, two copies are one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from attnmt import Translator
from attnmt.data import pad
from attnmt.ensemble import Ensemble
from attnmt.errors import ModelDirError
from attnmt.search import beam_search, greedy_search, max_output_lengths
from conftest import reversal_pairs, toy_model

SENTENCES = ["red dog", "the big cat sits on a small bird", "a green dog jumps under the old cat", ""]


def _sources() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    src, lengths = pad([p[0] for p in reversal_pairs(10, 2, 8, seed=4)])
    return src, lengths, max_output_lengths(lengths, 1.5, 5)


@pytest.mark.parametrize("beam", [1, 3])
def test_an_ensemble_of_one_is_the_model(beam: int) -> None:
    torch.manual_seed(0)
    model = toy_model(attention="general", bidirectional=True).eval()
    model.initialize(0.5)
    src, lengths, limits = _sources()
    single = beam_search(model, src, lengths, limits, beam, 0.6, record_attention=True)
    ensemble = beam_search(Ensemble([model]), src, lengths, limits, beam, 0.6, record_attention=True)
    for a, b in zip(single, ensemble):
        assert a[0].tokens == b[0].tokens and a[0].score == pytest.approx(b[0].score, abs=1e-5)
        assert torch.allclose(a[0].attention, b[0].attention)


def test_two_identical_members_equal_one_and_different_ones_average() -> None:
    torch.manual_seed(0)
    first, second = toy_model(attention="general").eval(), toy_model(attention="dot").eval()
    first.initialize(0.5)
    second.initialize(0.5)
    src, lengths, limits = _sources()
    alone = greedy_search(first, src, lengths, limits)
    twice = greedy_search(Ensemble([first, first]), src, lengths, limits)
    assert [h.tokens for h in alone] == [h.tokens for h in twice]
    assert [h.score for h in alone] == pytest.approx([h.score for h in twice], abs=1e-5)
    ensemble = Ensemble([first, second])
    memory, state = ensemble.encode(src, lengths)
    log_probs, _, _ = ensemble.step(torch.full((src.size(0),), 2), state, memory)
    p1 = first.step(torch.full((src.size(0),), 2), *reversed(first.encode(src, lengths)))[0].exp()
    p2 = second.step(torch.full((src.size(0),), 2), *reversed(second.encode(src, lengths)))[0].exp()
    assert torch.allclose(log_probs.exp(), (p1 + p2) / 2, atol=1e-6)


def test_ensemble_translator_from_directories(tiny_model_dir: Path) -> None:
    single = Translator.load(tiny_model_dir)
    ensemble = Translator.load([tiny_model_dir, tiny_model_dir])
    assert len(ensemble.models) == 2
    for beam in (1, 3):
        assert ensemble.translate(SENTENCES, beam=beam) == single.translate(SENTENCES, beam=beam)
    records = ensemble.translations(["red dog"], attention=True)[0]
    assert records.weights == single.translations(["red dog"], attention=True)[0].weights  # the first model's


def test_members_must_share_the_vocabulary(tiny_model_dir: Path, tmp_path: Path) -> None:
    from test_checkpoint import _foreign_tokenizer

    other = tmp_path / "other_model"
    shutil.copytree(tiny_model_dir, other)
    _foreign_tokenizer(other)
    with pytest.raises(ModelDirError):  # its own checksum check, or the vocabulary check
        Translator.load([tiny_model_dir, other])


def test_a_different_target_vocabulary_is_named(tiny_model_dir: Path, tmp_path: Path) -> None:
    import copy

    from attnmt.translator import check_same_vocabulary

    first = Translator.load(tiny_model_dir).tokenizer
    other = copy.copy(first)
    other.tgt = type(first.tgt)()
    other.tgt.LoadFromSerializedProto(_other_tokenizer_bytes(tmp_path))
    with pytest.raises(ModelDirError, match="its target vocabulary differs"):
        check_same_vocabulary(first, other, tiny_model_dir, tmp_path)


def _other_tokenizer_bytes(tmp_path: Path) -> bytes:
    from attnmt.tokenizer import Tokenizer

    pairs = [(f"sentence {i} about cats", f"Satz {i} über Katzen") for i in range(300)]
    Tokenizer.train(pairs, tmp_path, vocab_size=400, model_type="bpe", joint=True)
    return (tmp_path / "spm.joint.model").read_bytes()
