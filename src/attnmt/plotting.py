"""Pictures: attention heatmaps and BLEU by sentence length.

matplotlib is imported inside the functions with the non-interactive Agg backend,
so importing attnmt never touches a display. Subword pieces keep sentencepiece's
word-start mark "▁" so word boundaries stay visible.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: Length buckets with fewer sentences are left out of BLEU-by-length plots (their BLEU is noise).
MIN_BUCKET_SENTENCES = 10


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "none"  # keep labels as text in SVG files (searchable, selectable)
    import matplotlib.pyplot as plt

    return plt


def _image_path(path: str | Path) -> Path:
    """``path`` as a Path; anything but .png or .svg is a user error."""
    from attnmt.errors import AttnmtError

    path = Path(path)
    if path.suffix.lower() not in (".png", ".svg"):
        raise AttnmtError(f"{path}: pictures are written as .png or .svg files")
    return path


def _save(plt: Any, figure: Any, path: Path) -> None:
    """Write the figure whole or not at all, creating the folder if needed."""
    from attnmt.errors import AttnmtError
    from attnmt.files import atomic_output

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise AttnmtError(f"{path.parent}: cannot create the folder ({error.strerror})") from None
    try:
        with atomic_output(path, binary=True) as stream:
            figure.savefig(stream, format=path.suffix[1:].lower())
    finally:
        plt.close(figure)


def check_attention_row(row: Any) -> tuple[list[str], list[str], list[list[float]]]:
    """Source tokens, target tokens and a weight matrix of matching shape, or ValueError saying what is wrong."""
    source, target, weights = row["source_tokens"], row["target_tokens"], row["weights"]
    if not all(isinstance(t, str) for t in [*source, *target]):
        raise ValueError("tokens must be strings")
    if weights and len(weights) != len(target):
        raise ValueError(f"{len(weights)} weight rows for {len(target)} target tokens")
    for row_weights in weights:
        if len(row_weights) != len(source):
            raise ValueError(f"a weight row has {len(row_weights)} values for {len(source)} source tokens")
        if not all(isinstance(w, (int, float)) and 0.0 <= w <= 1.0 for w in row_weights):
            raise ValueError("weights must be numbers between 0 and 1")
    return source, target, weights


def plot_attention(
    source_tokens: list[str], target_tokens: list[str], weights: list[list[float]], path: str | Path, title: str
) -> Path:
    """Heatmap of ``weights`` (target x source): rows are output tokens, columns input tokens."""
    plt = _pyplot()
    path = _image_path(path)
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
    _save(plt, figure, path)
    return path


def plot_bleu_by_length(series: dict[str, list[dict[str, Any]]], path: str | Path, title: str) -> Path:
    """BLEU per source-length bucket, one line per model (Bahdanau et al. 2014, Fig. 2).

    Buckets with fewer than ``MIN_BUCKET_SENTENCES`` sentences are not drawn.
    """
    plt = _pyplot()
    path = _image_path(path)
    figure, axes = plt.subplots(figsize=(6.5, 4.0))
    for name, rows in series.items():
        rows = [r for r in rows if r["sentences"] >= MIN_BUCKET_SENTENCES]
        labels = [f"{r['min_words']}-{r['max_words']}" if r["max_words"] < 1000 else f"{r['min_words']}+" for r in rows]
        axes.plot(labels, [r["bleu"] for r in rows], marker="o", label=name)
    axes.set_xlabel("source sentence length (words)")
    axes.set_ylabel("BLEU")
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    _save(plt, figure, path)
    return path


def plot_attention_file(path: str | Path, out_dir: Path, image_format: str = "png") -> list[Path]:
    """One heatmap per line of a ``translate --attention`` JSONL file (lines without weights are skipped)."""
    import json

    from attnmt.errors import AttnmtError

    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise AttnmtError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise AttnmtError(f"{path}: cannot read ({error})") from None
    if out_dir.exists() and not out_dir.is_dir():
        raise AttnmtError(f"{out_dir}: --out names a file; give a folder for the images")
    written = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            source, target, weights = check_attention_row(row)
        except (json.JSONDecodeError, KeyError, TypeError):
            raise AttnmtError(
                f"{path}:{number}: not a row of attnmt translate --attention "
                "(needs source_tokens, target_tokens, weights)"
            ) from None
        except ValueError as error:
            raise AttnmtError(f"{path}:{number}: {error}") from None
        if not weights:
            continue
        title = f"{row.get('model', path.stem)}, line {row.get('line', number)}: {row.get('scoring', '?')} attention"
        written.append(plot_attention(source, target, weights, out_dir / f"line-{number:04d}.{image_format}", title))
    return written
