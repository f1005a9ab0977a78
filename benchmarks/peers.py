"""attnmt and OpenNMT-py 3.5.1 side by side on this machine: training speed, memory, decoding speed, BLEU.

    python benchmarks/peers.py [--cache ~/.cache/attnmt-peers] [--steps 300] [--threads 2]
                               [--attnmt-set training.precision=bf16 ...] [--skip-onmt | --decode-only]

1. Creates OpenNMT-py 3.5.1 in its own virtual environment under ``--cache`` (once).
2. Prepares Multi30k en-de with ONE joint 8k sentencepiece BPE (attnmt's tokenizer
   trainer, whose model attnmt's own training reproduces exactly) and writes the
   pieces OpenNMT-py reads; OpenNMT-py builds its vocabularies from them.
3. Trains the matched model with each for ``--steps`` updates (embeddings 256,
   bidirectional GRU 2 x 256, GRU decoder 512, Luong general attention, input
   feeding, Adam 0.002 (constant for both: attnmt's plateau schedule first looks
   at the validation after the last step), label smoothing 0.1, batches of 2,000
   tokens, dropout 0.3, uniform init 0.1): attnmt's ``configs/luong_general.yaml``,
   OpenNMT-py
   ``-encoder_type brnn -rnn_type GRU -global_attention general -input_feed 1``.
   Target tokens/s are the median of the periodic reports, skipping the first one
   and any that includes a validation (steady state). Both count target tokens
   alike: non-padding, EOS included, BOS excluded. Peak RSS of the whole process.
4. Decodes test2016 (1,000 sentences) with each, greedy and beam 5, the same
   GNMT length penalty (alpha 0.6, ``--alpha``, or with ``--alpha val`` each system's own
   best beam-5 BLEU on val2016 over ``--alpha-grid``) and batches of 64 sentences, timing the whole
   process (start-up and model loading included), and scores detokenised output
   with sacreBLEU. attnmt runs with its default ``--workers auto`` (one
   single-threaded decoding process per thread); ``--attnmt-workers 1 auto``
   also times it in one process. attnmt also decodes with ``--quantize int8`` (OpenNMT-py's
   PyTorch path has no int8 for RNNs). The systems take turns, ``--repeats``
   times; each one's fastest run counts (the least disturbed on a noisy machine).

``--skip-onmt`` reuses OpenNMT-py's trained model and results from an earlier run;
``--decode-only`` trains nothing and decodes again with both models of an earlier
run (after a change to decoding).

Prints JSON lines and a table of ratios, with this machine's CPU flags. One heavy
process at a time: run it on an idle machine. CI does not run it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

from onmt_peer import onmt_venv, reference_perplexity, timed, train_onmt

ROOT = Path(__file__).parent.parent


def cpu_flags() -> str:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return ",".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in text) or "unknown"


def prepare(work: Path) -> dict[str, Path]:
    """The bundled corpus as text, one joint BPE, and its pieces for OpenNMT-py."""
    from attnmt.data import read_parallel
    from attnmt.tokenizer import Tokenizer

    splits = {
        "train": ("train.en.gz", "train.de.gz"),
        "valid": ("val.en.gz", "val.de.gz"),
        "test": ("test_2016_flickr.en.gz", "test_2016_flickr.de.gz"),
    }
    pairs = {name: read_parallel(f"bundled:multi30k/{s}", f"bundled:multi30k/{t}") for name, (s, t) in splits.items()}
    spm_dir = work / "spm"
    spm_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer.train([p for p in pairs["train"] if p[0] and p[1]], spm_dir, 8000, "bpe", True)
    files = {}
    for name, rows in pairs.items():
        for side, index in (("src", 0), ("tgt", 1)):
            texts = [row[index] for row in rows]
            (work / f"{name}.{side}.txt").write_text("".join(t + "\n" for t in texts), encoding="utf-8")
            pieces = tokenizer.src.encode(texts, out_type=str)
            path = work / f"{name}.{side}.pieces"
            path.write_text("".join(" ".join(p) + "\n" for p in pieces), encoding="utf-8")
            files[f"{name}.{side}"] = path
    files["spm"] = spm_dir / "spm.joint.model"
    return files


def train_attnmt(work: Path, steps: int, threads: int, overrides: list[str], env: dict[str, str]) -> dict[str, object]:
    out = work / "attnmt_run"
    shutil.rmtree(out, ignore_errors=True)  # a fresh run: the same --out would resume a finished one
    settings = [f"training.max_steps={steps}", f"training.valid_every={steps}", "training.log_every=25"]
    settings += [f"training.threads={threads}", "training.early_stopping=0", *overrides]
    command = [sys.executable, "-m", "attnmt", "train", "--config", str(ROOT / "configs" / "luong_general.yaml")]
    command += ["--out", str(out), "--no-progress"] + [f"--set={s}" for s in settings]
    seconds, peak = timed(command, env, work / "attnmt_train.log")
    return attnmt_train_result(out, steps, overrides, seconds, peak)


def attnmt_train_result(
    out: Path, steps: int, overrides: list[str], seconds: float | None, peak: int | None
) -> dict[str, object]:
    """attnmt's training speed and validation perplexity, read from the run's train_log.jsonl."""
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    speeds = [r["tgt_tokens_per_s"] for r in rows if "valid_loss" not in r]
    valid = [r for r in rows if "valid_loss" in r]
    return {
        "system": "attnmt",
        "steps": steps,
        "tgt_tokens_per_s": statistics.median(speeds[1:]) if len(speeds) > 1 else None,
        "reports": len(speeds),
        "valid_ppl": valid[-1]["valid_ppl"] if valid else None,
        "overrides": overrides,
        "train_seconds": None if seconds is None else round(seconds, 1),
        "peak_rss_mb": peak,
        "model": str(out),
    }


def decode(
    system: str,
    model: str,
    venv: Path,
    files: dict[str, Path],
    work: Path,
    beam: int,
    env: dict[str, str],
    int8: bool = False,
    alpha: float = 0.6,
    workers: str = "1",
    split: str = "test",
):
    """Translate test2016 (or val2016 with ``split="valid"``), whole process timed, and score it."""
    import sacrebleu
    import sentencepiece

    name = f"{system}{'.int8' if int8 else ''}{f'.w{workers}' if workers != '1' else ''}.beam{beam}"
    output = work / (f"{name}.out" if split == "test" else f"{name}.{split}.alpha{alpha}.out")
    if system == "attnmt":
        command = [sys.executable, "-m", "attnmt", "translate", "--model", model, "--beam", str(beam)]
        command += ["--input", str(files[f"{split}.src.txt"]), "--output", str(output), "--batch-size", "64"]
        command += ["--length-penalty", str(alpha)] + (["--quantize", "int8"] if int8 else [])
        command += ["--workers", workers]
    else:
        command = [str(venv / "bin" / "onmt_translate"), "-model", model, "-src", str(files[f"{split}.src"])]
        command += ["-output", str(output), "-beam_size", str(beam), "-batch_size", "64", "-batch_type", "sents"]
        command += ["-length_penalty", "wu", "-alpha", str(alpha)]
    seconds, peak = timed(command, {**env, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}, work / f"{system}.decode.log")
    lines = output.read_text(encoding="utf-8").splitlines()
    if system != "attnmt":
        processor = sentencepiece.SentencePieceProcessor(model_file=str(files["spm"]))
        lines = [processor.decode(line.split()) for line in lines]
        output = output.with_suffix(".detok")
        output.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    references = files[f"{split}.tgt.txt"].read_text(encoding="utf-8").splitlines()
    bleu = sacrebleu.corpus_bleu(lines, [references]).score
    return {
        "system": system + (" int8" if int8 else "") + (f" --workers {workers}" if system == "attnmt" else ""),
        "beam": beam,
        "alpha": alpha,
        "seconds": round(seconds, 2),
        "sentences_per_s": round(len(lines) / seconds, 1),
        "bleu": round(bleu, 2),
        "peak_rss_mb": peak,
        "text": str(output),
    }


def bleu_difference(ours: dict, peer: dict, references: Path) -> dict[str, float] | None:
    """attnmt's BLEU minus OpenNMT-py's on the same sentences, with sacreBLEU's paired bootstrap p-value (1,000).

    None for OpenNMT-py results saved by an older version of this script, which kept no translations.
    """
    if "text" not in peer:
        return None
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    def read(path: str | Path) -> list[str]:
        return Path(path).read_text(encoding="utf-8").splitlines()

    systems: list[tuple[str, Sequence[str]]] = [("onmt", read(peer["text"])), ("attnmt", read(ours["text"]))]
    metric = BLEU(references=[read(references)])
    _, scores = PairedTest(systems, {"BLEU": metric}, references=None, test_type="bs", n_samples=1000)()
    p_value = getattr(scores["BLEU"][1], "p_value", None)  # a Result (the first row is the baseline's name column)
    return {"difference": round(ours["bleu"] - peer["bleu"], 2), "p_value": round(float(p_value or 0.0), 3)}


def tune_alpha(system: str, model: str, venv: Path, files: dict[str, Path], work: Path, env, grid) -> dict:
    """The length penalty with the best beam-5 BLEU on val2016 for one system's model (never the test set)."""
    bleus = {a: decode(system, model, venv, files, work, 5, env, alpha=a, split="valid")["bleu"] for a in grid}
    best = max(grid, key=lambda alpha: (bleus[alpha], -alpha))
    return {"system": system, "tuned_on": "val2016, beam 5", "val_bleu": bleus, "alpha": best}


