"""Pictures: attention heatmaps and BLEU by sentence length.

matplotlib is imported inside the functions with the non-interactive Agg backend,
so importing attnmt never touches a display. Subword pieces keep sentencepiece's
word-start mark "▁" so word boundaries stay visible.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_attention(
    source_tokens: list[str], target_tokens: list[str], weights: list[list[float]], path: str | Path, title: str
) -> Path:
    """Heatmap of ``weights`` (target x source): rows are output tokens, columns input tokens."""
    plt = _pyplot()
    path = Path(path)
    width = max(4.0, 0.45 * len(source_tokens) + 2.5)
    height = max(3.0, 0.4 * len(target_tokens) + 1.8)
    figure, axes = plt.subplots(figsize=(width, height))
    image = axes.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    axes.set_xticks(range(len(source_tokens)), labels=source_tokens, rotation=60, ha="right")
    axes.set_yticks(range(len(target_tokens)), labels=target_tokens)
    axes.set_xlabel("source tokens (encoder outputs)")
    axes.set_ylabel("output tokens (decoder steps)")
    axes.set_title(title, fontsize=10)
    figure.colorbar(image, ax=axes, label="attention weight")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def plot_bleu_by_length(series: dict[str, list[dict[str, Any]]], path: str | Path, title: str) -> Path:
    """BLEU per source-length bucket, one line per model (Bahdanau et al. 2014, Fig. 2)."""
    plt = _pyplot()
    path = Path(path)
    figure, axes = plt.subplots(figsize=(6.5, 4.0))
    for name, rows in series.items():
        labels = [f"{r['min_words']}-{r['max_words']}" if r["max_words"] < 1000 else f"{r['min_words']}+" for r in rows]
        axes.plot(labels, [r["bleu"] for r in rows], marker="o", label=name)
    axes.set_xlabel("source sentence length (words)")
    axes.set_ylabel("BLEU")
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
