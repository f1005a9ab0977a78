"""The lecture's toy: converges, and every printed number follows from the others."""

from __future__ import annotations

import math

import pytest

from attnmt.toy import PAIRS, TARGET_VOCAB, explain_toy, format_toy


@pytest.fixture(scope="module")
def toy() -> dict:
    return explain_toy(seed=0)


def test_toy_learns_the_lecture_translations(toy: dict) -> None:
    assert toy["converged"]
    assert (toy["source"], toy["translation"]) == PAIRS[0]
    assert (toy["other_examples"][0]["source"], toy["other_examples"][0]["translation"]) == PAIRS[1]
    assert len(toy["source_embeddings"][0]) == 2 and len(toy["encoder_outputs"][0]) == 2


def test_toy_is_deterministic(toy: dict) -> None:
    assert explain_toy(seed=0) == toy


def test_every_number_can_be_redone_by_hand(toy: dict) -> None:
    layer = toy["fully_connected_layer"]
    for example in [toy, *toy["other_examples"]]:
        values = example["encoder_outputs"]
        for step in example["steps"]:
            query = step["query"]
            scores = [sum(q * k for q, k in zip(query, key)) for key in values]  # dot product
            assert step["scores"] == pytest.approx(scores, abs=1e-5)
            exps = [math.exp(s) for s in scores]
            assert step["weights"] == pytest.approx([e / sum(exps) for e in exps], abs=1e-5)
            context = [sum(w * v[i] for w, v in zip(step["weights"], values)) for i in range(2)]
            assert step["context"] == pytest.approx(context, abs=1e-5)
            joined = context + query  # [attention values; decoder output]
            hidden = [math.tanh(sum(w * x for w, x in zip(row, joined))) for row in layer["W_c"]]
            assert step["fully_connected_output"] == pytest.approx(hidden, abs=1e-5)
            logits = [sum(w * h for w, h in zip(row, hidden)) + b for row, b in zip(layer["W_out"], layer["b_out"])]
            assert step["logits"] == pytest.approx(logits, abs=1e-4)
            exps = [math.exp(z) for z in logits]
            probabilities = [e / sum(exps) for e in exps]
            assert list(step["probabilities"].values()) == pytest.approx(probabilities, abs=1e-5)
            assert step["chosen"] == TARGET_VOCAB[max(range(len(logits)), key=logits.__getitem__)]


def test_text_writes_the_dot_products_out(toy: dict) -> None:
    text = format_toy(toy)
    assert "similarity with let's" in text and " x " in text and "softmax ->" in text and "=> vamos" in text
