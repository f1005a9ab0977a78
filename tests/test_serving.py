"""What the server serves, without HTTP: the same answers from decoding processes as from the server process."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from types import SimpleNamespace

import pytest

from attnmt import Translator, products
from attnmt.serving import ServedModel

TEXTS = ["red dog", "the big cat sits on a small bird", "", "a green dog jumps under the old cat"]


@pytest.fixture(scope="module")
def translator(tiny_model_dir: Path) -> Translator:
    return Translator.load(tiny_model_dir)


@pytest.mark.parametrize("options", [(1, 1, False), (3, 2, True)])
def test_decoding_processes_answer_exactly_as_the_server_process(translator: Translator, options: tuple) -> None:
    here, there = ServedModel(translator), ServedModel(translator, workers=2)
    try:
        assert here.processes is None and there.processes is not None
        assert there.translate_batch(TEXTS, options) == here.translate_batch(TEXTS, options)
        request = SimpleNamespace(text="red dog", reference="rot hund", beam=options[0], top_k=3)
        assert there.explain(request) == here.explain(request)
    finally:
        assert there.close() and not there.close()  # only the first close stops anything
    assert multiprocessing.active_children() == []


@pytest.mark.skipif(not products.onednn_available(), reason="this torch build has no oneDNN matmul")
def test_weights_are_packed_before_the_decoding_processes_fork(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The forked processes inherit one packed copy instead of each making its own on its first request."""
    made: list[int] = []
    pack = products.PackedWeights.__init__

    def counting(self: products.PackedWeights, modules: object) -> None:
        made.append(1)
        pack(self, modules)  # type: ignore[arg-type]

    monkeypatch.setattr(products.PackedWeights, "__init__", counting)
    translator = Translator.load(tiny_model_dir, matmul="onednn")
    there = ServedModel(translator, workers=2)
    try:
        assert made == [1]  # at construction, before the fork and before any request
        assert there.translate_batch(TEXTS, (3, 1, False)) == ServedModel(translator).translate_batch(
            TEXTS, (3, 1, False)
        )
        assert made == [1]
    finally:
        there.close()
