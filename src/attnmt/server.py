"""``attnmt serve``: an HTTP API and a web page over one ``Translator``.

Thin routes (FastAPI) over the library: ``POST /v1/translate`` answers with the
``Translation`` results the Python API returns, ``POST /v1/explain`` with exactly
the JSON of ``attnmt explain --format json`` (the same ``explain`` function),
``GET /v1/health``, ``GET /v1/model``, ``GET /`` the page (``web/``). Decoding
runs in the micro-batcher's threads (``batching.py``), each handing its batch to
a decoding process (``serving.py``) or decoding it here, so the event loop never
waits for a model; concurrent requests share batches.

Every refusal is JSON ``{"error": {"field": ..., "message": ...}}`` with a 4xx
status naming the field: 401 without the API key, 413 for a body over
``MAX_BODY_BYTES``, 422 for malformed JSON, wrong types and values out of range,
503 with ``Retry-After`` when the queue is full or a decoding worker process
was lost (the request may be retried at once).
"""

from __future__ import annotations

import asyncio
import hmac
import importlib.resources
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from attnmt import __version__, limits
from attnmt.batching import MicroBatcher, QueueFull
from attnmt.errors import InputError, WorkerLost
from attnmt.serving import ServedModel

#: Largest request body accepted (bytes): 64 texts of 2,000 four-byte characters fit.
MAX_BODY_BYTES = 1_048_576
#: Texts in one request.
MAX_TEXTS = 64
#: Beam size a request may ask for (the library allows more; a server must stay responsive).
MAX_SERVER_BEAM = 16


class TranslateRequest(BaseModel):
    """``{"text": str}`` or ``{"texts": [str]}``, plus optional beam, nbest, attention."""

    model_config = ConfigDict(extra="forbid")
    text: str | None = Field(None, max_length=limits.MAX_INPUT_CHARS)
    texts: list[str] | None = Field(None, max_length=MAX_TEXTS)
    beam: int | None = Field(None, ge=1, le=MAX_SERVER_BEAM)
    nbest: int = Field(1, ge=1, le=MAX_SERVER_BEAM)
    attention: bool = False

    @model_validator(mode="after")
    def _one_input(self) -> TranslateRequest:
        if (self.text is None) == (self.texts is None):
            raise ValueError('give exactly one of "text" and "texts"')
        for index, text in enumerate(self.texts or []):
            if len(text) > limits.MAX_INPUT_CHARS:
                raise InputError(f"texts.{index}", f"{len(text)} characters; at most {limits.MAX_INPUT_CHARS}")
        return self


class ExplainRequest(BaseModel):
    """``{"text": str, "reference"?: str, "beam"?: int}``."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=limits.MAX_INPUT_CHARS)
    reference: str | None = Field(None, max_length=limits.MAX_INPUT_CHARS)
    beam: int = Field(1, ge=1, le=MAX_SERVER_BEAM)
    top_k: int = Field(5, ge=1, le=limits.MAX_TOP_K)


def error(status: int, field: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The one shape of every refusal."""
    return JSONResponse({"error": {"field": field, "message": message}}, status_code=status, headers=headers)


def _validation_error(request: Request, exc: Exception) -> Response:
    first = exc.errors()[0] if isinstance(exc, RequestValidationError) and exc.errors() else {}
    location = [str(part) for part in first.get("loc", ()) if part != "body"]
    if first.get("type") == "json_invalid":
        return error(422, "body", "the body is not valid JSON")
    message = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
    return error(422, ".".join(location) or "body", message)


def _http_error(request: Request, exc: Exception) -> Response:
    """Framework refusals in the same shape: an unparsable body (e.g. invalid UTF-8) is a 422 like bad JSON."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:
        return error(422, "body", "the body is not valid JSON (is it UTF-8?)")
    field = "path" if exc.status_code in (404, 405) else "request"
    return error(exc.status_code, field, str(exc.detail), dict(exc.headers or {}))


def _input_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InputError)
    return error(422, exc.field, exc.detail)


def _queue_full(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, QueueFull)
    return error(503, "queue", str(exc), {"Retry-After": str(exc.retry_after)})


def _worker_lost(request: Request, exc: Exception) -> Response:
    return error(503, "workers", str(exc), {"Retry-After": "1"})


def create_app(
    served: ServedModel, api_key: str | None = None, max_batch: int = 32, max_wait_ms: float = 5.0, queue: int = 1024
) -> FastAPI:
    """The application: routes, limits, the API key and the micro-batcher around ``served``."""
    batcher = MicroBatcher(served.translate_batch, served.explain, max_batch, max_wait_ms, queue, served.workers)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        batcher.stop()
        served.close()

    app = FastAPI(
        title="attnmt", version=__version__, description="Attention NMT you can see and check.", lifespan=lifespan
    )
    app.state.batcher = batcher
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(InputError, _input_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(QueueFull, _queue_full)
    app.add_exception_handler(WorkerLost, _worker_lost)
    app.middleware("http")(_guard(api_key))
    web = importlib.resources.files("attnmt") / "web"

    @app.post("/v1/translate")
    async def translate(request: TranslateRequest) -> dict[str, Any]:
        texts = [request.text] if request.text is not None else request.texts or []
        options = served.options(request.beam, request.nbest, request.attention)
        results = await asyncio.wrap_future(batcher.submit(texts, options))
        return served.translate_response(results, request.nbest, request.attention)

    @app.post("/v1/explain")
    async def explain_route(request: ExplainRequest) -> dict[str, Any]:
        served.translator.options(beam=request.beam)  # a bad beam is a 422 now, not in the worker
        return await asyncio.wrap_future(batcher.submit_explain(request))  # type: ignore[no-any-return]

    @app.get("/v1/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "queued_sentences": batcher.queued_sentences}

    @app.get("/v1/model")
    async def model() -> dict[str, Any]:
        return served.description(max_texts=MAX_TEXTS, max_beam=MAX_SERVER_BEAM)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(web / "index.html"))

    app.mount("/static", StaticFiles(directory=str(web)), name="static")
    return app


def _guard(api_key: str | None) -> Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]:
    """Middleware: body size limit on every request, ``Authorization: Bearer KEY`` on ``/v1/*`` when a key is set."""

    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if api_key and request.url.path.startswith("/v1/"):
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return error(401, "authorization", "missing or wrong API key", {"WWW-Authenticate": "Bearer"})
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return error(413, "body", f"the body is larger than {MAX_BODY_BYTES} bytes")
        if length is None and request.method == "POST":
            body = bytearray()
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    return error(413, "body", f"the body is larger than {MAX_BODY_BYTES} bytes")
            request._body = bytes(body)  # the route reads the buffered body
        return await call_next(request)

    return guard
