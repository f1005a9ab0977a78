"""The lecture's toy: "let's go" -> "vamos", "to go" -> "ir", small enough to redo by hand.

The model is the one of the lecture's diagrams: 2 embedding values per word, an
encoder and a decoder of 2 LSTM cells each, dot-product attention, and a fully
connected layer that reads the attention values and the decoder output, then a
softmax over the Spanish words. It trains in about a second (deterministic for a
seed) and is explained with the same ``trace`` as any trained model, plus every
weight of the small layers so each step can be recomputed with pencil and paper.

One difference from the lecture: the lecture's decoder starts from <EOS>; ours
starts from <s>, like every attnmt model.
"""

from __future__ import annotations

from typing import Any

import torch

from attnmt.config import ModelConfig
from attnmt.data import make_batch
from attnmt.decoder import LuongDecoder
from attnmt.explain import _floats, trace
from attnmt.loss import sequence_loss
from attnmt.model import Seq2Seq
from attnmt.vocab import EOS_ID

SOURCE_VOCAB = ["<pad>", "<unk>", "<s>", "</s>", "let's", "to", "go"]
TARGET_VOCAB = ["<pad>", "<unk>", "<s>", "</s>", "ir", "vamos"]
PAIRS = [("let's go", "vamos"), ("to go", "ir")]
TOY_MODEL = ModelConfig(
    rnn="lstm",
    decoder="luong",
    attention="dot",
    input_feeding=False,
    bidirectional=False,
    layers=1,
    embedding_size=2,
    hidden_size=2,
    dropout=0.0,
    init_range=1.0,
)


def _source_ids(text: str) -> list[int]:
    return [SOURCE_VOCAB.index(word) for word in text.split()] + [EOS_ID]


def _target_ids(text: str) -> list[int]:
    return [TARGET_VOCAB.index(word) for word in text.split()]


def train_toy(seed: int = 0, steps: int = 300, lr: float = 0.05) -> Seq2Seq:
    """Train the toy model on the lecture's two sentence pairs (full batch, Adam)."""
    torch.manual_seed(seed)
    model = Seq2Seq.from_config(TOY_MODEL, len(SOURCE_VOCAB), len(TARGET_VOCAB), max_source_length=8)
    batch = make_batch([_source_ids(s) for s, _ in PAIRS], [_target_ids(t) for _, t in PAIRS])
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        loss = sequence_loss(model(batch.src, batch.src_lengths, batch.tgt_in), batch.tgt_out, 0.0)
        optimizer.zero_grad()
        (loss / batch.target_tokens).backward()
        optimizer.step()
    return model.eval()


def _matrix(weight: torch.Tensor) -> list[list[float]]:
    return [_floats(row) for row in weight.detach()]


def _explain_sentence(model: Seq2Seq, sentence: str) -> dict[str, Any]:
    src_ids = _source_ids(sentence)
    memory, steps, output_ids = trace(
        model, src_ids, TARGET_VOCAB.__getitem__, None, limit=6, top_k=len(TARGET_VOCAB), device=torch.device("cpu")
    )
    decoder = model.decoder
    for step in steps:
        token = TARGET_VOCAB.index(step["input_token"])
        step["input_embedding"] = _floats(decoder.embedding.weight[token])
        step["fully_connected_input"] = step["context"] + step["query"]  # [attention values; decoder output]
        step["fully_connected_output"] = step.pop("output")  # tanh(W_c [c; h])
        step["logits"] = _floats(model.logits(torch.tensor(step["fully_connected_output"])))
        step["probabilities"] = {word: float(p) for word, p in zip(TARGET_VOCAB, step.pop("probs"))}
    return {
        "scoring": "dot",
        "decoder": "luong",
        "input_feeding": False,
        "mode": "greedy",
        "source": sentence,
        "source_tokens": [SOURCE_VOCAB[i] for i in src_ids],
        "source_embeddings": [_floats(model.encoder.embedding.weight[i]) for i in src_ids],
        "encoder_outputs": [_floats(row) for row in memory.encoder_outputs[0]],
        "steps": steps,
        "translation": " ".join(TARGET_VOCAB[i] for i in output_ids),
    }


