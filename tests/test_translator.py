"""The Python API: order, empty lines, batch invariance, attention output."""

from __future__ import annotations

from pathlib import Path

import pytest

from attnmt import Translator
from attnmt.errors import ModelDirError
from conftest import tiny_translate


def test_translate_keeps_order_and_empty_lines(tiny_model_dir: Path) -> None:
    translator = Translator.load(tiny_model_dir)
    outputs = translator.translate(["red dog", "", "the big cat sits", "   "], beam=3)
    assert len(outputs) == 4
    assert outputs[1] == "" and outputs[3] == ""
    assert outputs[0] == tiny_translate("red dog")
    assert outputs[2] == tiny_translate("the big cat sits")


@pytest.mark.parametrize("beam", [1, 3])
def test_alone_equals_in_batch(tiny_model_dir: Path, beam: int) -> None:
    translator = Translator.load(tiny_model_dir)
    short = "a dog"
    batch = [short, "the old small bird jumps under the green cat on a red dog", short + " runs"]
    assert translator.translate([short], beam=beam)[0] == translator.translate(batch, beam=beam, batch_size=3)[0]


def test_translate_with_attention(tiny_model_dir: Path) -> None:
    result = Translator.load(tiny_model_dir).translate_with_attention("red dog")
    assert result["source_tokens"][-1] == "</s>" and result["target_tokens"][-1] == "</s>"
    assert len(result["weights"]) == len(result["target_tokens"])
    assert all(len(row) == len(result["source_tokens"]) for row in result["weights"])
    assert all(abs(sum(row) - 1) < 1e-5 for row in result["weights"])


def test_nbest(tiny_model_dir: Path) -> None:
    hyps = Translator.load(tiny_model_dir).translate_nbest(["red dog"], beam=3, nbest=3)[0]
    assert len(hyps) == 3 and hyps[0][1] >= hyps[1][1] >= hyps[2][1]


def test_missing_model_dir(tmp_path: Path) -> None:
    with pytest.raises(ModelDirError, match="model directory not found"):
        Translator.load(tmp_path / "nope")
    with pytest.raises(ModelDirError, match="best.pt: checkpoint not found"):
        Translator.load(tmp_path)
