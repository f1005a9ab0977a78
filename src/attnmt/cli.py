"""The ``attnmt`` command: thin subcommands over the library.

User mistakes (bad arguments, missing files, wrong config keys) print one line
``attnmt: error: ...`` and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import typing
from typing import Any

from attnmt import __version__, commands
from attnmt.errors import AttnmtError, InputError, Interrupted

QUANTIZE_HELP = "int8: decode with int8 weights, activations quantised row by row (CPU); none (the default): fp32"
MATMUL_HELP = "where fp32 products run on a CPU: auto (oneDNN where it pays), torch, onednn (default decoding.matmul)"
WORKERS_HELP = (
    "decode batches in N single-threaded processes side by side (CPU, Linux); "
    "default auto: one per --threads there, else 1"
)

#: torch's CPU kernels keep every oneDNN primitive they build, one per distinct
#: shape, in two caches: oneDNN's own (LSTMs; up to 1,024 by default) and
#: ideep's (bf16 matrix products; ``LRU_CACHE_CAPACITY``, also 1,024). Training
#: batches have hundreds of shapes, and each primitive holds its work space. With
#: the defaults the whole ``attnmt quickstart`` peaked at 1,566 MB of RSS in fp32
#: (748 MB with 16 kept), and bf16 training of the matched model at 2,040 MB
#: (853 MB with 16 kept in both), at the same speed (BENCHMARKS.md, "oneDNN's
#: primitive cache" and "ideep's primitive cache"). A value the user sets in the
#: environment wins.
PRIMITIVE_CACHES = (("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16"), ("LRU_CACHE_CAPACITY", "16"))


def bound_primitive_caches() -> None:
    """Keep at most 16 primitives in each cache unless the user chose; they are read later, at first use."""
    for name, default in PRIMITIVE_CACHES:
        os.environ.setdefault(name, default)


def _bounded(kind: type, low: float, high: float, expected: str) -> typing.Callable[[str], typing.Any]:
    """An argparse type: a number of ``kind`` (int or float) from ``low`` to ``high``, else "expected ..."."""

    def parse(text: str) -> typing.Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high or value != value:  # the last test refuses nan
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


_positive = _bounded(int, 1, 2**63 - 1, "a positive integer")
_minutes = _bounded(float, 1e-6, 1e7, "a positive number of minutes")
_seed = _bounded(int, 0, 2**32 - 1, f"an integer from 0 to {2**32 - 1}")
_port = _bounded(int, 1, 65535, "a port from 1 to 65535")
_milliseconds = _bounded(float, 0, 10_000, "0 to 10000 milliseconds")
_alpha = _bounded(float, 0.0, 10.0, "a length penalty from 0 to 10")
_worker_count = _bounded(int, 1, 2**63 - 1, "a positive integer or 'auto'")


def _workers(text: str) -> int | str:
    """An argparse type: ``auto`` or a positive integer."""
    return text if text == "auto" else _worker_count(text)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and a pointer to ``--help`` (not the usage block)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"attnmt: error: {message} (see '{self.prog} --help')\n")


def _add_quickstart(subparsers: Any) -> None:
    quick = subparsers.add_parser("quickstart", help="train, evaluate and explain on the bundled Multi30k en-de")
    quick.add_argument("--minutes", type=_minutes, default=11.0, help="training budget in minutes (default 11)")
    quick.add_argument("--pair", choices=["en-de", "de-en", "en-fr"], default="en-de", help="language pair (en-de)")
    quick.add_argument("--out", help="output directory (default runs/quickstart, or runs/quickstart-PAIR)")
    quick.add_argument("--threads", type=_positive, help="CPU threads for torch (default: all cores)")
    quick.set_defaults(handler=commands.quickstart)


def _add_train(subparsers: Any) -> None:
    train = subparsers.add_parser("train", help="train a model; rerun on the same --out to resume")
    train.add_argument("--config", required=True, help="YAML config (see configs/)")
    train.add_argument("--out", help="output directory (default runs/<config name>)")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set model.attention=dot (repeatable)",
    )
    train.add_argument(
        "--max-minutes", type=_minutes, help="train at most this many minutes in all (a resumed run counts its time)"
    )
    train.add_argument("--threads", type=_positive, help="CPU threads for torch (default: training.threads or all)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument(
        "--nproc", type=_positive, default=1, help="train in N processes on this machine (torchrun; see README)"
    )
    train.set_defaults(handler=commands.train)


def _add_translate(subparsers: Any) -> None:
    translate = subparsers.add_parser("translate", help="translate lines of text")
    translate.add_argument(
        "--model",
        required=True,
        action="append",
        help="model directory written by attnmt train (repeat for an ensemble: probabilities averaged each step)",
    )
    translate.add_argument("--input", default="-", help="input file, one sentence per line (default stdin)")
    translate.add_argument("--output", default="-", help="output file (default stdout)")
    translate.add_argument("--beam", type=_positive, help="beam size; 1 = greedy (default decoding.beam)")
    translate.add_argument("--batch-size", type=_positive, help="sentences per batch (default decoding.batch_size)")
    translate.add_argument(
        "--length-penalty", type=_alpha, help="GNMT length penalty alpha (default decoding.length_penalty)"
    )
    translate.add_argument(
        "--nbest", type=_positive, default=1, help="write the N best as 'line ||| translation ||| score' rows"
    )
    translate.add_argument("--attention", metavar="FILE.jsonl", help="also write tokens and attention weights")
    translate.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    translate.add_argument("--quantize", choices=["none", "int8"], help=QUANTIZE_HELP)
    translate.add_argument("--matmul", choices=["auto", "torch", "onednn"], help=MATMUL_HELP)
    translate.add_argument("--threads", type=_positive, help="CPU threads for torch")
    translate.add_argument("--workers", type=_workers, default="auto", help=WORKERS_HELP)
    translate.set_defaults(handler=commands.translate)


def _add_evaluate(subparsers: Any) -> None:
    evaluate = subparsers.add_parser("evaluate", help="translate a test set and score it with sacreBLEU")
    evaluate.add_argument(
        "--model",
        required=True,
        action="append",
        help="model directory written by attnmt train (repeat for an ensemble, or with --separately to compare)",
    )
    evaluate.add_argument(
        "--separately", action="store_true", help="evaluate each --model on its own: one JSON line each"
    )
    evaluate.add_argument("--src", required=True, help="source file (plain or .gz)")
    evaluate.add_argument("--ref", required=True, help="reference file (plain or .gz)")
    evaluate.add_argument("--beam", type=_positive, help="beam size; 1 = greedy (default decoding.beam)")
    evaluate.add_argument("--batch-size", type=_positive, help="sentences per batch")
    evaluate.add_argument(
        "--length-penalty",
        type=_alpha,
        nargs="+",
        help="GNMT length penalty alpha (default decoding.length_penalty); several: one JSON line each, the model "
        "loaded once (to tune alpha on validation data)",
    )
    evaluate.add_argument("--by-length", action="store_true", help="also BLEU per source-length bucket")
    evaluate.add_argument("--output", help="also write the translations to this file")
    evaluate.add_argument("--plot", metavar="FILE.png|FILE.svg", help="with --by-length: plot BLEU against length")
    evaluate.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    evaluate.add_argument("--quantize", choices=["none", "int8"], help=QUANTIZE_HELP)
    evaluate.add_argument("--matmul", choices=["auto", "torch", "onednn"], help=MATMUL_HELP)
    evaluate.add_argument("--threads", type=_positive, help="CPU threads for torch")
    evaluate.add_argument("--workers", type=_workers, default="auto", help=WORKERS_HELP)
    evaluate.set_defaults(handler=commands.evaluate)


def _add_explain(subparsers: Any) -> None:
    explain = subparsers.add_parser("explain", help="every number of attention for one sentence, step by step")
    explain.add_argument("sentence", nargs="?", help="the source sentence to explain")
    explain.add_argument("--model", help="model directory written by attnmt train")
    explain.add_argument("--toy", action="store_true", help="train and explain the lecture's let's go -> vamos toy")
    explain.add_argument("--seed", type=_seed, default=0, help="seed of the --toy model (default 0)")
    explain.add_argument("--reference", help="force this target (teacher forcing), show each word's probability")
    explain.add_argument("--beam", type=_positive, default=1, help="explain the best beam hypothesis (default greedy)")
    explain.add_argument("--format", choices=["text", "json"], default="text")
    explain.add_argument("--full", action="store_true", help="print whole vectors in the text format")
    explain.add_argument("--top-k", type=_positive, default=5, help="next-word candidates shown per step")
    explain.add_argument("--plot", metavar="FILE.png|FILE.svg", help="also draw the attention heatmap")
    explain.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    explain.add_argument("--threads", type=_positive, help="CPU threads for torch")
    explain.set_defaults(handler=commands.explain)


def _add_average(subparsers: Any) -> None:
    average = subparsers.add_parser("average", help="average a run's last N kept checkpoints into a new model")
    average.add_argument("--model", required=True, help="run directory trained with training.keep_checkpoints")
    average.add_argument("--last", type=_positive, required=True, help="how many of the newest checkpoints")
    average.add_argument("--out", required=True, help="new model directory")
    average.set_defaults(handler=commands.average)


def _add_serve(subparsers: Any) -> None:
    serve = subparsers.add_parser("serve", help="HTTP API and a web page that shows attention")
    serve.add_argument("--model", required=True, action="append", help="model directory (repeat for an ensemble)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)")
    serve.add_argument("--port", type=_port, default=8000, help="port (default 8000)")
    serve.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1/* (or set ATTNMT_API_KEY)")
    serve.add_argument("--max-batch", type=_positive, default=32, help="sentences decoded together (default 32)")
    serve.add_argument("--max-wait-ms", type=_milliseconds, default=5.0, help="wait for company (default 5 ms)")
    serve.add_argument("--queue-size", type=_positive, default=1024, help="queued sentences before 503 (default 1024)")
    serve.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    serve.add_argument("--quantize", choices=["none", "int8"], help=QUANTIZE_HELP)
    serve.add_argument("--matmul", choices=["auto", "torch", "onednn"], help=MATMUL_HELP)
    serve.add_argument("--threads", type=_positive, help="CPU threads for torch")
    serve.add_argument("--workers", type=_workers, default="auto", help=WORKERS_HELP)
    serve.set_defaults(handler=commands.serve)


def _add_plot(subparsers: Any) -> None:
    plot = subparsers.add_parser("plot", help="heatmaps from a translate --attention file")
    plot.add_argument("file", help="JSONL written by attnmt translate --attention")
    plot.add_argument("--out", required=True, help="directory for the images")
    plot.add_argument("--format", choices=["png", "svg"], default="png")
    plot.set_defaults(handler=commands.plot)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="attnmt", description="Attention encoder-decoder machine translation you can see and check.")
    parser.add_argument("--version", action="version", version=f"attnmt {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_quickstart(subparsers)
    _add_train(subparsers)
    _add_translate(subparsers)
    _add_evaluate(subparsers)
    _add_explain(subparsers)
    _add_average(subparsers)
    _add_serve(subparsers)
    _add_plot(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    bound_primitive_caches()
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.command == "train" and "RANK" in os.environ:
        from attnmt.distributed import launched_by_torchrun, leave

        if launched_by_torchrun():  # one of several training processes: see leave() for why it ends so
            try:
                leave(_run(args))
            except SystemExit as stop:  # lost its peers; `attnmt train --nproc` names the process
                leave(stop.code if isinstance(stop.code, int) else 1)
    status = _run(args)
    if argv is None:  # this process is the command and ends now
        skip_last_collection()
    return status


def skip_last_collection() -> None:
    """Spare the interpreter's shutdown a garbage collection over torch's objects.

    When a process that imported torch ends, Python's last collection walks
    every object torch made (hundreds of thousands): 0.27 s of a 1.5 s
    ``attnmt translate`` of one sentence, measured with torch 2.13.0. The command's files
    are closed by now; freezing the heap moves what is left out of the
    collector's sight, and the operating system frees it with the process.
    ``atexit`` handlers and the flushing of standard streams still run.
    """
    gc.freeze()


def _run(args: argparse.Namespace) -> int:
    """The subcommand's exit status; user mistakes print one line and give 2."""
    try:
        return int(args.handler(args))
    except InputError as error:  # an option out of range: name it as the command line does
        name = error.field if error.field.startswith("text") else "--" + error.field.replace("_", "-")
        print(f"attnmt: error: {name}: {error.detail}", file=sys.stderr)
        return 2
    except AttnmtError as error:
        print(f"attnmt: error: {error}", file=sys.stderr)
        return 2
    except Interrupted as stop:
        return 128 + stop.signum
    except KeyboardInterrupt:
        print("attnmt: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (e.g. `| head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as error:  # a file the user named cannot be read or written
        where = f"{error.filename}: " if error.filename else ""
        print(f"attnmt: error: {where}{error.strerror or error}", file=sys.stderr)
        return 2
