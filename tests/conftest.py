"""Shared fixtures: tiny synthetic tasks and a tiny trained model directory."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from attnmt.config import config_from_dict
from attnmt.model import Seq2Seq
from attnmt.products import PackedWeights
from attnmt.vocab import EOS_ID

#: Small models train fastest on one thread (no OpenMP hand-offs for tiny matmuls).
torch.set_num_threads(1)

#: Devices the device-dependent tests run on: the CPU, and CUDA when torch sees one.
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]

DIGITS = list(range(4, 14))  # token ids of the ten "digits" of the toy tasks
TOY_VOCAB = 14


def reversal_pairs(count: int, low: int, high: int, seed: int) -> list[tuple[list[int], list[int]]]:
    """Random digit sequences (source ids ending in </s>) and their reversals (targets)."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        digits = [rng.choice(DIGITS) for _ in range(rng.randint(low, high))]
        pairs.append((digits + [EOS_ID], digits[::-1]))
    return pairs


def toy_model(**overrides: object) -> Seq2Seq:
    """A small model for the digit tasks, configured like ``model:`` in a YAML file."""
    settings = {"embedding_size": 32, "hidden_size": 64, "dropout": 0.0, "bidirectional": False, **overrides}
    config = config_from_dict({"model": settings, "data": {}}).model
    return Seq2Seq.from_config(config, TOY_VOCAB, TOY_VOCAB, max_source_length=32)


def train_toy(
    model: Seq2Seq,
    pairs: list[tuple[list[int], list[int]]],
    steps: int,
    lr: float = 0.01,
    batch_size: int = 64,
    seed: int = 0,
    until: Callable[[Seq2Seq], bool] | None = None,
) -> Seq2Seq:
    """Teacher-forced training on (source, target) id pairs; returns the model in eval mode.

    With ``until``, training stops early once ``until(model)`` (checked in eval
    mode every 50 updates, e.g. exact match on held-out validation pairs) holds.
    """
    from attnmt.data import make_batch
    from attnmt.loss import sequence_loss

    torch.manual_seed(seed)
    rng = random.Random(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for step in range(1, steps + 1):
        chosen = rng.sample(pairs, batch_size)
        batch = make_batch([p[0] for p in chosen], [p[1] for p in chosen])
        loss = sequence_loss(model(batch.src, batch.src_lengths, batch.tgt_in), batch.tgt_out, 0.0)
        optimizer.zero_grad()
        (loss / batch.target_tokens).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        if until is not None and step % 50 == 0 and step < steps:
            if until(model.eval()):
                break
            model.train()
    return model.eval()


def exact_match(model: Seq2Seq, pairs: list[tuple[list[int], list[int]]]) -> float:
    """Share of sources whose greedy output equals the target exactly."""
    from attnmt.data import pad
    from attnmt.search import greedy_search, max_output_lengths

    src, lengths = pad([p[0] for p in pairs])
    hyps = greedy_search(model, src, lengths, max_output_lengths(lengths, 1.5, 5))
    return sum(h.tokens == p[1] for h, p in zip(hyps, pairs)) / len(pairs)


@pytest.fixture(scope="session")
def trained_reverser() -> Seq2Seq:
    """A luong/general model that reverses digit sequences (used by search tests)."""
    torch.manual_seed(0)
    model = toy_model(attention="general", bidirectional=True)
    return train_toy(model, reversal_pairs(3000, 2, 8, seed=1), steps=400)


#: Word-for-word "translation" of the tiny corpus (monotonic, so a tiny model learns it in seconds).
TINY_DICTIONARY = {
    "red": "rot",
    "blue": "blau",
    "green": "grün",
    "dog": "Hund",
    "cat": "Katze",
    "bird": "Vogel",
    "runs": "rennt",
    "sits": "sitzt",
    "jumps": "springt",
    "big": "groß",
    "small": "klein",
    "old": "alt",
    "young": "jung",
    "the": "der",
    "a": "ein",
    "on": "auf",
    "under": "unter",
}


def tiny_translate(sentence: str) -> str:
    return " ".join(TINY_DICTIONARY[word] for word in sentence.split())


def write_tiny_corpus(directory: Path) -> dict[str, str]:
    """A small synthetic parallel corpus: English words -> German words, same order."""
    words = sorted(TINY_DICTIONARY)
    rng = random.Random(3)
    paths = {}
    for split, count in (("train", 1500), ("valid", 60), ("test", 40)):
        sources, targets = [], []
        for _ in range(count):
            sentence = " ".join(rng.choice(words) for _ in range(rng.randint(2, 6)))
            sources.append(sentence)
            targets.append(tiny_translate(sentence))
        for side, lines in (("src", sources), ("tgt", targets)):
            path = directory / f"{split}.{side}"
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
            paths[f"{split}_{side}"] = str(path)
    return paths


def tiny_config(paths: dict[str, str], **training: object) -> dict[str, object]:
    """A raw config dict for a tiny, fast run on ``write_tiny_corpus`` data."""
    return {
        "data": {
            "train_src": paths["train_src"],
            "train_tgt": paths["train_tgt"],
            "valid_src": paths["valid_src"],
            "valid_tgt": paths["valid_tgt"],
            "vocab_size": 400,
            "max_length": 40,
        },
        "model": {"embedding_size": 32, "hidden_size": 64, "dropout": 0.0, "attention": "general"},
        "training": {
            "batch_tokens": 600,
            "lr": 0.01,
            "valid_every": 200,
            "log_every": 20,
            "max_steps": 600,
            "max_epochs": 100,
            "threads": 1,
            # the same numbers on every machine: auto would train in bf16 where the CPU has it
            # (test_train.py checks bf16 there) and multiply on oneDNN where that pays (test_products.py)
            "precision": "fp32",
            "matmul": "torch",
            **training,
        },
        "decoding": {"beam": 3, "batch_size": 16},
    }


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory trained by ``attnmt.train`` on the tiny corpus (a few seconds)."""
    from attnmt.train import train

    directory = tmp_path_factory.mktemp("tiny")
    paths = write_tiny_corpus(directory)
    config = config_from_dict(tiny_config(paths))
    train(config, directory / "model", progress=False)
    return directory / "model"


def record_packed_finds(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each product found a packed weight (``PackedWeights.find`` still answers)."""
    found: list[bool] = []
    find = PackedWeights.find

    def recording(self: PackedWeights, weight: torch.Tensor) -> torch.Tensor | None:
        layout = find(self, weight)
        found.append(layout is not None)
        return layout

    monkeypatch.setattr(PackedWeights, "find", recording)
    return found
