"""The Python API: load a trained model directory and translate text.

    >>> from attnmt import Translator
    >>> tr = Translator.load("runs/quickstart")
    >>> tr.translate(["A man rides a bike."], beam=5)
    ['Ein Mann fährt Fahrrad.']

Sentences are sorted by length into batches (little padding) and returned in the
input order; an empty input line gives an empty output line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from attnmt import checkpoint
from attnmt.config import Config, config_from_dict
from attnmt.data import pad
from attnmt.device import pick_device
from attnmt.errors import ModelDirError
from attnmt.model import Seq2Seq
from attnmt.search import Hypothesis, beam_search, greedy_search, max_output_lengths
from attnmt.tokenizer import Tokenizer


def build_model(payload: dict[str, Any], config: Config) -> Seq2Seq:
    """A model with the architecture of ``config`` and the weights of a checkpoint."""
    model = Seq2Seq.from_config(
        config.model, payload["src_vocab_size"], payload["tgt_vocab_size"], payload["max_source_length"]
    )
    model.load_state_dict(payload["model"])
    return model


def search_hypotheses(
    model: Seq2Seq,
    src_ids: list[list[int]],
    config: Config,
    device: torch.device,
    beam: int,
    nbest: int = 1,
    batch_size: int = 64,
    record_attention: bool = False,
) -> list[list[Hypothesis]]:
    """Translate id sequences (each ending in </s>) batch by batch, keeping input order."""
    model.eval()
    results: list[list[Hypothesis]] = [[] for _ in src_ids]
    order = sorted(range(len(src_ids)), key=lambda i: -len(src_ids[i]))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        src, lengths = pad([src_ids[i] for i in chunk])
        src, lengths = src.to(device), lengths.to(device)
        limits = max_output_lengths(lengths, config.decoding.max_length_ratio, config.decoding.max_length_extra)
        if beam == 1:
            hyps = [[h] for h in greedy_search(model, src, lengths, limits, record_attention)]
        else:
            hyps = beam_search(
                model, src, lengths, limits, beam, config.decoding.length_penalty, nbest, record_attention
            )
        for index, found in zip(chunk, hyps):
            results[index] = found
    return results


@dataclass
class AttentionRecord:
    """Tokens and weights of one translation: ``weights[t][s]`` for output t, source s."""

    source_tokens: list[str]
    target_tokens: list[str]
    weights: list[list[float]]
    translation: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "source_tokens": self.source_tokens,
            "target_tokens": self.target_tokens,
            "weights": self.weights,
            "translation": self.translation,
        }


class Translator:
    """A trained model, its tokenizer and its config, ready to translate."""

    def __init__(
        self, model: Seq2Seq, tokenizer: Tokenizer, config: Config, device: torch.device, model_dir: Path | None = None
    ) -> None:
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.config = config
        self.device = device
        self.model_dir = model_dir

    @classmethod
    def load(cls, model_dir: str | Path, device: str = "auto", checkpoint_name: str = "best.pt") -> Translator:
        """Load ``model_dir`` as written by ``attnmt train`` (best checkpoint by default)."""
        directory = Path(model_dir)
        if not directory.is_dir():
            raise ModelDirError(f"{directory}: model directory not found")
        payload = checkpoint.load(directory / checkpoint_name)
        config = config_from_dict(payload["config"], origin=str(directory / checkpoint_name))
        return cls(build_model(payload, config), Tokenizer.load(directory), config, pick_device(device), directory)

    @property
    def attention_name(self) -> str:
        return self.model.attention_name

    def hypotheses(
        self,
        texts: list[str],
        beam: int | None = None,
        nbest: int = 1,
        batch_size: int | None = None,
        record_attention: bool = False,
    ) -> list[list[Hypothesis]]:
        """n-best hypotheses per text (an empty list for an empty or blank text)."""
        beam = beam or self.config.decoding.beam
        if nbest > beam:
            raise ValueError(f"nbest ({nbest}) cannot exceed the beam size ({beam})")
        filled = [i for i, text in enumerate(texts) if text.strip()]
        src_ids = self.tokenizer.encode_src([texts[i].strip() for i in filled])
        found = search_hypotheses(
            self.model,
            src_ids,
            self.config,
            self.device,
            beam,
            nbest,
            batch_size or self.config.decoding.batch_size,
            record_attention,
        )
        results: list[list[Hypothesis]] = [[] for _ in texts]
        for index, hyps in zip(filled, found):
            results[index] = hyps
        return results

    def translate(self, texts: list[str], beam: int | None = None, batch_size: int | None = None) -> list[str]:
        """One translation per text, in order; beam 1 is greedy search."""
        return [
            self.tokenizer.decode_tgt(hyps[0].tokens) if hyps else ""
            for hyps in self.hypotheses(texts, beam=beam, batch_size=batch_size)
        ]

    def translate_nbest(self, texts: list[str], beam: int, nbest: int) -> list[list[tuple[str, float]]]:
        """The ``nbest`` best translations of each text with their scores, best first."""
        return [
            [(self.tokenizer.decode_tgt(h.tokens), h.score) for h in hyps]
            for hyps in self.hypotheses(texts, beam=beam, nbest=nbest)
        ]

    def attention_records(
        self, texts: list[str], beam: int | None = None, batch_size: int | None = None
    ) -> list[AttentionRecord]:
        """Translations with their attention weights (empty weights without attention)."""
        records = []
        hypotheses = self.hypotheses(texts, beam=beam, batch_size=batch_size, record_attention=True)
        for text, hyps in zip(texts, hypotheses):
            if not hyps:
                records.append(AttentionRecord([], [], [], ""))
                continue
            best = hyps[0]
            src_ids = self.tokenizer.encode_src([text.strip()])[0]
            weights = best.attention.tolist() if best.attention is not None else []
            records.append(
                AttentionRecord(
                    self.tokenizer.src_pieces(src_ids),
                    self.tokenizer.tgt_pieces(best.tokens) + ["</s>"],
                    weights,
                    self.tokenizer.decode_tgt(best.tokens),
                )
            )
        return records

    def translate_with_attention(self, text: str, beam: int | None = None) -> dict[str, Any]:
        """One translation with source and target tokens and the weight matrix (T x S)."""
        return self.attention_records([text], beam=beam)[0].to_dict()
