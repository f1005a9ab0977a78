"""``attnmt quickstart``: train, evaluate, translate and plot on the bundled corpus.

Works offline with nothing but attnmt installed: the corpus (Multi30k English,
German and French) and the config ship inside the package. ``pair`` chooses the
direction (en-de by default, de-en, en-fr). Rerunning on the same directory
resumes training (or, if it has finished, only re-evaluates).
"""

from __future__ import annotations

import importlib.resources
import json
import time
from pathlib import Path

from attnmt.config import load_config
from attnmt.data import read_parallel
from attnmt.files import write_text
from attnmt.plotting import plot_attention
from attnmt.train import train
from attnmt.translator import Translator, evaluate

#: Sentences translated at the end, by source language; the first one is also drawn as a heatmap.
EXAMPLES = {
    "en": [
        "A man rides a bike down the street.",
        "Two dogs are playing in the snow.",
        "A little girl in a pink dress is climbing the stairs.",
    ],
    "de": [
        "Ein Mann fährt mit dem Fahrrad die Straße entlang.",
        "Zwei Hunde spielen im Schnee.",
        "Ein kleines Mädchen in einem rosa Kleid steigt die Treppe hinauf.",
    ],
}

#: Language pairs of the bundled corpus (source-target).
PAIRS = ("en-de", "de-en", "en-fr")


def pair_overrides(pair: str) -> list[str]:
    """``--set`` overrides that point a config's data at the bundled corpus of ``pair``."""
    source, target = pair.split("-")
    files = {"train": "train", "valid": "val", "test": "test_2016_flickr"}
    return [
        f"data.{split}_{side}=bundled:multi30k/{name}.{language}.gz"
        for split, name in files.items()
        for side, language in (("src", source), ("tgt", target))
    ]


def bundled_config(name: str) -> Path:
    """Path of a config shipped with attnmt (``configs/NAME.yaml``)."""
    return Path(str(importlib.resources.files("attnmt") / "configs" / f"{name}.yaml"))


def quickstart(out: Path, minutes: float, pair: str = "en-de") -> dict[str, object]:
    """Train for ``minutes``, then evaluate on test2016 with beam 5 and show examples."""
    started = time.monotonic()
    config = load_config(bundled_config("quickstart"), pair_overrides(pair))
    source, target = pair.split("-")
    result = train(config, out, max_minutes=minutes)
    translator = Translator.load(out)
    pairs = read_parallel(config.data.test_src, config.data.test_tgt)
    sources, references = [p[0] for p in pairs], [p[1] for p in pairs]
    hypotheses, scores = evaluate(translator, sources, references, config.decoding.beam, workers="auto")
    evaluation = {
        "test_set": f"multi30k test_2016_flickr {pair}",
        **scores,
        "train_steps": result.steps,
        "train_tgt_tokens_per_s": round(result.target_tokens_per_s, 1),
        "wall_minutes": round((time.monotonic() - started) / 60, 2),
    }
    write_text(out / f"test2016.hyp.{target}", "".join(h + "\n" for h in hypotheses))
    write_text(out / "test2016_eval.json", json.dumps(evaluation, indent=2) + "\n")
    examples = EXAMPLES[source]
    records = translator.translations(examples, beam=config.decoding.beam, attention=True)
    heatmap = plot_attention(
        records[0].source_tokens,
        records[0].target_tokens,
        records[0].weights or [],
        out / "attention.png",
        f"attnmt quickstart: {translator.attention_name} attention, beam {config.decoding.beam}",
    )
    print()
    print(f"test2016 BLEU {scores['bleu']:.2f}  chrF {scores['chrf']:.2f}  (beam {config.decoding.beam}, sacreBLEU)")
    print(f"  {scores['signature']}")
    print()
    for example, record in zip(examples, records):
        print(f"  {example}\n    -> {record.text}")
    print()
    print(f"model and checkpoints   {out}/ (best.pt, last.pt, config.yaml, spm.joint.model)")
    print(f"training log            {out}/train_log.jsonl")
    print(f"test translations       {out}/test2016.hyp.{target}")
    print(f"scores                  {out}/test2016_eval.json")
    print(f"attention heatmap       {heatmap}")
    print(f"next: attnmt translate --model {out} --beam 5 < input.{source}")
    print(f"wall time {evaluation['wall_minutes']:.1f} minutes")
    return evaluation
