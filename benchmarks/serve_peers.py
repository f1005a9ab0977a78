"""Serving side by side: ``attnmt serve`` and OpenNMT-py's ``onmt_server`` under the same load.

    python benchmarks/peers.py --cache CACHE --steps 600        # first: both trained models, in CACHE/work
    python benchmarks/serve_peers.py --cache CACHE [--clients 32] [--texts-per-request 1] [--seconds 40]

Both serve their 600-step matched model of ``peers.py`` with beam 5, GNMT length
penalty 0.6 and 2 torch threads; clients over loopback send requests of
``--texts-per-request`` test2016 sentences back to back (the mix of
``serve_load.py``). OpenNMT-py 3.5.1's server (Flask + waitress) takes its
model's lock for each request, so requests are decoded one after another, each
as its own batch; attnmt's micro-batcher decodes the sentences of concurrent
requests together (``--workers 1`` and the default ``auto``). Prints one JSON
line per server. Run it on an idle machine; the clients share its cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from serve_load import cpu_flags, free_port, sentences


async def _client(url: str, body: Callable[[list[str]], Any], texts: list[str], offset: int, per: int, stop: float,
                  latencies: list[float], errors: list[str]) -> None:  # fmt: skip
    async with httpx.AsyncClient(timeout=300) as session:
        index = offset
        while time.monotonic() < stop:
            started = time.monotonic()
            answer = await session.post(url, json=body([texts[(index + k) % len(texts)] for k in range(per)]))
            if answer.status_code == 200 and "error" not in answer.text[:20]:
                latencies.append(time.monotonic() - started)
            else:
                errors.append(answer.text[:200])
            index += per


def _load(url: str, body: Callable[[list[str]], Any], clients: int, per: int, seconds: float) -> dict[str, Any]:
    """``clients`` clients for ``seconds``: sentences/s and latency percentiles."""
    texts, latencies, errors = sentences(1000), [], []
    stop, started = time.monotonic() + seconds, time.monotonic()

    async def run_all() -> None:
        await asyncio.gather(*(_client(url, body, texts, i * 31, per, stop, latencies, errors) for i in range(clients)))

    asyncio.run(run_all())
    elapsed, ordered = time.monotonic() - started, sorted(latencies)
    return {
        "clients": clients,
        "texts_per_request": per,
        "seconds": round(elapsed, 1),
        "sentences_per_s": round(per * len(latencies) / elapsed, 1),
        "p50_ms": round(1000 * statistics.median(ordered), 1) if ordered else None,
        "p99_ms": round(1000 * ordered[int(0.99 * (len(ordered) - 1))], 1) if ordered else None,
        "errors": len(errors),
    }


def _wait(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.3)
    raise SystemExit(f"the server did not start: {url}")


def _serve(command: list[str], health: str, env: dict[str, str], measure: Callable[[], dict[str, Any]]) -> dict:
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(health, server)
        return measure()
    finally:
        server.terminate()
        server.wait(timeout=60)


def _onmt_body(texts: list[str]) -> list[dict[str, Any]]:
    return [{"src": text, "id": 100} for text in texts]


def onmt(work: Path, venv: Path, args: argparse.Namespace) -> dict[str, Any]:
    conf = {
        "models_root": str(work),
        "models": [
            {
                "id": 100,
                "model": "onmt_model_step_600.pt",
                "timeout": -1,
                "on_timeout": "to_cpu",
                "load": True,
                "opt": {"gpu": -1, "beam_size": 5, "batch_size": 64, "length_penalty": "wu", "alpha": 0.6},
                "tokenizer": {"type": "sentencepiece", "model": str(work / "spm" / "spm.joint.model")},
            }
        ],
    }
    (work / "onmt_server.json").write_text(json.dumps(conf))
    port = free_port()
    command = [str(venv / "bin" / "onmt_server"), "--port", str(port), "--model_config", str(work / "onmt_server.json")]
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "OMP_NUM_THREADS": str(args.threads)}
    base = f"http://127.0.0.1:{port}/translator"
    result = _serve(
        command,
        f"{base}/health",
        env,
        lambda: _load(
            f"{base}/translate", lambda b: [{"src": t, "id": 100} for t in b], args.clients, args.per, args.seconds
        ),
    )
    return {"server": "OpenNMT-py 3.5.1 onmt_server", **result}


def attnmt(work: Path, workers: str, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    command = [sys.executable, "-m", "attnmt", "serve", "--model", str(work / "attnmt_run"), "--port", str(port)]
    command += ["--threads", str(args.threads), "--workers", workers]
    base = f"http://127.0.0.1:{port}"
    result = _serve(
        command,
        f"{base}/v1/health",
        dict(os.environ),
        lambda: _load(f"{base}/v1/translate", lambda b: {"texts": b, "beam": 5}, args.clients, args.per, args.seconds),
    )
    return {"server": f"attnmt serve --workers {workers}", **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, required=True, help="the --cache of peers.py")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--texts-per-request", dest="per", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=40)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    work, venv = args.cache / "work", args.cache / "onmt-venv"
    print(json.dumps({"cpu_flags": cpu_flags(), "threads": args.threads}), flush=True)
    results = [onmt(work, venv, args), attnmt(work, "1", args), attnmt(work, "auto", args)]
    for result in results[1:]:
        result["vs_onmt"] = round(result["sentences_per_s"] / max(results[0]["sentences_per_s"], 1e-9), 2)
    for result in results:
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
