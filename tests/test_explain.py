"""attnmt explain: every printed number is recomputable from the other printed numbers."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch

from attnmt.explain import alignment, explain, format_text
from attnmt.model import Seq2Seq
from attnmt.translator import Translator
from conftest import tiny_translate

ATTENTIONS = ["dot", "cosine", "general", "concat", "location", "none"]
COMBINATIONS = (
    [("luong", a, False) for a in ATTENTIONS]
    + [("luong", "general", True)]
    + [("bahdanau", a, False) for a in ATTENTIONS]
)
SPANS = [("luong", "general", "local-m"), ("luong", "dot", "local-p"), ("bahdanau", "concat", "local-p")]
SENTENCE = "the big cat sits on a dog"


def _softmax(scores: list[float | None]) -> list[float]:
    """Softmax of the JSON scores, where null stands for -inf (outside a local window)."""
    top = max(s for s in scores if s is not None)
    exps = [math.exp(s - top) if s is not None else 0.0 for s in scores]
    return [e / sum(exps) for e in exps]


def _translator(model_dir: Path, decoder: str, attention: str, input_feeding: bool, span: str = "global") -> Translator:
    """An untrained model of the given kind with the tiny model's tokenizer (numbers, not quality, matter)."""
    trained = Translator.load(model_dir)
    config = copy.deepcopy(trained.config)
    config.model.decoder, config.model.attention, config.model.input_feeding = decoder, attention, input_feeding
    config.model.attention_span, config.model.local_window = span, 2
    torch.manual_seed(0)
    vocab = trained.tokenizer.src_vocab_size, trained.tokenizer.tgt_vocab_size
    model = Seq2Seq.from_config(config.model, *vocab, max_source_length=config.data.max_length)
    model.initialize(0.5)
    return Translator(model, trained.tokenizer, config, torch.device("cpu"))


def check_self_consistent(result: dict, greedy: bool = True) -> None:
    """The checks a learner can do by hand on the JSON (PRODUCT.md)."""
    result = json.loads(json.dumps(result))  # what a reader of the JSON sees
    values = result["encoder_outputs"]
    assert len(values) == len(result["source_tokens"])
    for step in result["steps"]:
        probs = [c["prob"] for c in step["top_k"]]
        assert probs == sorted(probs, reverse=True)
        if greedy and not step["forced_eos_at_max_length"]:
            assert step["chosen"] == step["top_k"][0]["token"]
        if step["forced_eos_at_max_length"]:
            assert step is result["steps"][-1] and step["chosen"] == "</s>"
        if result["scoring"] == "none":
            assert "weights" not in step and "scores" not in step
            continue
        assert len(step["scores"]) == len(step["weights"]) == len(values)
        assert step["weights"] == pytest.approx(_softmax(step["scores"]), abs=1e-5)
        context = [sum(w * v[i] for w, v in zip(step["weights"], values)) for i in range(len(values[0]))]
        assert step["context"] == pytest.approx(context, abs=1e-4)


@pytest.mark.parametrize("decoder,attention,input_feeding", COMBINATIONS)
def test_json_is_self_consistent(tiny_model_dir: Path, decoder: str, attention: str, input_feeding: bool) -> None:
    translator = _translator(tiny_model_dir, decoder, attention, input_feeding)
    result = explain(translator, SENTENCE)
    assert result["scoring"] == attention and result["decoder"] == decoder
    check_self_consistent(result)
    assert result["translation"] == translator.translate([SENTENCE], beam=1)[0]
    if attention == "none":
        assert "no attention" in result["note"]
        assert "no attention" in format_text(result)


def test_trained_model_explains_its_translation(tiny_model_dir: Path) -> None:
    translator = Translator.load(tiny_model_dir)
    result = explain(translator, "red dog")
    check_self_consistent(result)
    assert result["translation"] == tiny_translate("red dog")
    assert [a[1] for a in alignment(result)][:2] == ["▁red", "▁dog"]  # rot <- red, Hund <- dog
    text = format_text(result)
    assert "general score" in text and "attention values (context)" in text and "alignment" in text


def test_reference_is_forced(tiny_model_dir: Path) -> None:
    translator = Translator.load(tiny_model_dir)
    result = explain(translator, "red dog", reference="blau Katze")
    check_self_consistent(result, greedy=False)
    assert [s["chosen"] for s in result["steps"]] == ["▁blau", "▁Katze", "</s>"]
    assert result["reference_log_prob"] == pytest.approx(sum(math.log(s["chosen_prob"]) for s in result["steps"]))


def test_beam_explains_the_beam_translation(tiny_model_dir: Path) -> None:
    translator = Translator.load(tiny_model_dir)
    result = explain(translator, SENTENCE, beam=3)
    check_self_consistent(result, greedy=False)
    assert result["translation"] == translator.translate([SENTENCE], beam=3)[0]


@pytest.mark.parametrize("decoder,attention,span", SPANS)
def test_local_attention_shows_its_window(tiny_model_dir: Path, decoder: str, attention: str, span: str) -> None:
    translator = _translator(tiny_model_dir, decoder, attention, False, span)
    result = explain(translator, "the big cat sits on a red dog near a small bird")
    check_self_consistent(result)
    assert result["span"] == span
    for step in result["steps"]:
        low, high = step["window"]
        assert low <= step["aligned_position"] + 1e-6 and step["aligned_position"] - 1e-6 <= high
        assert all((low <= s <= high) == (step["scores"][s] is not None) for s in range(len(step["scores"])))
        assert ("gaussian" in step) == (span == "local-p")
    text = format_text(result)
    assert f"{span} attention: aligned position p_t" in text and "outside" in text