def explain_toy(seed: int = 0) -> dict[str, Any]:
    """Train the toy and explain "let's go" (and "to go" under ``other_examples``)."""
    model = train_toy(seed)
    assert isinstance(model.decoder, LuongDecoder) and model.decoder.W_c is not None
    result = _explain_sentence(model, "let's go")
    result["other_examples"] = [_explain_sentence(model, "to go")]
    result["seed"] = seed
    result["converged"] = all(_explain_sentence(model, s)["translation"] == t for s, t in PAIRS)
    result["fully_connected_layer"] = {
        "equation": "output = tanh(W_c [attention values; decoder output]); logits = W_out output + b_out",
        "W_c": _matrix(model.decoder.W_c.weight),
        "W_out": _matrix(model.output_layer.weight),
        "b_out": _floats(model.output_layer.bias),
        "vocabulary": TARGET_VOCAB,
    }
    return result


def _dot_written_out(query: list[float], key: list[float]) -> str:
    terms = " + ".join(f"({q:+.2f} x {k:+.2f})" for q, k in zip(query, key))
    return f"{terms} = {sum(q * k for q, k in zip(query, key)):+.2f}"


def format_toy(result: dict[str, Any]) -> str:
    """The toy explanation as text, with each dot product written out term by term."""
    lines = [
        "The lecture's toy: English -> Spanish, 2 embedding values, 2 LSTM cells, dot-product attention.",
        f"trained from seed {result['seed']}: "
        + ("both sentences translate correctly" if result["converged"] else "did NOT converge: try another --seed"),
        "",
    ]
    for example in [result, *result["other_examples"]]:
        lines.append(f"=== {example['source']} -> {example['translation']} ===")
        lines.append("encoder: embedding values -> LSTM outputs (the encodings attention compares and weighs)")
        for token, embedding, output in zip(
            example["source_tokens"], example["source_embeddings"], example["encoder_outputs"]
        ):
            lines.append(
                f"  {token:<6} embedding [{embedding[0]:+.2f}, {embedding[1]:+.2f}]"
                f"  -> LSTM output [{output[0]:+.2f}, {output[1]:+.2f}]"
            )
        for step in example["steps"]:
            lines.append(
                f"step {step['step']}: decoder input {step['input_token']} (embedding "
                f"[{step['input_embedding'][0]:+.2f}, {step['input_embedding'][1]:+.2f}]), "
                f"decoder LSTM output [{step['query'][0]:+.2f}, {step['query'][1]:+.2f}]"
            )
            for token, key, weight in zip(example["source_tokens"], example["encoder_outputs"], step["weights"]):
                lines.append(
                    f"  similarity with {token:<6} {_dot_written_out(step['query'], key)}   softmax -> {weight:.2f}"
                )
            context = step["context"]
            lines.append(
                "  attention values = "
                + " + ".join(f"{w:.2f} x {tok}" for w, tok in zip(step["weights"], example["source_tokens"]))
                + f" = [{context[0]:+.2f}, {context[1]:+.2f}]"
            )
            fc = step["fully_connected_output"]
            lines.append(
                f"  fully connected layer on [attention values; decoder output] -> [{fc[0]:+.2f}, {fc[1]:+.2f}]"
                " -> logits " + ", ".join(f"{w} {v:+.2f}" for w, v in zip(TARGET_VOCAB, step["logits"]))
            )
            lines.append(
                "  softmax -> "
                + ", ".join(f"{w} {p:.2f}" for w, p in step["probabilities"].items())
                + f"  => {step['chosen']}"
            )
        lines.append("")
    layer = result["fully_connected_layer"]
    lines.append(f"fully connected layer: {layer['equation']}")
    lines.append(f"  W_c = {layer['W_c']}")
    lines.append(f"  W_out = {layer['W_out']}")
    lines.append(f"  b_out = {layer['b_out']}")
    return "\n".join(lines)
