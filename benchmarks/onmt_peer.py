"""OpenNMT-py 3.5.1, the peer of ``peers.py``: its own virtual environment, its training run and what its log says.

Also ``timed``, which both systems' processes run under. Used by ``benchmarks/peers.py``; see its docstring
for the comparison.
"""

from __future__ import annotations

import math
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ONMT_PACKAGES = (  # OpenNMT-py 3.5.1's dependencies, installed without its pins (which would replace torch)
    "configargparse;ctranslate2<5,>=4;tensorboard>=2.3;flask;waitress;pyonmttok<2,>=1.37;pyyaml;sacrebleu;rapidfuzz;"
    "pyahocorasick;six;numpy;spacy;fasttext-wheel"
).split(";")


def timed(command: list[str], env: dict[str, str], log: Path) -> tuple[float, int]:
    """Run a command to completion; its wall seconds and peak RSS (MB, that command alone, by GNU time)."""
    peak_file = log.with_suffix(".maxrss")
    started = time.monotonic()
    with log.open("w") as stream:
        measured = ["/usr/bin/time", "-o", str(peak_file), "-f", "%M", *command]
        subprocess.run(measured, env=env, stdout=stream, stderr=subprocess.STDOUT, check=True)
    return time.monotonic() - started, int(peak_file.read_text().split()[-1]) // 1024


def onmt_venv(cache: Path) -> Path:
    """The OpenNMT-py environment (created on first use: torch==2.13.0 first, OpenNMT-py without its pins)."""
    venv = cache / "onmt-venv"
    if not (venv / "bin" / "onmt_train").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "torch==2.13.0"], check=True)
        subprocess.run([*pip, "--no-deps", "OpenNMT-py==3.5.1"], check=True)
        subprocess.run([*pip, *ONMT_PACKAGES], check=True)
    return venv


ONMT_CONFIG = """
save_data: {work}/onmt
src_vocab: {work}/onmt.vocab.src
tgt_vocab: {work}/onmt.vocab.tgt
overwrite: true
data:
  corpus_1: {{path_src: {train_src}, path_tgt: {train_tgt}}}
  valid: {{path_src: {valid_src}, path_tgt: {valid_tgt}}}
encoder_type: brnn
decoder_type: rnn
rnn_type: GRU
layers: 1
enc_hid_size: 512
dec_hid_size: 512
word_vec_size: 256
global_attention: general
input_feed: 1
dropout: [0.3]
batch_type: tokens
batch_size: 2000
valid_batch_size: 2000
optim: adam
learning_rate: 0.002
label_smoothing: 0.1
max_grad_norm: 5
param_init: 0.1
train_steps: {steps}
valid_steps: {steps}
report_every: 25
save_model: {work}/onmt_model
save_checkpoint_steps: {steps}
seed: 1
"""


def train_onmt(venv: Path, files: dict[str, Path], work: Path, steps: int, env: dict[str, str]) -> dict[str, object]:
    config = work / "onmt.yaml"
    config.write_text(
        ONMT_CONFIG.format(
            work=work,
            steps=steps,
            train_src=files["train.src"],
            train_tgt=files["train.tgt"],
            valid_src=files["valid.src"],
            valid_tgt=files["valid.tgt"],
        )
    )
    build_vocab = [str(venv / "bin" / "onmt_build_vocab"), "-config", str(config), "-n_sample", "-1"]
    subprocess.run(build_vocab, env=env, check=True, capture_output=True)
    seconds, peak = timed([str(venv / "bin" / "onmt_train"), "-config", str(config)], env, work / "onmt_train.log")
    result = onmt_train_result(work, steps, seconds, peak)
    result["valid_ppl_no_smoothing"] = reference_perplexity(venv, str(result["model"]), files, work, env)
    return result


def reference_perplexity(venv: Path, model: str, files: dict[str, Path], work: Path, env: dict[str, str]) -> float:
    """The model's perplexity of the val2016 references, measured as attnmt measures its own.

    OpenNMT-py's "Validation perplexity" includes the label smoothing of its training loss, so it cannot be
    compared with attnmt's. ``onmt_translate -tgt`` scores the references without it (no dropout): its
    "GOLD SCORE" is their summed log-probability per sentence, EOS included. Over all target tokens (EOS
    included, as attnmt counts them) that gives exp(-score x sentences / tokens).
    """
    command = [str(venv / "bin" / "onmt_translate"), "-model", model, "-src", str(files["valid.src"])]
    command += ["-tgt", str(files["valid.tgt"]), "-output", str(work / "onmt.gold.out"), "-beam_size", "1"]
    command += ["-batch_size", "64", "-batch_type", "sents"]
    log = work / "onmt.gold.log"
    timed(command, {**env, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}, log)
    found = re.search(r"GOLD SCORE: (-?[\d.]+), GOLD PPL: \S+ NB SENTENCES: (\d+)", log.read_text())
    if found is None:
        raise SystemExit(f"{log}: OpenNMT-py printed no GOLD SCORE line")
    lines = files["valid.tgt"].read_text(encoding="utf-8").splitlines()
    tokens = sum(len(line.split()) + 1 for line in lines)
    return round(math.exp(-float(found.group(1)) * int(found.group(2)) / tokens), 4)


def onmt_train_result(work: Path, steps: int, seconds: float | None, peak: int) -> dict[str, object]:
    """Tokens/s (median of the steady reports), validation perplexity and vocabulary from OpenNMT-py's log."""
    log = (work / "onmt_train.log").read_text()
    tgt_speeds = [int(m.group(2)) for m in re.finditer(r"(\d+)/\s*(\d+) tok/s", log)]  # reports "src/tgt tok/s"
    ppl = re.findall(r"Validation perplexity: ([\d.]+)", log)  # with label smoothing: see reference_perplexity
    vocab = sum(1 for _ in open(f"{work}/onmt.vocab.tgt", encoding="utf-8"))
    return {
        "system": "OpenNMT-py 3.5.1",
        "steps": steps,
        "tgt_tokens_per_s": statistics.median(tgt_speeds[1:]) if len(tgt_speeds) > 1 else None,
        "reports": len(tgt_speeds),
        "valid_ppl": float(ppl[-1]) if ppl else None,
        "target_vocab": vocab,
        "train_seconds": round(seconds, 1) if seconds is not None else None,
        "peak_rss_mb": peak,
        "model": str(work / f"onmt_model_step_{steps}.pt"),
    }
