"""Pictures: heatmaps and BLEU-by-length plots are real PNG/SVG files with the expected labels."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from attnmt.errors import AttnmtError
from attnmt.plotting import plot_attention, plot_attention_file, plot_bleu_by_length

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_heatmap_png_and_svg(tmp_path: Path) -> None:
    weights = [[0.9, 0.1, 0.0], [0.2, 0.7, 0.1]]
    png = plot_attention(["▁red", "▁dog", "</s>"], ["▁rot", "</s>"], weights, tmp_path / "a.png", "demo: dot")
    svg = plot_attention(["▁red", "▁dog", "</s>"], ["▁rot", "</s>"], weights, tmp_path / "a.svg", "demo: dot")
    assert png.read_bytes().startswith(PNG_MAGIC) and png.stat().st_size > 5000
    text = svg.read_text(encoding="utf-8")
    for label in ("▁red", "▁dog", "▁rot", "demo: dot", "attention weight"):
        assert label in text
    with pytest.raises(AttnmtError, match=r"\.png or \.svg"):
        plot_attention(["a"], ["b"], [[1.0]], tmp_path / "a.jpg", "x")


def test_bleu_by_length_plot(tmp_path: Path) -> None:
    rows = [
        {"min_words": 1, "max_words": 10, "sentences": 50, "bleu": 30.0},
        {"min_words": 11, "max_words": 1000, "sentences": 50, "bleu": 20.0},
        {"min_words": 1001, "max_words": 2000, "sentences": 2, "bleu": 99.0},
    ]
    svg = plot_bleu_by_length(
        {"attention": rows, "none": [{**r, "bleu": r["bleu"] / 2} for r in rows]}, tmp_path / "b.svg", "BLEU by length"
    )
    text = svg.read_text(encoding="utf-8")
    assert "attention" in text and "none" in text and "11+" in text
    assert "1001+" not in text  # two sentences are no basis for a BLEU score


def test_plot_command_and_file(tiny_model_dir: Path, tmp_path: Path) -> None:
    attention = tmp_path / "attention.jsonl"
    run = [sys.executable, "-m", "attnmt"]
    translated = subprocess.run(
        [*run, "translate", "--model", str(tiny_model_dir), "--attention", str(attention)],
        input="red dog\n\na cat\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert translated.returncode == 0, translated.stderr
    result = subprocess.run(
        [*run, "plot", str(attention), "--out", str(tmp_path / "maps"), "--format", "svg"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    files = sorted((tmp_path / "maps").iterdir())
    assert [f.name for f in files] == ["line-0001.svg", "line-0003.svg"]  # the empty line has no weights
    assert "▁red" in files[0].read_text(encoding="utf-8")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"weights": []}\nnot json\n', encoding="utf-8")
    with pytest.raises(AttnmtError, match=r"bad\.jsonl:1: not a row"):
        plot_attention_file(bad, tmp_path / "x")


def test_explain_and_evaluate_plots_from_the_command_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    run = [sys.executable, "-m", "attnmt"]
    heatmap = tmp_path / "explain.svg"
    result = subprocess.run(
        [*run, "explain", "--model", str(tiny_model_dir), "red dog", "--format", "json", "--plot", str(heatmap)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["scoring"] == "general"
    assert "▁red" in heatmap.read_text(encoding="utf-8")
    data = tiny_model_dir.parent
    figure = tmp_path / "by_length.png"
    result = subprocess.run(
        [
            *run,
            "evaluate",
            "--model",
            str(tiny_model_dir),
            "--model",
            str(tiny_model_dir),
            "--separately",
            "--src",
            str(data / "test.src"),
            "--ref",
            str(data / "test.tgt"),
            "--beam",
            "2",
            "--by-length",
            "--plot",
            str(figure),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 2 and all("by_length" in r and "model" in r for r in rows)
    assert figure.read_bytes().startswith(PNG_MAGIC)


def test_explain_toy_from_the_command_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "attnmt", "explain", "--toy", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    toy = json.loads(result.stdout)
    assert toy["translation"] == "vamos" and toy["steps"][0]["weights"]
