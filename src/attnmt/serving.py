"""What the server serves, without the web framework: requests in, JSON-ready answers out.

``ServedModel`` wraps one ``Translator`` (a model or an ensemble) for the HTTP
routes of ``server.py``: it checks and packs decoding options, translates a
micro-batch, shapes the ``/v1/translate`` answer from the ``Translation``
results, explains with the very function behind ``attnmt explain``, and
describes the model for ``/v1/model``. Everything here can be called and tested
without HTTP.

With ``workers`` above 1 the decoding runs in that many forked processes of one
thread each (``workers.ForkedWorkers``), and the server process only handles
HTTP. In one process, the decoding thread and the web framework's event loop
take turns at Python's interpreter lock (measured with 32 clients: new requests
trickled in over hundreds of milliseconds while a batch decoded). Measured on 2
cores with the clients on the same cores, the sentences per second under load
were 1.04-1.16x with one sentence per request (four runs) and 1.23-1.41x with
eight (three); a lone request (one thread, not two) took -7 % to +14 % longer. If
a worker is killed, the requests of its batch get ``WorkerLost`` (a 503) and
decoding goes on in the server process.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from attnmt import limits
from attnmt.errors import WorkerLost
from attnmt.explain import explain
from attnmt.translator import Translation, Translator
from attnmt.workers import ForkedWorkers, check_workers


class ServedModel:
    """A loaded translator, the name it is served under, and the processes that decode with it."""

    def __init__(self, translator: Translator, workers: int = 1) -> None:
        self.translator = translator
        self.name = translator.name
        check_workers(workers, translator.device)
        self.workers = workers
        self.lock = threading.Lock()  # decoding in this process: one batch at a time
        translator.packed_weights()  # made before the fork, so the decoding processes share one copy
        self.processes = ForkedWorkers(self, workers) if workers > 1 else None

    def close(self) -> bool:
        """Stop the decoding processes; True if there were any (only the first call stops them)."""
        with self.lock:
            processes, self.processes = self.processes, None
        if processes is None:
            return False
        self.workers = 1
        processes.close()
        return True

    def _decode(self, method: str, *args: Any) -> Any:
        """``method`` in a worker process if there are any, else here; a lost worker ends the workers."""
        processes = self.processes
        if processes is None:
            with self.lock:
                return getattr(self, method)(*args)
        try:
            return processes.call(method, *args)
        except WorkerLost:
            lost = "a decoding worker process ended abruptly (killed, or out of memory?)"
            if self.close():
                print(f"attnmt: warning: {lost}; decoding in the server process from now on", file=sys.stderr)
            raise WorkerLost(f"{lost}; retry: the server decodes in its own process now") from None

    def options(self, beam: int | None, nbest: int, attention: bool) -> tuple[int, int, bool]:
        """Checked options as a hashable key (requests with equal keys share batches); InputError if bad."""
        checked = self.translator.options(beam=beam, nbest=nbest)
        return (checked.beam, checked.nbest, attention)

    def translate_batch(self, texts: list[str], options: tuple[Any, ...]) -> list[Translation]:
        """One micro-batch, decoded in a worker process (or here with ``workers`` 1)."""
        return self._decode("_translate_here", texts, options)  # type: ignore[no-any-return]

    def _translate_here(self, texts: list[str], options: tuple[Any, ...]) -> list[Translation]:
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
        """The JSON of ``attnmt explain --format json`` for an explain request (in a worker if any)."""
        return self._decode("_explain_here", request)  # type: ignore[no-any-return]

    def _explain_here(self, request: Any) -> dict[str, Any]:
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
            "workers": self.workers,
        }
