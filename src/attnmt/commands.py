"""What each ``attnmt`` subcommand does: read the arguments, call the library, print.

No logic lives only here: each function parses its input, calls one library
entry point (``train``, ``Translator``, ``explain``, ...) and formats the
result. Outputs go to files atomically (``files.write_text``) or to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from attnmt.errors import AttnmtError, InputError, require_file, require_model_dir
from attnmt.files import write_text


def _check_paths_first(models: list[str] | None, inputs: list[str]) -> None:
    """Name a missing model directory or input file at once, before torch is imported (1–3 s).

    The library checks the same things later with the same messages; ``-`` (stdin)
    and ``bundled:`` corpora are left to it.
    """
    from attnmt.config import BUNDLED_PREFIX

    for model in models or []:
        require_model_dir(Path(model).expanduser())
    for path in inputs:
        if path != "-" and not path.startswith(BUNDLED_PREFIX):
            require_file(path, Path(path).expanduser())


def _set_threads(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


def _read_input(path: str) -> list[str]:
    from attnmt.data import decode_lines, read_lines

    if path == "-":
        return decode_lines(sys.stdin.buffer.read(), "stdin")
    return read_lines(path)


@contextmanager
def _naming_lines(path: str) -> Iterator[None]:
    """Report an over-long input text as FILE:LINE (the library names it texts[i])."""
    try:
        yield
    except InputError as error:
        if error.index is None:
            raise
        where = "stdin" if path == "-" else path
        raise AttnmtError(f"{where}:{error.index + 1}: {error.detail}") from None


def _write_output(path: str, lines: list[str]) -> None:
    """Lines to a file (written whole or not at all) or to stdout."""
    text = "".join(line + "\n" for line in lines)
    if path != "-":
        write_text(path, text)
        return
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as error:
        raise AttnmtError(f"stdout: cannot write ({error.strerror})") from None


def train(args: argparse.Namespace) -> int:
    from attnmt.config import load_config

    config = load_config(args.config, args.set)  # a bad config stops here, before torch loads or a process starts
    from attnmt.distributed import launch, launched_by_torchrun
    from attnmt.train import train as run_training

    if args.threads:
        config.training.threads = args.threads
    if args.nproc > 1 and not launched_by_torchrun():
        return launch(args.nproc, _without_nproc(args.argv))
    out = args.out or f"runs/{Path(args.config).stem}"
    result = run_training(config, out, max_minutes=args.max_minutes or 0.0, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        summary = {
            "out": str(result.out_dir),
            "steps": result.steps,
            "best_valid_bleu": result.best_bleu,
            "stopped": result.stopped_because,
        }
        print(json.dumps(summary))
    return 0


def _without_nproc(argv: list[str]) -> list[str]:
    """The command line of one worker: the same, without ``--nproc N``."""
    kept, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == "--nproc":
            skip = True
        elif not item.startswith("--nproc="):
            kept.append(item)
    return kept


def translate(args: argparse.Namespace) -> int:
    _check_paths_first(args.model, [args.input])
    from attnmt.translator import Translator

    _set_threads(args.threads)
    translator = Translator.load(args.model, device=args.device, quantize=args.quantize, matmul=args.matmul)
    beam = translator.options(beam=args.beam).beam
    if args.nbest > beam:
        raise AttnmtError(f"--nbest {args.nbest} needs --beam of at least {args.nbest} (the beam is {beam})")
    lines = _read_input(args.input)
    with _naming_lines(args.input):
        results = translator.translations(
            lines,
            beam=beam,
            nbest=args.nbest,
            batch_size=args.batch_size,
            attention=bool(args.attention),
            length_penalty=args.length_penalty,
            workers=args.workers,
        )
    if args.attention:
        rows = [
            {
                "line": number,
                "model": " + ".join(Path(m).name for m in args.model),
                "scoring": translator.attention_name,
                "source": result.source,
                **result.attention_record(),
            }
            for number, result in enumerate(results, start=1)
        ]
        write_text(args.attention, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    if args.nbest > 1:
        nbest = [f"{n} ||| {a.text} ||| {a.score:.4f}" for n, result in enumerate(results) for a in result.nbest]
        _write_output(args.output, nbest)
    else:
        _write_output(args.output, [result.text for result in results])
    return 0


def evaluate(args: argparse.Namespace) -> int:
    _check_paths_first(args.model, [args.src, args.ref])
    from attnmt.data import read_parallel
    from attnmt.metrics import bleu_by_length
    from attnmt.translator import Translator, evaluate

    _set_threads(args.threads)
    if args.plot and not args.by_length:
        raise AttnmtError("--plot draws BLEU by sentence length: add --by-length")
    if args.output and args.separately and len(args.model) > 1:
        raise AttnmtError("--output takes the translations of one model or ensemble: drop --separately")
    alphas = args.length_penalty or [None]  # None: each model's decoding.length_penalty
    if args.output and len(alphas) > 1:
        raise AttnmtError("--output takes the translations of one search: give one --length-penalty")
    pairs = read_parallel(args.src, args.ref)
    sources, references = [p[0] for p in pairs], [p[1] for p in pairs]
    groups = [[m] for m in args.model] if args.separately else [args.model]
    series = {}
    for group in groups:
        translator = Translator.load(group, device=args.device, quantize=args.quantize, matmul=args.matmul)
        beam = translator.options(beam=args.beam).beam
        names = " + ".join(Path(m).name for m in group)
        for alpha in alphas:
            hypotheses, result = evaluate(translator, sources, references, beam, args.batch_size, alpha, args.workers)
            label = names + (f", alpha {alpha:g}" if len(alphas) > 1 else "")
            result = {"model": group[0] if len(group) == 1 else group, "attention": translator.attention_name, **result}
            if args.by_length:
                result["by_length"] = bleu_by_length(sources, hypotheses, references)
                series[f"{label} ({translator.attention_name})"] = result["by_length"]
            if args.output:
                _write_output(args.output, hypotheses)
            print(json.dumps(result, ensure_ascii=False), flush=True)
    if args.plot:
        from attnmt.plotting import plot_bleu_by_length

        path = plot_bleu_by_length(series, args.plot, f"BLEU by source length: {Path(args.src).name}")
        print(f"plot written to {path}", file=sys.stderr)
    return 0


def average(args: argparse.Namespace) -> int:
    from attnmt.averaging import average_run

    print(json.dumps(average_run(Path(args.model), args.last, Path(args.out))))
    return 0


def explain(args: argparse.Namespace) -> int:
    _check_paths_first(None if args.toy or not args.model else [args.model], [])
    from attnmt.explain import explain as explain_sentence
    from attnmt.explain import format_text
    from attnmt.plotting import plot_attention

    _set_threads(args.threads)
    if args.toy:
        from attnmt.toy import explain_toy, format_toy

        result = explain_toy(seed=args.seed)
        print(json.dumps(result, ensure_ascii=False, indent=1) if args.format == "json" else format_toy(result))
        return 0
    if not args.model or args.sentence is None:
        raise AttnmtError("explain needs --model DIR and a sentence (or --toy for the lecture's example)")
    from attnmt.translator import Translator

    translator = Translator.load(args.model, device=args.device)
    result = explain_sentence(translator, args.sentence, reference=args.reference, beam=args.beam, top_k=args.top_k)
    if args.format == "json":
        print(json.dumps(result, ensure_ascii=False))
    else:
        print(format_text(result, full=args.full))
    if args.plot:
        if result["scoring"] == "none":
            raise AttnmtError(f"--plot: {Path(args.model).name} has no attention (attention: none), nothing to plot")
        weights = [step["weights"] for step in result["steps"]]
        title = (
            f"{Path(args.model).name}: {result['decoder']} decoder, {result['scoring']} attention ({result['mode']})"
        )
        path = plot_attention(
            result["source_tokens"], [s["chosen"] for s in result["steps"]], weights, args.plot, title
        )
        print(f"heatmap written to {path}", file=sys.stderr)
    return 0


def plot(args: argparse.Namespace) -> int:
    from attnmt.plotting import plot_attention_file

    written = plot_attention_file(args.file, Path(args.out), args.format)
    print(f"{len(written)} heatmap(s) written to {args.out}", file=sys.stderr)
    return 0


def quickstart(args: argparse.Namespace) -> int:
    from attnmt.quickstart import quickstart as run_quickstart

    _set_threads(args.threads)
    out = args.out or ("runs/quickstart" if args.pair == "en-de" else f"runs/quickstart-{args.pair}")
    run_quickstart(Path(out), minutes=args.minutes, pair=args.pair)
    return 0


def serve(args: argparse.Namespace) -> int:
    _check_paths_first(args.model, [])
    import uvicorn

    from attnmt.server import create_app
    from attnmt.serving import ServedModel
    from attnmt.translator import Translator
    from attnmt.workers import resolve_workers

    _set_threads(args.threads)
    api_key = args.api_key or os.environ.get("ATTNMT_API_KEY") or None
    _check_port_free(args.host, args.port)
    translator = Translator.load(args.model, device=args.device, quantize=args.quantize, matmul=args.matmul)
    workers = resolve_workers(args.workers, translator.device)
    name = translator.name
    if not api_key and not _is_loopback(args.host):
        print(
            f"attnmt: warning: serving on {args.host} without --api-key: anyone who can reach this port can use it",
            file=sys.stderr,
        )
    served = ServedModel(translator, workers)  # forks the decoding workers before the server starts threads
    app = create_app(served, api_key, args.max_batch, args.max_wait_ms, args.queue_size)
    processes = f", {workers} decoding processes" if workers > 1 else ""
    print(f"attnmt: serving {name} on http://{args.host}:{args.port}/ (API docs at /docs){processes}", file=sys.stderr)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        served.close()
    return 0


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_port_free(host: str, port: int) -> None:
    import socket

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as error:
        raise AttnmtError(f"--host {host} --port {port}: cannot listen there ({error.strerror})") from None
