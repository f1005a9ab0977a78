"""What the server serves, without HTTP: the same answers from decoding processes as from the server process."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from types import SimpleNamespace

import pytest

from attnmt import Translator
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