def search_name(result: dict) -> str:
    """A decode result's name in the ratio lines, its search and system: e.g. "beam5, attnmt --workers auto"."""
    return f"{'greedy' if result['beam'] == 1 else 'beam' + str(result['beam'])}, {result['system']}"


def int8_over_fp32(decodes: list[dict]) -> dict[str, dict[str, float]]:
    """attnmt's ``--quantize int8`` against its fp32 runs of the same search and workers: speed and BLEU."""
    fp32 = {(r["beam"], r["system"]): r for r in decodes if " int8" not in r["system"]}
    ratios = {}
    for result in decodes:
        base = fp32.get((result["beam"], result["system"].replace(" int8", "")))
        if base is None or result is base:
            continue
        name = search_name(base)
        speed = round(result["sentences_per_s"] / base["sentences_per_s"], 2)
        ratios[name] = {"speed": speed, "bleu_change": round(result["bleu"] - base["bleu"], 2)}
    return ratios


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "attnmt-peers"))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--attnmt-set", action="append", default=[], help="config override for attnmt's run")
    parser.add_argument("--skip-onmt", action="store_true", help="reuse OpenNMT-py's results from an earlier run")
    parser.add_argument(
        "--decode-only", action="store_true", help="train nothing: decode again with both models of an earlier run"
    )
    parser.add_argument(
        "--alpha",
        default="0.6",
        help="GNMT length penalty of both systems' decoding, or 'val': each system's best beam-5 BLEU on val2016",
    )
    parser.add_argument("--alpha-grid", type=float, nargs="+", default=[0.6, 1.0, 1.4, 1.8], help="with --alpha val")
    parser.add_argument("--repeats", type=int, default=2, help="decode each system this many times, keep the fastest")
    parser.add_argument(
        "--attnmt-workers",
        nargs="+",
        default=["auto"],
        help="attnmt translate --workers values to measure (default: auto, attnmt's default)",
    )
    args = parser.parse_args()
    if args.alpha != "val":
        args.alpha = float(args.alpha)
    return args


