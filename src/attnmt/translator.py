"""The Python API: load a trained model directory and translate text.

    >>> from attnmt import Translator
    >>> tr = Translator.load("runs/quickstart")
    >>> tr.translate(["A man rides a bike."], beam=5)
    ['Ein Mann fährt Fahrrad.']

``Translator.translations`` is the one entry point every front end uses (the
``attnmt`` command, the HTTP server): it returns one ``Translation`` per input
text, in order, holding the translation, its tokens and score, the n-best list
and, when asked for, the attention weights. An empty or blank input gives an
empty translation. Mistakes in the request (beam out of range, nbest above the
beam, an over-long text) raise ``InputError`` naming the option or the text.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from attnmt import limits
from attnmt.checkpoint import load_model_dir
from attnmt.config import Config
from attnmt.device import pick_device
from attnmt.ensemble import Ensemble
from attnmt.errors import InputError, ModelDirError
from attnmt.model import Seq2Seq
from attnmt.products import PackedWeights, choose_onednn
from attnmt.quantize import check_quantization, quantize_int8
from attnmt.reporting import best_bleu_from_log
from attnmt.search import DecodingOptions, Hypothesis, search
from attnmt.tokenizer import Tokenizer
from attnmt.workers import resolve_workers


@dataclass
class Alternative:
    """One entry of an n-best list: detokenised text and length-penalised log-probability."""

    text: str
    score: float


@dataclass
class Translation:
    """The result for one input text.

    ``target_tokens`` are the subword pieces of the best translation followed by
    "</s>"; ``weights`` (when attention was asked for and the model has it) is the
    attention matrix, one row per target token, one column per source token, each
    row summing to 1. ``nbest`` lists the best translations, best first (just the
    best one unless more were asked for). For an empty input everything is empty
    and ``score`` is None.
    """

    source: str
    text: str
    score: float | None
    source_tokens: list[str] = field(default_factory=list)
    target_tokens: list[str] = field(default_factory=list)
    nbest: list[Alternative] = field(default_factory=list)
    weights: list[list[float]] | None = None

    def attention_record(self) -> dict[str, Any]:
        """Tokens and weights as ``translate --attention`` writes them (empty weights without attention)."""
        return {
            "source_tokens": self.source_tokens,
            "target_tokens": self.target_tokens,
            "weights": self.weights or [],
            "translation": self.text,
        }


def _all_pieces(tokenizer: Tokenizer, side: str) -> list[str]:
    if side == "target":
        return tokenizer.tgt_pieces(list(range(tokenizer.tgt_vocab_size)))
    return tokenizer.src_pieces(list(range(tokenizer.src_vocab_size)))


def check_same_vocabulary(first: Tokenizer, other: Tokenizer, first_dir: Path, other_dir: Path) -> None:
    """Ensemble members must read and write the same pieces (ModelDirError naming the side that differs)."""
    sides = (
        (
            "target",
            first.tgt_pieces(list(range(first.tgt_vocab_size))),
            other.tgt_pieces(list(range(other.tgt_vocab_size))),
        ),
        (
            "source",
            first.src_pieces(list(range(first.src_vocab_size))),
            other.src_pieces(list(range(other.src_vocab_size))),
        ),
    )
    for side, pieces_a, pieces_b in sides:
        if pieces_a != pieces_b:
            raise ModelDirError(
                f"{other_dir}: its {side} vocabulary differs from {first_dir}'s; an ensemble needs models "
                "trained with the same data settings (same sentencepiece model)"
            )


def check_texts(texts: Any) -> list[str]:
    """The texts as a list of strings, or ``InputError`` naming the first bad one."""
    if isinstance(texts, str) or not isinstance(texts, list):
        raise InputError("texts", f"expected a list of strings, got {type(texts).__name__}")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"texts[{index}]", f"expected a string, got {type(text).__name__}")
        if len(text) > limits.MAX_INPUT_CHARS:
            raise InputError(
                f"texts[{index}]", f"{len(text)} characters; at most {limits.MAX_INPUT_CHARS} per text", index
            )
    return texts


class Translator:
    """A trained model (or an ensemble), its tokenizer and its config, ready to translate."""

    def __init__(
        self,
        model: Seq2Seq | Ensemble,
        tokenizer: Tokenizer,
        config: Config,
        device: torch.device,
        model_dir: Path | None = None,
    ) -> None:
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.config = config
        self.device = device
        self.model_dir = model_dir
        self.training_record: dict[str, Any] = {}  # steps and best validation BLEU, when loaded from a run
        self.parameter_count = (
            sum(p.numel() for p in model.models[0].parameters())
            if isinstance(model, Ensemble)
            else sum(p.numel() for p in model.parameters())
        )
        self.quantization: str | None = None
        self.onednn = choose_onednn(config.decoding.matmul, device, "decoding.matmul")  # fp32 products
        self._packed: PackedWeights | None = None
        self.name = model_dir.name if model_dir is not None else "model"  # shown to people: never a full path

    @classmethod
    def load(
        cls,
        model_dir: str | Path | Sequence[str | Path],
        device: str = "auto",
        checkpoint_name: str = "best.pt",
        quantize: str | None = None,
        matmul: str | None = None,
    ) -> Translator:
        """Load a model directory written by ``attnmt train`` (best checkpoint by default).

        Given several directories, their models translate as an ensemble
        (``ensemble.py``): they must share the tokenizer, and the first one's
        decoding settings apply. ``quantize="int8"`` decodes with int8 weights
        on the CPU (``quantize.py``); ``"none"`` or None in full precision.
        ``matmul`` (auto, torch, onednn) replaces the model's ``decoding.matmul``.
        """
        directories = [Path(model_dir)] if isinstance(model_dir, (str, Path)) else [Path(d) for d in model_dir]
        target = pick_device(device)
        check_quantization(quantize, target)
        quantize = None if quantize == "none" else quantize
        loaded = [load_model_dir(directory, checkpoint_name) for directory in directories]
        for directory, other in zip(directories[1:], loaded[1:]):
            check_same_vocabulary(loaded[0].tokenizer, other.tokenizer, directories[0], directory)
        first = loaded[0]
        if matmul is not None:
            if matmul not in ("auto", "torch", "onednn"):
                raise InputError("matmul", f"choose one of auto, torch, onednn; got {matmul!r}")
            first.config.decoding.matmul = matmul  # type: ignore[assignment]  # checked above
        parameters = sum(p.numel() for p in first.model.parameters())
        members = [quantize_int8(m.model) if quantize else m.model for m in loaded]
        model = members[0] if len(members) == 1 else Ensemble(members)
        translator = cls(model, first.tokenizer, first.config, target, directories[0])
        translator.parameter_count, translator.quantization = parameters, quantize
        translator.name = " + ".join(directory.resolve().name for directory in directories)
        bleu = first.payload.get("best_valid_bleu")
        translator.training_record = {
            "steps": first.payload.get("step"),
            "best_valid_bleu": bleu if isinstance(bleu, (int, float)) else best_bleu_from_log(directories[0]),
        }
        return translator

    @property
    def models(self) -> list[Seq2Seq]:
        """The model, or each member of the ensemble."""
        return self.model.models if isinstance(self.model, Ensemble) else [self.model]

    @property
    def attention_name(self) -> str:
        return self.model.attention_name

    def options(
        self,
        beam: int | None = None,
        nbest: int | None = None,
        batch_size: int | None = None,
        length_penalty: float | None = None,
    ) -> Any:
        """The model's decoding settings with the given values replaced, checked."""
        defaults = replace(DecodingOptions.from_config(self.config.decoding), onednn=self.onednn)
        return defaults.with_overrides(beam, nbest, batch_size, length_penalty).check()

    def packed_weights(self) -> PackedWeights | None:
        """The model's weights in oneDNN's layout when its products run there (made on first use, then kept)."""
        if not self.onednn:
            return None
        if self._packed is None:
            self._packed = PackedWeights(self.models)
        return self._packed

    def translations(
        self,
        texts: list[str],
        beam: int | None = None,
        nbest: int = 1,
        batch_size: int | None = None,
        attention: bool = False,
        length_penalty: float | None = None,
        workers: int | str = 1,
    ) -> list[Translation]:
        """One ``Translation`` per text, in order (see the module docstring).

        ``length_penalty`` is the GNMT alpha (default ``decoding.length_penalty``);
        ``workers`` > 1 decodes batches in that many forked processes, ``"auto"`` in one
        per torch thread where that works (``workers.py``).
        """
        options = self.options(beam, nbest, batch_size, length_penalty)
        filled = [i for i, text in enumerate(check_texts(texts)) if text.strip()]
        src_ids = self.tokenizer.encode_src([texts[i].strip() for i in filled])
        found = search(self.model, src_ids, options, self.device, attention, workers, self.packed_weights())
        results = [Translation(text, "", None) for text in texts]
        for index, ids, hyps in zip(filled, src_ids, found):
            results[index] = self._translation(texts[index], ids, hyps, attention)
        return results

    def _translation(self, source: str, src_ids: list[int], hyps: list[Hypothesis], attention: bool) -> Translation:
        best = hyps[0]
        decode = self.tokenizer.decode_tgt
        weights = best.attention.tolist() if attention and best.attention is not None else None
        return Translation(
            source=source,
            text=decode(best.tokens),
            score=best.score,
            source_tokens=self.tokenizer.src_pieces(src_ids),
            target_tokens=[*self.tokenizer.tgt_pieces(best.tokens), "</s>"],
            nbest=[Alternative(decode(h.tokens), h.score) for h in hyps],
            weights=weights,
        )

    def translate(
        self,
        texts: list[str],
        beam: int | None = None,
        batch_size: int | None = None,
        length_penalty: float | None = None,
        workers: int | str = 1,
    ) -> list[str]:
        """One translation per text, in order; beam 1 is greedy search."""
        found = self.translations(
            texts, beam=beam, batch_size=batch_size, length_penalty=length_penalty, workers=workers
        )
        return [t.text for t in found]

    def translate_nbest(self, texts: list[str], beam: int, nbest: int) -> list[list[tuple[str, float]]]:
        """The ``nbest`` best translations of each text with their scores, best first."""
        return [[(a.text, a.score) for a in t.nbest] for t in self.translations(texts, beam=beam, nbest=nbest)]

    def translate_with_attention(self, text: str, beam: int | None = None) -> dict[str, Any]:
        """One translation with source and target tokens and the weight matrix (T x S)."""
        return self.translations([text], beam=beam, attention=True)[0].attention_record()


def evaluate(
    translator: Translator,
    sources: list[str],
    references: list[str],
    beam: int,
    batch_size: int | None = None,
    length_penalty: float | None = None,
    workers: int | str = 1,
) -> tuple[list[str], dict[str, Any]]:
    """Translate ``sources`` and score them: the hypotheses and the ``attnmt evaluate`` JSON fields."""
    from attnmt.metrics import corpus_scores  # sacreBLEU loads in 0.2 s: only when scoring

    alpha = translator.options(beam=beam, length_penalty=length_penalty).length_penalty
    workers = resolve_workers(workers, translator.device)
    started = time.perf_counter()
    hypotheses = translator.translate(sources, beam=beam, batch_size=batch_size, length_penalty=alpha, workers=workers)
    seconds = time.perf_counter() - started
    scores = {
        **corpus_scores(hypotheses, references),
        "beam": beam,
        "length_penalty": alpha,
        "sentences": len(sources),
        "workers": workers,
        "seconds": round(seconds, 2),
        "sentences_per_s": round(len(sources) / seconds, 1),
    }
    return hypotheses, scores
