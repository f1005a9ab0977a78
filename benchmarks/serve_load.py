"""Load on ``attnmt serve`` over loopback: N concurrent clients for a fixed time, micro-batching on and off.

    python benchmarks/serve_load.py --model runs/quickstart [--clients 32] [--seconds 60] [--max-batch 32]
        [--workers 1 auto] [--texts-per-request 1]

Starts the server with ``--max-batch 1`` (every request decoded alone, in the
server process), then with ``--max-batch N`` once for each ``--workers`` value
(1: decoding in the server process; auto: one decoding process per thread).
Each time ``--clients`` clients send requests of ``--texts-per-request``
sentences back to back for ``--seconds`` (a mix of short and long sentences
from test2016), and it reports requests/s, sentences/s, p50/p99 latency and errors. The
ceiling is translating the same sentences with the Python API in batches, in this
process, after loading. Prints one JSON line per measurement; run it on an idle
machine (it is not a CI test).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from peers import cpu_flags  # this folder's script

ROOT = Path(__file__).parent.parent


def sentences(count: int) -> list[str]:
    from attnmt.data import read_lines

    lines = [line for line in read_lines("bundled:multi30k/test_2016_flickr.en.gz") if line.strip()]
    ordered = sorted(lines, key=len)
    short, long = ordered[: len(ordered) // 2], ordered[len(ordered) // 2 :]
    return [short[i % len(short)] if i % 2 else long[i % len(long)] for i in range(count)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


#: A request body for a list of texts (attnmt's ``/v1/translate`` by default).
Body = Callable[[list[str]], Any]


def attnmt_body(texts: list[str]) -> dict[str, Any]:
    return {"texts": texts, "beam": 5}


async def client(url: str, body: Body, texts: list[str], offset: int, per: int, stop_at: float,
                 latencies: list[float], errors: list[str]) -> None:  # fmt: skip
    """Requests of ``per`` texts back to back until ``stop_at``; a 200 without an error body counts."""
    async with httpx.AsyncClient(timeout=300) as session:
        index = offset
        while time.monotonic() < stop_at:
            started = time.monotonic()
            try:
                answer = await session.post(url, json=body([texts[(index + k) % len(texts)] for k in range(per)]))
                if answer.status_code == 200 and '"error"' not in answer.text[:20]:  # onmt_server: errors in a 200
                    latencies.append(time.monotonic() - started)
                else:
                    errors.append(f"{answer.status_code} {answer.text[:200]}")
            except httpx.HTTPError as error:
                errors.append(type(error).__name__)
            index += per


def load(url: str, body: Body, clients: int, per: int, seconds: float) -> dict[str, Any]:
    """``clients`` clients for ``seconds``: requests/s, sentences/s, latency percentiles, errors."""
    texts, latencies, errors = sentences(1000), [], []
    stop_at, started = time.monotonic() + seconds, time.monotonic()

    async def run_all() -> None:
        await asyncio.gather(
            *(client(url, body, texts, i * 31, per, stop_at, latencies, errors) for i in range(clients))
        )

    asyncio.run(run_all())
    elapsed, ordered = time.monotonic() - started, sorted(latencies)
    return {
        "clients": clients,
        "seconds": round(elapsed, 1),
        "texts_per_request": per,
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "sentences_per_s": round(per * len(latencies) / elapsed, 1),
        "p50_ms": round(1000 * statistics.median(ordered), 1) if ordered else None,
        "p99_ms": round(1000 * ordered[int(0.99 * (len(ordered) - 1))], 1) if ordered else None,
        "errors": len(errors),
    }


def serving(command: list[str], health: str, measure: Callable[[], dict[str, Any]], env: dict | None = None) -> dict:
    """Start a server, wait until ``health`` answers 200, run ``measure``, stop the server."""
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while True:
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start: {' '.join(command)}")
            try:
                if httpx.get(health, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        return measure()
    finally:
        server.terminate()
        server.wait(timeout=60)


def measure(
    model: str, max_batch: int, clients: int, seconds: float, threads: int, workers: str, per: int
) -> dict[str, object]:
    port = free_port()
    command = [sys.executable, "-m", "attnmt", "serve", "--model", model, "--port", str(port)]
    command += ["--max-batch", str(max_batch), "--threads", str(threads), "--workers", workers]
    base = f"http://127.0.0.1:{port}"
    result = serving(
        command, f"{base}/v1/health", lambda: load(f"{base}/v1/translate", attnmt_body, clients, per, seconds)
    )
    mode = f"micro-batching max_batch={max_batch}" if max_batch > 1 else "no batching (max_batch=1)"
    return {"mode": mode, "workers": workers, **result}


def ceiling(model: str, threads: int, batch: int) -> dict[str, object]:
    import torch

    from attnmt import Translator

    torch.set_num_threads(threads)
    translator = Translator.load(model)
    texts = sentences(1000)
    started = time.monotonic()
    translator.translate(texts, beam=5, batch_size=batch)
    elapsed = time.monotonic() - started
    return {
        "mode": f"Translator.translate, batches of {batch} (ceiling)",
        "sentences_per_s": round(len(texts) / elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", nargs="+", default=["1", "auto"], help="--workers of the batching servers")
    parser.add_argument("--texts-per-request", type=int, default=1)
    args = parser.parse_args()
    print(json.dumps({"cpu_flags": cpu_flags(), "threads": args.threads}))
    runs = [(1, "1")] + [(args.max_batch, workers) for workers in args.workers]
    for max_batch, workers in runs:
        per = args.texts_per_request
        result = measure(args.model, max_batch, args.clients, args.seconds, args.threads, workers, per)
        print(json.dumps(result), flush=True)
    print(json.dumps(ceiling(args.model, args.threads, args.max_batch)), flush=True)


if __name__ == "__main__":
    main()
