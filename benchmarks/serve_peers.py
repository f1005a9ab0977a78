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
import json
import os
import sys
from pathlib import Path
from typing import Any

from serve_load import attnmt_body, cpu_flags, free_port, load, serving


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
    result = serving(
        command,
        f"{base}/health",
        lambda: load(f"{base}/translate", _onmt_body, args.clients, args.per, args.seconds),
        env,
    )
    return {"server": "OpenNMT-py 3.5.1 onmt_server", **result}


def attnmt(work: Path, workers: str, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    command = [sys.executable, "-m", "attnmt", "serve", "--model", str(work / "attnmt_run"), "--port", str(port)]
    command += ["--threads", str(args.threads), "--workers", workers]
    base = f"http://127.0.0.1:{port}"
    result = serving(
        command,
        f"{base}/v1/health",
        lambda: load(f"{base}/v1/translate", attnmt_body, args.clients, args.per, args.seconds),
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
