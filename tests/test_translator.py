"""The Python API: order, empty lines, batch invariance, attention output."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnmt import Translator, products
from attnmt.errors import InputError, ModelDirError
from conftest import record_packed_finds, tiny_translate


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


def test_translations_carry_everything_a_front_end_shows(tiny_model_dir: Path) -> None:
    translator = Translator.load(tiny_model_dir)
    results = translator.translations(["red dog", ""], beam=3, nbest=2, attention=True)
    full, empty = results
    assert full.text == tiny_translate("red dog") and full.source == "red dog"
    assert full.target_tokens[-1] == "</s>" and full.source_tokens[-1] == "</s>"
    assert [a.text for a in full.nbest][0] == full.text and len(full.nbest) == 2
    assert full.nbest[0].score == full.score >= full.nbest[1].score
    assert full.weights is not None and len(full.weights) == len(full.target_tokens)
    assert all(len(row) == len(full.source_tokens) for row in full.weights)
    assert (empty.text, empty.score, empty.nbest, empty.weights) == ("", None, [], None)
    assert translator.translations(["red dog"])[0].weights is None  # attention only when asked for


def test_length_penalty_divides_the_score_by_lp(tiny_model_dir: Path) -> None:
    """GNMT: score = log P / ((5 + |Y|) / 6) ** alpha; greedy's words do not depend on alpha."""
    translator = Translator.load(tiny_model_dir)
    raw, scaled = (translator.translations(["the big cat"], beam=1, length_penalty=a)[0] for a in (0.0, 1.0))
    assert raw.text == scaled.text and raw.score is not None and scaled.score is not None
    assert scaled.score == pytest.approx(raw.score / ((5 + len(raw.target_tokens)) / 6), rel=1e-5)
    with pytest.raises(InputError, match="length_penalty"):
        translator.translate(["x"], length_penalty=-1.0)


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"beam": 0}, "beam"),
        ({"beam": 2, "nbest": 3}, "nbest"),
        ({"beam": 100_000}, "beam"),
        ({"batch_size": -1}, "batch_size"),
    ],
)
def test_api_mistakes_raise_input_error(tiny_model_dir: Path, kwargs: dict, field: str) -> None:
    from attnmt.errors import AttnmtError, InputError

    with pytest.raises(InputError) as raised:
        Translator.load(tiny_model_dir).translations(["red dog"], **kwargs)
    assert raised.value.field == field and isinstance(raised.value, AttnmtError)


def test_over_long_and_non_string_texts_are_named(tiny_model_dir: Path) -> None:
    from attnmt.errors import InputError
    from attnmt.limits import MAX_INPUT_CHARS

    translator = Translator.load(tiny_model_dir)
    with pytest.raises(InputError, match=r"texts\[1\]: .* at most") as raised:
        translator.translate(["red dog", "a" * (MAX_INPUT_CHARS + 1)])
    assert raised.value.index == 1
    with pytest.raises(InputError, match=r"texts\[0\]: expected a string"):
        translator.translate([3])  # type: ignore[list-item]
    with pytest.raises(InputError, match="texts: expected a list"):
        translator.translate("red dog")  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(st.text(max_size=80), max_size=6), beam=st.sampled_from([1, 2]))
def test_any_unicode_gets_one_translation_per_text(tiny_model_dir: Path, texts: list[str], beam: int) -> None:
    """Control characters, emoji, right-to-left text, lone separators: one output per input, in order."""
    translator = _cached_translator(tiny_model_dir)
    outputs = translator.translate(texts, beam=beam)
    assert len(outputs) == len(texts)
    assert all(isinstance(o, str) for o in outputs)
    for text, output in zip(texts, outputs):
        if not text.strip():
            assert output == ""


_TRANSLATORS: dict[Path, Translator] = {}


def _cached_translator(model_dir: Path) -> Translator:
    if model_dir not in _TRANSLATORS:
        _TRANSLATORS[model_dir] = Translator.load(model_dir)
    return _TRANSLATORS[model_dir]


@pytest.mark.parametrize("matmul", ["auto", "torch", "onednn"])
def test_matmul_says_where_fp32_products_run(tiny_model_dir: Path, matmul: str) -> None:
    """auto: oneDNN where it pays; the translations are the same either way."""
    if matmul == "onednn" and not products.onednn_available():
        pytest.skip("this torch build has no oneDNN matmul")
    expected = {"auto": products.auto_onednn(torch.device("cpu"), decoding=True), "torch": False, "onednn": True}[
        matmul
    ]
    fp32 = Translator.load(tiny_model_dir, matmul=matmul)
    assert fp32.onednn == Translator.load(tiny_model_dir, quantize="int8", matmul=matmul).onednn == expected
    texts = ["red dog", "the big cat sits", "a dog runs under the green bird"]
    assert fp32.translate(texts, beam=3) == Translator.load(tiny_model_dir, matmul="torch").translate(texts, beam=3)
    with pytest.raises(InputError, match="matmul: choose one of auto, torch, onednn"):
        Translator.load(tiny_model_dir, matmul="mkl")


@pytest.mark.skipif(not products.onednn_available(), reason="this torch build has no oneDNN matmul")
def test_the_weights_are_packed_once_and_give_the_same_translations(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    packed = Translator.load(tiny_model_dir, matmul="onednn")
    assert Translator.load(tiny_model_dir, matmul="torch").packed_weights() is None
    made = packed.packed_weights()
    assert made is not None and made is packed.packed_weights()
    used = record_packed_finds(monkeypatch)
    texts = ["ab cd ef", "g", "hij kl", "m n o p q"]
    assert packed.translate(texts, beam=3) == Translator.load(tiny_model_dir, matmul="torch").translate(texts, beam=3)
    assert used and all(used)