def choose_alphas(
    args, models: dict[str, str], venv: Path, files: dict[str, Path], work: Path, env
) -> dict[str, float]:
    """Each system's length penalty: ``--alpha`` for both, or each one's best on val2016."""
    if args.alpha != "val":
        return {system: args.alpha for system in models}
    alphas = {}
    for system, model in models.items():
        tuned = tune_alpha(system, model, venv, files, work, env, args.alpha_grid)
        print(json.dumps(tuned), flush=True)
        alphas[system] = float(tuned["alpha"])
    return alphas


def decode_all(args, onmt: dict, ours: dict, venv: Path, files: dict[str, Path], work: Path, env) -> None:
    """Both systems decode test2016 greedy and beam 5, taking turns; each one's fastest run is kept."""
    saved = work / "onmt_results.json"
    ours_model = str(ours["train"]["model"])
    alphas = choose_alphas(args, {"onmt": str(onmt["train"]["model"]), "attnmt": ours_model}, venv, files, work, env)
    variants = [(int8, w) for int8 in (False, True) for w in args.attnmt_workers]
    runs = [("onmt", str(onmt["train"]["model"]), False, "1")] + [("attnmt", ours_model, i, w) for i, w in variants]
    same_alpha = "decode" in onmt and onmt["decode"][1].get("alpha", 0.6) == alphas["onmt"]
    if args.skip_onmt and not args.decode_only and same_alpha:
        runs = runs[1:]
    found: dict[tuple[str, bool, str, int], dict] = {}
    for _ in range(args.repeats):  # alternate the systems, keep each one's fastest run
        for beam in (1, 5):
            for system, model, int8, workers in runs:
                result = decode(system, model, venv, files, work, beam, env, int8, alphas[system], workers)
                kept = found.get((system, int8, workers, beam))
                if kept is None or result["seconds"] < kept["seconds"]:
                    found[(system, int8, workers, beam)] = result
    if ("onmt", False, "1", 1) in found:
        onmt["decode"] = [found[("onmt", False, "1", 1)], found[("onmt", False, "1", 5)]]
        saved.write_text(json.dumps(onmt))
    ours["decode"] = [found[("attnmt", int8, w, b)] for int8, w in variants for b in (1, 5)]


