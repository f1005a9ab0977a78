"""What the server serves, without the web framework: requests in, JSON-ready answers out.

``ServedModel`` wraps one ``Translator`` (a model or an ensemble) for the HTTP
routes of ``server.py``: it checks and packs decoding options, translates a
micro-batch, shapes the ``/v1/translate`` answer from the ``Translation``
results, explains with the very function behind ``attnmt explain``, and
describes the model for ``/v1/model``. Everything here can be called and tested
without HTTP.
"""

from __future__ import annotations

from typing import Any

from attnmt import limits
from attnmt.explain import explain
from attnmt.translator import Translation, Translator


class ServedModel:
    """A loaded translator and the name it is served under."""

    def __init__(self, translator: Translator) -> None:
        self.translator = translator
        self.name = translator.name

    def options(self, beam: int | None, nbest: int, attention: bool) -> tuple[int, int, bool]:
        """Checked options as a hashable key (requests with equal keys share batches); InputError if bad."""
        checked = self.translator.options(beam=beam, nbest=nbest)
        return (checked.beam, checked.nbest, attention)

    def translate_batch(self, texts: list[str], options: tuple[Any, ...]) -> list[Translation]:
        beam, nbest, attention = options
        return self.translator.translations(texts, beam=beam, nbest=nbest, attention=attention)

    @staticmethod
    def translate_response(results: list[Translation], nbest: int, attention: bool) -> dict[str, Any]:
        """``{"translations": [...]}``, with ``nbest`` lists and ``attention`` records when asked for."""
        answer: dict[str, Any] = {"translations": [r.text for r in results]}
        if nbest > 1:
            answer["nbest"] = [[{"text": a.text, "score": a.score} for a in r.nbest] for r in results]
        if attention:
            answer["attention"] = [
                {"source_tokens": r.source_tokens, "target_tokens": r.target_tokens, "weights": r.weights or []}
                for r in results
            ]
        return answer

    def explain(self, request: Any) -> dict[str, Any]:
        """The JSON of ``attnmt explain --format json`` for an explain request."""
        return explain(
            self.translator, request.text, reference=request.reference, beam=request.beam, top_k=request.top_k
        )

    def description(self, max_texts: int, max_beam: int) -> dict[str, Any]:
        """Architecture, vocabularies, size and training record of the served model (``GET /v1/model``)."""
        translator = self.translator
        config, decoding = translator.config.model, translator.config.decoding
        return {
            "name": self.name,
            "architecture": {
                "rnn": config.rnn,
                "decoder": config.decoder,
                "attention": translator.attention_name,
                "attention_span": config.attention_span,
                "input_feeding": config.input_feeding,
                "bidirectional": config.bidirectional,
                "layers": config.layers,
                "embedding_size": config.embedding_size,
                "hidden_size": config.hidden_size,
                "tie_embeddings": config.tie_embeddings,
            },
            "ensemble_size": len(translator.models),
            "source_vocab_size": translator.tokenizer.src_vocab_size,
            "target_vocab_size": translator.tokenizer.tgt_vocab_size,
            "parameters": translator.parameter_count,
            "quantization": translator.quantization,
            "training": translator.training_record,
            "decoding": {
                "beam": decoding.beam,
                "length_penalty": decoding.length_penalty,
            },
            "limits": {"max_texts": max_texts, "max_beam": max_beam, "max_chars": limits.MAX_INPUT_CHARS},
            "device": str(translator.device),
        }
