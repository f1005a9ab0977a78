"""The HTTP API: every endpoint, every refusal (JSON naming the field), the API key, micro-batching."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from attnmt import Translator
from attnmt.server import MAX_BODY_BYTES, create_app
from attnmt.serving import ServedModel
from conftest import tiny_translate

SENTENCES = ["red dog", "the big cat sits on a small bird", "a green dog jumps under the old cat", "blue bird"]


@pytest.fixture(scope="module")
def translator(tiny_model_dir: Path) -> Translator:
    return Translator.load(tiny_model_dir)


@pytest.fixture(scope="module")
def client(translator: Translator) -> Iterator[TestClient]:
    with TestClient(create_app(ServedModel(translator))) as test_client:
        yield test_client


def _refused(response: httpx.Response, status: int, field: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["field"] == field, body
    assert body["error"]["message"]
    return body


def test_translate_one_and_many(client: TestClient, translator: Translator) -> None:
    one = client.post("/v1/translate", json={"text": "red dog"}).json()
    assert one == {"translations": [tiny_translate("red dog")]}
    answer = client.post("/v1/translate", json={"texts": [*SENTENCES, ""], "beam": 1}).json()
    assert answer["translations"] == translator.translate([*SENTENCES, ""], beam=1)


def test_translate_with_nbest_and_attention(client: TestClient, translator: Translator) -> None:
    answer = client.post("/v1/translate", json={"texts": ["red dog"], "beam": 3, "nbest": 2, "attention": True}).json()
    expected = translator.translations(["red dog"], beam=3, nbest=2, attention=True)[0]
    assert [a["text"] for a in answer["nbest"][0]] == [a.text for a in expected.nbest]
    record = answer["attention"][0]
    assert record == {
        "source_tokens": expected.source_tokens,
        "target_tokens": expected.target_tokens,
        "weights": expected.weights,
    }
    assert len(record["weights"]) == len(record["target_tokens"])
    assert all(len(row) == len(record["source_tokens"]) for row in record["weights"])


def test_explain_is_the_json_of_attnmt_explain(client: TestClient, tiny_model_dir: Path) -> None:
    answer = client.post("/v1/explain", json={"text": "red dog", "beam": 2}).json()
    cli = subprocess.run(
        [sys.executable, "-m", "attnmt", "explain", "--model", str(tiny_model_dir), "red dog", "--beam", "2"]
        + ["--format", "json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cli.returncode == 0, cli.stderr
    assert answer == json.loads(cli.stdout)
    forced = client.post("/v1/explain", json={"text": "red dog", "reference": "blau Katze"}).json()
    assert [s["chosen"] for s in forced["steps"]] == ["▁blau", "▁Katze", "</s>"]


def test_health_model_openapi_and_page(client: TestClient, translator: Translator) -> None:
    assert client.get("/v1/health").json()["status"] == "ok"
    model = client.get("/v1/model").json()
    assert model["architecture"]["attention"] == "general" and model["parameters"] > 0
    assert model["source_vocab_size"] == 400 and model["target_vocab_size"] == translator.tokenizer.tgt_vocab_size < 400
    assert model["training"]["best_valid_bleu"] > 50
    assert "/v1/translate" in client.get("/openapi.json").json()["paths"]
    page = client.get("/")
    assert page.status_code == 200 and "<title>attnmt" in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        text = client.get(asset).text
        assert "http://" not in text and "https://" not in text  # no CDN, no external font
    assert "https://" not in page.text and "http://" not in page.text


@pytest.mark.parametrize(
    "body,field",
    [
        ({}, "body"),
        ({"text": "a", "texts": ["b"]}, "body"),
        ({"texts": "red dog"}, "texts"),
        ({"text": 3}, "text"),
        ({"text": "red dog", "beam": "wide"}, "beam"),
        ({"text": "red dog", "beam": 0}, "beam"),
        ({"text": "red dog", "beam": 17}, "beam"),
        ({"text": "red dog", "beam": 2, "nbest": 3}, "nbest"),
        ({"text": "red dog", "attention": "yes please"}, "attention"),
        ({"texts": ["a"] * 65}, "texts"),
        ({"text": "a" * 2001}, "text"),
        ({"texts": ["ok", "a" * 2001]}, "texts.1"),
        ({"text": "red dog", "colour": "blue"}, "colour"),
    ],
)
def test_bad_translate_requests_name_the_field(client: TestClient, body: dict, field: str) -> None:
    _refused(client.post("/v1/translate", json=body), 422, field)


@pytest.mark.parametrize(
    "body,field",
    [({"text": ""}, "text"), ({"text": "red dog", "beam": 99}, "beam"), ({"reference": "x"}, "text")],
)
def test_bad_explain_requests_name_the_field(client: TestClient, body: dict, field: str) -> None:
    _refused(client.post("/v1/explain", json=body), 422, field)


def test_malformed_bodies(client: TestClient) -> None:
    headers = {"Content-Type": "application/json"}
    _refused(client.post("/v1/translate", content=b'{"text": "red', headers=headers), 422, "body")
    _refused(client.post("/v1/translate", content=b'{"text": "\xff\xfe"}', headers=headers), 422, "body")
    _refused(client.post("/v1/translate", content=b"[1, 2]", headers=headers), 422, "body")
    big = json.dumps({"text": "a" * (MAX_BODY_BYTES + 10)}).encode()
    _refused(client.post("/v1/translate", content=big, headers=headers), 413, "body")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit still holds
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            yield b" " * 65536

    _refused(client.post("/v1/translate", content=chunks(), headers=headers), 413, "body")


def test_hostile_but_valid_text_translates(client: TestClient) -> None:
    texts = ["\x00\x07\x1b[31m red", "😀🐕 dog", "שלום red dog", "\u202e dog \u2028 cat", "\ufeff", " " * 2000]
    answer = client.post("/v1/translate", json={"texts": texts}).json()
    assert len(answer["translations"]) == len(texts) and answer["translations"][-1] == ""


def test_api_key(translator: Translator) -> None:
    with TestClient(create_app(ServedModel(translator), api_key="s3cret")) as keyed:
        _refused(keyed.post("/v1/translate", json={"text": "red dog"}), 401, "authorization")
        wrong = {"Authorization": "Bearer nope"}
        _refused(keyed.post("/v1/translate", json={"text": "red dog"}, headers=wrong), 401, "authorization")
        _refused(keyed.get("/v1/health"), 401, "authorization")
        good = {"Authorization": "Bearer s3cret"}
        assert keyed.post("/v1/translate", json={"text": "red dog"}, headers=good).status_code == 200
        assert keyed.get("/").status_code == 200  # the page loads; it asks for the key on 401


class _SlowModel(ServedModel):
    """Decodes only when released: lets a test fill the queue."""

    def __init__(self, translator: Translator) -> None:
        super().__init__(translator)
        self.release = threading.Event()
        self.busy = threading.Event()  # set once the worker holds a batch

    def translate_batch(self, texts: list[str], options: tuple) -> list:
        self.busy.set()
        self.release.wait(timeout=60)
        return super().translate_batch(texts, options)


def test_a_full_queue_answers_503_with_retry_after(translator: Translator) -> None:
    slow = _SlowModel(translator)
    with TestClient(create_app(slow, max_batch=2, max_wait_ms=0, queue=4)) as busy:
        with ThreadPoolExecutor(4) as pool:
            waiting = [pool.submit(busy.post, "/v1/translate", json={"texts": ["red dog", "a cat"]})]
            assert slow.busy.wait(timeout=30)  # the worker holds the first request's batch ...
            waiting += [pool.submit(busy.post, "/v1/translate", json={"texts": ["red dog", "a cat"]}) for _ in range(2)]
            deadline = time.monotonic() + 30
            while busy.app.state.batcher.queued_sentences < 4 and time.monotonic() < deadline:
                time.sleep(0.01)  # ... and the next two fill the queue of 4 sentences
            refused = busy.post("/v1/translate", json={"texts": ["red dog", "a cat"]})
            assert _refused(refused, 503, "queue") and int(refused.headers["Retry-After"]) >= 1
            slow.release.set()
            assert all(f.result(timeout=60).status_code == 200 for f in waiting)


def test_a_lost_decoding_worker_is_a_503_and_the_server_goes_on(translator: Translator) -> None:
    served = ServedModel(translator, workers=2)
    with TestClient(create_app(served)) as server:
        assert server.get("/v1/model").json()["workers"] == 2
        expected = translator.translate(SENTENCES)
        assert server.post("/v1/translate", json={"texts": SENTENCES}).json()["translations"] == expected
        assert served.processes is not None
        os.kill(next(iter(served.processes.processes)).pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while (answer := server.post("/v1/translate", json={"texts": SENTENCES})).status_code == 200:
            assert time.monotonic() < deadline and answer.json()["translations"] == expected
            time.sleep(0.05)
        assert _refused(answer, 503, "workers") and answer.headers["Retry-After"] == "1"
        assert "retry" in answer.json()["error"]["message"]
        assert served.processes is None and multiprocessing.active_children() == []
        assert server.get("/v1/model").json()["workers"] == 1
        again = server.post("/v1/translate", json={"texts": SENTENCES})  # decoded in the server process now
        assert again.status_code == 200 and again.json()["translations"] == expected


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("workers", [1, 2])
def test_concurrent_requests_share_batches_and_get_their_own_answers(translator: Translator, workers: int) -> None:
    """Many clients at once on the real server stack: each answer equals translating that text alone."""
    import uvicorn

    app = create_app(ServedModel(translator, workers), max_batch=16, max_wait_ms=20)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.02)
        words = "red blue green dog cat bird runs sits jumps big small old young the a on under".split()
        texts = [" ".join(words[(i * 7 + j) % len(words)] for j in range(2 + i % 9)) for i in range(48)]
        alone = {text: translator.translate([text], beam=2)[0] for text in texts}

        def ask(text: str) -> str:
            answer = httpx.post(f"http://127.0.0.1:{port}/v1/translate", json={"text": text, "beam": 2}, timeout=120)
            assert answer.status_code == 200, answer.text
            return str(answer.json()["translations"][0])

        with ThreadPoolExecutor(24) as pool:
            answers = list(pool.map(ask, texts))
        assert answers == [alone[text] for text in texts]
        assert app.state.batcher.batches < len(texts)  # requests were decoded together
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert multiprocessing.active_children() == []  # the lifespan's end stopped the decoding processes


def test_serve_command_warns_and_refuses_a_busy_port(tiny_model_dir: Path) -> None:
    port = _free_port()
    command = [sys.executable, "-m", "attnmt", "serve", "--model", str(tiny_model_dir), "--port", str(port)]
    exposed = subprocess.Popen([*command, "--host", "0.0.0.0"], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        busy = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert busy.returncode == 2 and f"--port {port}: cannot listen there" in busy.stderr
        assert "Traceback" not in busy.stderr
    finally:
        exposed.terminate()
        _, stderr = exposed.communicate(timeout=60)
    assert "warning: serving on 0.0.0.0 without --api-key" in stderr