def report(onmt: dict, ours: dict, references: Path) -> None:
    """JSON lines of each result, then attnmt's ratios to OpenNMT-py and int8's to fp32."""
    for result in (onmt["train"], ours["train"], *onmt["decode"], *ours["decode"]):
        print(json.dumps(result), flush=True)

    def over(a: dict, b: dict, key: str) -> float | None:
        return round(float(a[key]) / float(b[key]), 2) if a[key] and b[key] else None

    ratio: dict[str, float | None] = {"train_tgt_tokens_per_s": over(ours["train"], onmt["train"], "tgt_tokens_per_s")}
    bleu = {}
    for result in ours["decode"]:
        name, peer = search_name(result), onmt["decode"][result["beam"] > 1]
        ratio[f"decode {name}"] = over(result, peer, "sentences_per_s")
        bleu[name] = bleu_difference(result, peer, references)
    print(json.dumps({"attnmt_over_onmt": ratio}), flush=True)
    print(json.dumps({"attnmt_bleu_minus_onmt": bleu}), flush=True)
    print(json.dumps({"attnmt_int8_over_fp32": int8_over_fp32(ours["decode"])}), flush=True)


def main() -> None:
    args = arguments()
    cache = Path(args.cache)
    work = cache / "work"
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    shown_steps = "as trained before" if args.decode_only else args.steps
    print(json.dumps({"cpu_flags": cpu_flags(), "threads": args.threads, "steps": shown_steps}), flush=True)
    venv = onmt_venv(cache)
    files = prepare(work)
    for split in ("test", "valid"):
        for side in ("src", "tgt"):
            files[f"{split}.{side}.txt"] = work / f"{split}.{side}.txt"
    saved = work / "onmt_results.json"
    if (args.skip_onmt or args.decode_only) and saved.is_file():
        onmt = json.loads(saved.read_text())
        if "valid_ppl_no_smoothing" not in onmt["train"]:  # saved by an older version of this script
            model = str(onmt["train"]["model"])
            onmt["train"]["valid_ppl_no_smoothing"] = reference_perplexity(venv, model, files, work, env)
            saved.write_text(json.dumps(onmt))
    else:
        onmt = {"train": train_onmt(venv, files, work, args.steps, env)}
        saved.write_text(json.dumps(onmt))
    if args.decode_only:
        steps = int(onmt["train"]["steps"])
        ours = {"train": attnmt_train_result(work / "attnmt_run", steps, args.attnmt_set, None, None)}
    else:
        ours = {"train": train_attnmt(work, args.steps, args.threads, args.attnmt_set, env)}
    decode_all(args, onmt, ours, venv, files, work, env)
    report(onmt, ours, files["test.tgt.txt"])


if __name__ == "__main__":
    main()
