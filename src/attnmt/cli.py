"""The ``attnmt`` command: thin subcommands over the library.

User mistakes (bad arguments, missing files, wrong config keys) print one line
``attnmt: error: ...`` and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from attnmt import __version__
from attnmt.errors import AttnmtError, InputError


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of minutes, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of minutes, got {text!r}")
    return value


def _set_threads(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


def _read_input(path: str) -> list[str]:
    if path == "-":
        return sys.stdin.read().splitlines()
    from attnmt.data import read_lines

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


def _write_text(path: str, text: str) -> None:
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as error:
        raise AttnmtError(f"{path}: cannot write output ({error.strerror})") from None


def _write_output(path: str, lines: list[str]) -> None:
    text = "".join(line + "\n" for line in lines)
    if path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        _write_text(path, text)


def cmd_train(args: argparse.Namespace) -> int:
    from attnmt.config import load_config
    from attnmt.train import train

    config = load_config(args.config, args.set)
    _set_threads(args.threads or config.training.threads)
    out = args.out or f"runs/{Path(args.config).stem}"
    result = train(config, out, max_minutes=args.max_minutes or 0.0, progress=not args.no_progress)
    print(
        json.dumps(
            {
                "out": str(result.out_dir),
                "steps": result.steps,
                "best_valid_bleu": result.best_bleu,
                "stopped": result.stopped_because,
            }
        )
    )
    return 0


def cmd_translate(args: argparse.Namespace) -> int:
    from attnmt.translator import Translator

    _set_threads(args.threads)
    translator = Translator.load(args.model, device=args.device)
    beam = translator.options(beam=args.beam).beam
    if args.nbest > beam:
        raise AttnmtError(f"--nbest {args.nbest} needs --beam of at least {args.nbest} (the beam is {beam})")
    lines = _read_input(args.input)
    with _naming_lines(args.input):
        results = translator.translations(
            lines, beam=beam, nbest=args.nbest, batch_size=args.batch_size, attention=bool(args.attention)
        )
    if args.attention:
        rows = [
            {
                "line": number,
                "model": Path(args.model).name,
                "scoring": translator.attention_name,
                "source": result.source,
                **result.attention_record(),
            }
            for number, result in enumerate(results, start=1)
        ]
        _write_text(args.attention, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    if args.nbest > 1:
        nbest = [f"{n} ||| {a.text} ||| {a.score:.4f}" for n, result in enumerate(results) for a in result.nbest]
        _write_output(args.output, nbest)
    else:
        _write_output(args.output, [result.text for result in results])
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from attnmt.data import read_parallel
    from attnmt.metrics import bleu_by_length
    from attnmt.translator import Translator, evaluate

    _set_threads(args.threads)
    if args.plot and not args.by_length:
        raise AttnmtError("--plot draws BLEU by sentence length: add --by-length")
    if args.output and len(args.model) > 1:
        raise AttnmtError("--output takes the translations of one model: give one --model")
    pairs = read_parallel(args.src, args.ref)
    sources = [p[0] for p in pairs]
    references = [p[1] for p in pairs]
    series = {}
    for model_dir in args.model:
        translator = Translator.load(model_dir, device=args.device)
        beam = translator.options(beam=args.beam).beam
        hypotheses, result = evaluate(translator, sources, references, beam, args.batch_size)
        if len(args.model) > 1:
            result = {"model": model_dir, "attention": translator.attention_name, **result}
        if args.by_length:
            result["by_length"] = bleu_by_length(sources, hypotheses, references)
            series[f"{Path(model_dir).name} ({translator.attention_name})"] = result["by_length"]
        if args.output:
            _write_output(args.output, hypotheses)
        print(json.dumps(result, ensure_ascii=False), flush=True)
    if args.plot:
        from attnmt.plotting import plot_bleu_by_length

        path = plot_bleu_by_length(series, args.plot, f"BLEU by source length: {Path(args.src).name}")
        print(f"plot written to {path}", file=sys.stderr)
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from attnmt.explain import explain, format_text
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
    result = explain(translator, args.sentence, reference=args.reference, beam=args.beam, top_k=args.top_k)
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


def cmd_plot(args: argparse.Namespace) -> int:
    from attnmt.plotting import plot_attention_file

    written = plot_attention_file(args.file, Path(args.out), args.format)
    print(f"{len(written)} heatmap(s) written to {args.out}", file=sys.stderr)
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from attnmt.quickstart import quickstart

    _set_threads(args.threads)
    quickstart(Path(args.out), minutes=args.minutes)
    return 0


def _add_quickstart(commands: Any) -> None:
    quick = commands.add_parser("quickstart", help="train, evaluate and explain on the bundled Multi30k en-de")
    quick.add_argument("--minutes", type=_minutes, default=11.0, help="training budget in minutes (default 11)")
    quick.add_argument("--out", default="runs/quickstart", help="output directory (default runs/quickstart)")
    quick.add_argument("--threads", type=_positive, help="CPU threads for torch (default: all cores)")
    quick.set_defaults(handler=cmd_quickstart)


def _add_train(commands: Any) -> None:
    train = commands.add_parser("train", help="train a model; rerun on the same --out to resume")
    train.add_argument("--config", required=True, help="YAML config (see configs/)")
    train.add_argument("--out", help="output directory (default runs/<config name>)")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set model.attention=dot (repeatable)",
    )
    train.add_argument("--max-minutes", type=_minutes, help="stop training after this many minutes")
    train.add_argument("--threads", type=_positive, help="CPU threads for torch (default: training.threads or all)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(handler=cmd_train)


def _add_translate(commands: Any) -> None:
    translate = commands.add_parser("translate", help="translate lines of text")
    translate.add_argument("--model", required=True, help="model directory written by attnmt train")
    translate.add_argument("--input", default="-", help="input file, one sentence per line (default stdin)")
    translate.add_argument("--output", default="-", help="output file (default stdout)")
    translate.add_argument("--beam", type=_positive, help="beam size; 1 = greedy (default decoding.beam)")
    translate.add_argument("--batch-size", type=_positive, help="sentences per batch (default decoding.batch_size)")
    translate.add_argument(
        "--nbest", type=_positive, default=1, help="write the N best as 'line ||| translation ||| score' rows"
    )
    translate.add_argument("--attention", metavar="FILE.jsonl", help="also write tokens and attention weights")
    translate.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    translate.add_argument("--threads", type=_positive, help="CPU threads for torch")
    translate.set_defaults(handler=cmd_translate)


def _add_evaluate(commands: Any) -> None:
    evaluate = commands.add_parser("evaluate", help="translate a test set and score it with sacreBLEU")
    evaluate.add_argument(
        "--model",
        required=True,
        action="append",
        help="model directory written by attnmt train (repeat to compare models)",
    )
    evaluate.add_argument("--src", required=True, help="source file (plain or .gz)")
    evaluate.add_argument("--ref", required=True, help="reference file (plain or .gz)")
    evaluate.add_argument("--beam", type=_positive, help="beam size; 1 = greedy (default decoding.beam)")
    evaluate.add_argument("--batch-size", type=_positive, help="sentences per batch")
    evaluate.add_argument("--by-length", action="store_true", help="also BLEU per source-length bucket")
    evaluate.add_argument("--output", help="also write the translations to this file")
    evaluate.add_argument("--plot", metavar="FILE.png|FILE.svg", help="with --by-length: plot BLEU against length")
    evaluate.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    evaluate.add_argument("--threads", type=_positive, help="CPU threads for torch")
    evaluate.set_defaults(handler=cmd_evaluate)


def _add_explain(commands: Any) -> None:
    explain = commands.add_parser("explain", help="every number of attention for one sentence, step by step")
    explain.add_argument("sentence", nargs="?", help="the source sentence to explain")
    explain.add_argument("--model", help="model directory written by attnmt train")
    explain.add_argument("--toy", action="store_true", help="train and explain the lecture's let's go -> vamos toy")
    explain.add_argument("--seed", type=int, default=0, help="seed of the --toy model (default 0)")
    explain.add_argument("--reference", help="force this target (teacher forcing), show each word's probability")
    explain.add_argument("--beam", type=_positive, default=1, help="explain the best beam hypothesis (default greedy)")
    explain.add_argument("--format", choices=["text", "json"], default="text")
    explain.add_argument("--full", action="store_true", help="print whole vectors in the text format")
    explain.add_argument("--top-k", type=_positive, default=5, help="next-word candidates shown per step")
    explain.add_argument("--plot", metavar="FILE.png|FILE.svg", help="also draw the attention heatmap")
    explain.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    explain.add_argument("--threads", type=_positive, help="CPU threads for torch")
    explain.set_defaults(handler=cmd_explain)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attnmt", description="Attention encoder-decoder machine translation you can see and check."
    )
    parser.add_argument("--version", action="version", version=f"attnmt {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_quickstart(commands)
    _add_train(commands)
    _add_translate(commands)
    _add_evaluate(commands)
    _add_explain(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except InputError as error:  # an option out of range: name it as the command line does
        name = error.field if error.field.startswith("text") else "--" + error.field.replace("_", "-")
        print(f"attnmt: error: {name}: {error.detail}", file=sys.stderr)
        return 2
    except AttnmtError as error:
        print(f"attnmt: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("attnmt: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
