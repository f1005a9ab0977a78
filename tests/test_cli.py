"""The attnmt command end to end on tiny data, and one-line errors for user mistakes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import tiny_config, tiny_translate, write_tiny_corpus


def attnmt(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "attnmt", *args], input=stdin, capture_output=True, text=True, timeout=600
    )


def assert_user_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert fragment in result.stderr, result.stderr


@pytest.mark.parametrize("command", ["quickstart", "train", "translate", "evaluate", "explain", "plot"])
def test_every_subcommand_has_help(command: str) -> None:
    result = attnmt(command, "--help")
    assert result.returncode == 0 and "usage: attnmt" in result.stdout


def test_translate_keeps_line_count_order_and_empty_lines(tiny_model_dir: Path, tmp_path: Path) -> None:
    result = attnmt("translate", "--model", str(tiny_model_dir), "--beam", "2", stdin="red dog\n\nthe cat\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n") == [tiny_translate("red dog"), "", tiny_translate("the cat"), ""]
    attention = tmp_path / "attention.jsonl"
    output = tmp_path / "out.txt"
    (tmp_path / "in.txt").write_text("a dog\nsmall cat\n", encoding="utf-8")
    result = attnmt(
        "translate",
        "--model",
        str(tiny_model_dir),
        "--input",
        str(tmp_path / "in.txt"),
        "--output",
        str(output),
        "--attention",
        str(attention),
    )
    assert result.returncode == 0, result.stderr
    expected = [tiny_translate("a dog"), tiny_translate("small cat")]
    assert output.read_text().splitlines() == expected
    rows = [json.loads(line) for line in attention.read_text().splitlines()]
    assert [r["translation"] for r in rows] == expected
    assert rows[0]["scoring"] == "general" and len(rows[0]["weights"]) == len(rows[0]["target_tokens"])


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_translate_quantize_choices(tiny_model_dir: Path, quantize: str) -> None:
    result = attnmt("translate", "--model", str(tiny_model_dir), "--quantize", quantize, stdin="red dog\n")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1


def test_translate_matmul_choices_write_the_same_lines(tiny_model_dir: Path) -> None:
    lines = "red dog\n\nthe big cat sits on a small bird\nblue bird\n"
    options = ["translate", "--model", str(tiny_model_dir), "--beam", "2", "--workers", "2"]
    outputs = [attnmt(*options, "--matmul", matmul, stdin=lines) for matmul in ("torch", "onednn", "auto")]
    assert all(result.returncode == 0 for result in outputs), outputs[-1].stderr
    assert outputs[0].stdout == outputs[1].stdout == outputs[2].stdout and len(outputs[0].stdout.split("\n")) == 5
    assert_user_error(attnmt(*options, "--matmul", "mkl", stdin=lines), "--matmul")


@pytest.mark.parametrize("workers", [["--workers", "2"], ["--workers", "auto", "--threads", "2"], []])
def test_translate_with_workers_writes_the_same_lines(tiny_model_dir: Path, workers: list[str]) -> None:
    lines = "red dog\n\nthe big cat sits on a small bird\nblue bird\na green dog jumps\n" * 3
    options = ["translate", "--model", str(tiny_model_dir), "--beam", "2", "--batch-size", "2"]
    one, many = attnmt(*options, "--workers", "1", stdin=lines), attnmt(*options, *workers, stdin=lines)
    assert one.returncode == many.returncode == 0, many.stderr
    assert many.stdout == one.stdout and len(many.stdout.split("\n")) == 16


@pytest.mark.parametrize(
    "command,value",
    [*[("translate", value) for value in ("0", "-1", "many", "2.5")], ("serve", "0"), ("serve", "x")],
)
def test_bad_workers_are_one_line_errors(tiny_model_dir: Path, command: str, value: str) -> None:
    result = attnmt(command, "--model", str(tiny_model_dir), "--workers", value, stdin="red dog\n")
    assert_user_error(result, "--workers")


def test_translate_nbest(tiny_model_dir: Path) -> None:
    result = attnmt("translate", "--model", str(tiny_model_dir), "--beam", "3", "--nbest", "2", stdin="red dog\n")
    assert result.returncode == 0, result.stderr
    rows = result.stdout.splitlines()
    assert len(rows) == 2 and rows[0].startswith(f"0 ||| {tiny_translate('red dog')} ||| ")


def test_evaluate_prints_the_contract_keys(tiny_model_dir: Path) -> None:
    test_dir = tiny_model_dir.parent
    result = attnmt(
        "evaluate",
        "--model",
        str(tiny_model_dir),
        "--src",
        str(test_dir / "test.src"),
        "--ref",
        str(test_dir / "test.tgt"),
        "--beam",
        "2",
        "--by-length",
        "--device",
        "cpu",
        "--threads",
        "2",
    )
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)
    assert {"bleu", "chrf", "signature", "sentences", "seconds", "sentences_per_s", "by_length"} <= scores.keys()
    assert scores["sentences"] == 40 and scores["bleu"] > 50
    assert scores["workers"] == (2 if sys.platform.startswith("linux") else 1)  # --workers auto: one per thread
    assert "nrefs:1" in scores["signature"]


def test_evaluate_several_length_penalties(tiny_model_dir: Path) -> None:
    """``--length-penalty A B C``: one JSON line per alpha, in order, each as a run with that alpha alone."""
    test_dir = tiny_model_dir.parent
    common = ["evaluate", "--model", str(tiny_model_dir), "--src", str(test_dir / "test.src")]
    common += ["--ref", str(test_dir / "test.tgt"), "--beam", "3", "--device", "cpu", "--workers", "1"]
    several = attnmt(*common, "--length-penalty", "0", "1", "3")
    assert several.returncode == 0, several.stderr
    rows = [json.loads(line) for line in several.stdout.splitlines()]
    assert [row["length_penalty"] for row in rows] == [0.0, 1.0, 3.0]
    alone = attnmt(*common, "--length-penalty", "3")
    assert alone.returncode == 0, alone.stderr
    assert json.loads(alone.stdout)["bleu"] == rows[2]["bleu"]


def test_train_from_the_command_line_and_resume(tmp_path: Path) -> None:
    paths = write_tiny_corpus(tmp_path)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(paths, max_steps=10)), encoding="utf-8")
    out = tmp_path / "run"
    first = attnmt("train", "--config", str(config), "--out", str(out), "--set", "model.attention=dot", "--no-progress")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["steps"] == 10
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["attention"] == "dot"
    second = attnmt(
        "train",
        "--config",
        str(config),
        "--out",
        str(out),
        "--set",
        "model.attention=dot",
        "--set",
        "training.max_steps=20",
        "--no-progress",
    )
    assert second.returncode == 0, second.stderr
    assert "resuming" in second.stderr and json.loads(second.stdout)["steps"] == 20


@pytest.mark.parametrize(
    "case,fragment",
    [
        ("missing config", "config file not found"),
        ("unknown key", "unknown key model.atention"),
        ("bad value", "model.attention: 'softmax' is not allowed"),
        ("bad set", "expected section.key=value"),
        ("mismatched corpus", "parallel files must be line-aligned"),
        ("missing model", "model directory not found"),
        ("nbest over beam", "--nbest 3 needs --beam of at least 3"),
        ("missing input", "nope.txt: file not found"),
        ("bad beam", "argument --beam: expected a positive integer"),
        ("bad length penalty", "argument --length-penalty: expected a length penalty from 0 to 10"),
        ("several alphas, one output", "--output takes the translations of one search: give one --length-penalty"),
    ],
)
def test_user_mistakes_give_one_line_and_exit_2(tmp_path: Path, tiny_model_dir: Path, case: str, fragment: str) -> None:
    paths = write_tiny_corpus(tmp_path)
    config = tmp_path / "c.yaml"
    raw = tiny_config(paths)
    if case == "unknown key":
        raw["model"]["atention"] = "dot"
    if case == "bad value":
        raw["model"]["attention"] = "softmax"
    if case == "mismatched corpus":
        Path(paths["train_tgt"]).write_text("only one line\n", encoding="utf-8")
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    model = str(tiny_model_dir)
    args = {
        "missing config": ["train", "--config", str(tmp_path / "none.yaml")],
        "unknown key": ["train", "--config", str(config), "--out", str(tmp_path / "o")],
        "bad value": ["train", "--config", str(config), "--out", str(tmp_path / "o")],
        "bad set": ["train", "--config", str(config), "--set", "attention"],
        "mismatched corpus": ["train", "--config", str(config), "--out", str(tmp_path / "o")],
        "missing model": ["translate", "--model", str(tmp_path / "nothing")],
        "nbest over beam": ["translate", "--model", model, "--beam", "2", "--nbest", "3"],
        "missing input": ["translate", "--model", model, "--input", str(tmp_path / "nope.txt")],
        "bad beam": ["translate", "--model", model, "--beam", "0"],
        "bad length penalty": ["evaluate", "--model", model, "--src", "a", "--ref", "b", "--length-penalty", "-1"],
        "several alphas, one output": [
            *["evaluate", "--model", model, "--src", str(tiny_model_dir.parent / "test.src")],
            *["--ref", str(tiny_model_dir.parent / "test.tgt"), "--length-penalty", "0.6", "1"],
            *["--output", str(tmp_path / "out.txt")],
        ],
    }[case]
    assert_user_error(attnmt(*args, stdin=""), fragment)


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["translate", "--model", "{tmp}/nothing"], "nothing: model directory not found"),
        (["translate", "--model", "{model}", "--input", "{tmp}/nope.txt"], "nope.txt: file not found"),
        (["translate", "--model", "{model}", "--input", "{tmp}"], ": not a file"),
        (["evaluate", "--model", "{model}", "--src", "{tmp}/a.en", "--ref", "{tmp}/b.de"], "a.en: file not found"),
        (["evaluate", "--model", "{model}", "--model", "{tmp}/other", "--src", "a", "--ref", "b"], "other: model"),
        (["explain", "--model", "{tmp}/nothing", "a sentence"], "nothing: model directory not found"),
        (["serve", "--model", "{tmp}/nothing"], "nothing: model directory not found"),
    ],
)
def test_missing_paths_are_named_before_torch_is_imported(
    tmp_path: Path, tiny_model_dir: Path, args: list[str], fragment: str
) -> None:
    """A mistyped model directory or input file is reported at once (torch's import alone takes 1–3 s)."""
    argv = [a.format(tmp=tmp_path, model=tiny_model_dir) for a in args]
    code = "import sys; from attnmt.cli import main; status = main(sys.argv[1:]); print(status, 'torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["2", "False"], result.stdout + result.stderr
    assert fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_ctrl_c_saves_and_the_same_command_resumes(tmp_path: Path) -> None:
    import signal
    import time

    paths = write_tiny_corpus(tmp_path)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(paths, max_steps=100000, valid_every=100000)), encoding="utf-8")
    out = tmp_path / "run"
    args = [sys.executable, "-m", "attnmt", "train", "--config", str(config), "--out", str(out), "--no-progress"]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out / "train_log.jsonl"
    deadline = time.monotonic() + 120
    while not (log.is_file() and log.read_text().count("\n") >= 2) and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "rerun the same command to resume" in stderr
    import torch

    step = torch.load(out / "last.pt", weights_only=True)["train_state"]["step"]
    assert step >= 40
    resumed = attnmt(
        "train", "--config", str(config), "--out", str(out), "--set", f"training.max_steps={step + 5}", "--no-progress"
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {out} at step {step}" in resumed.stderr
    assert json.loads(resumed.stdout)["steps"] == step + 5


def test_stdin_lines_split_at_newlines_only(tiny_model_dir: Path) -> None:
    """U+2028, U+0085, form feed, \\x1c and a lone CR stay inside their line: line N answers line N."""
    stdin = "red dog\u2028blue cat\na\x0cdog\nthe\x1ccat\nold\rbird\n\u0085\nred cat\r\n"
    result = attnmt("translate", "--model", str(tiny_model_dir), "--beam", "1", stdin=stdin)
    assert result.returncode == 0, result.stderr
    outputs = result.stdout.split("\n")[:-1]
    assert len(outputs) == 6 and outputs[5] == tiny_translate("red cat")


def test_invalid_utf8_on_stdin(tiny_model_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "attnmt", "translate", "--model", str(tiny_model_dir)],
        input=b"red dog\n\xff\xfe\n",
        capture_output=True,
        timeout=300,
    )
    assert_user_error(
        subprocess.CompletedProcess(result.args, result.returncode, "", result.stderr.decode()),
        "stdin:2: not valid UTF-8",
    )


def test_a_full_stdout_is_one_line(tiny_model_dir: Path) -> None:
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-m", "attnmt", "translate", "--model", str(tiny_model_dir)],
            input="red dog\n",
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
        )
    assert_user_error(result, "stdout: cannot write (No space left on device)")


def test_failed_output_keeps_the_previous_file(tiny_model_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.de"
    output.write_text("previous\n")
    result = attnmt("translate", "--model", str(tiny_model_dir), "--output", str(output), "--beam", "0", stdin="x\n")
    assert result.returncode == 2 and output.read_text() == "previous\n"


@pytest.mark.parametrize(
    "args,stdin,fragment",
    [
        (["--beam", "10000"], "red dog\n", "--beam: must be an integer from 1 to 64, got 10000"),
        ([], "red dog\n" + "a" * 1_000_000 + "\n", "stdin:2: 1000000 characters; at most 2000 per text"),
        (["--batch-size", "5000"], "red dog\n", "--batch-size: must be an integer from 1 to 1024"),
    ],
)
def test_unbounded_work_is_refused(tiny_model_dir: Path, args: list[str], stdin: str, fragment: str) -> None:
    assert_user_error(attnmt("translate", "--model", str(tiny_model_dir), *args, stdin=stdin), fragment)


@pytest.mark.parametrize(
    "setting,fragment",
    [
        ("training.decay_factor=-1", "training.decay_factor: must be in (0, 1), got -1"),
        ("training.decay_factor=2", "training.decay_factor: must be in (0, 1), got 2"),
        ("decoding.max_length_ratio=-1", "decoding.max_length_ratio: must be in (0, 10]"),
        ("training.max_steps=-1", "training.max_steps: must be in [0, "),
        ("model.init_range=-0.1", "model.init_range: must be in (0, 10]"),
        ("training.seed=-3", "training.seed: must be in [0, 4294967295]"),
        ("training.threads=-2", "training.threads: must be in [0, 1024]"),
        ("training.lr=.nan", "training.lr: expected a finite number"),
        ("decoding.max_length_extra=10000000", "decoding.max_length_extra: must be in [0, 500]"),
    ],
)
def test_out_of_range_settings_are_refused_before_any_work(tmp_path: Path, setting: str, fragment: str) -> None:
    paths = write_tiny_corpus(tmp_path)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config(paths)), encoding="utf-8")
    out = tmp_path / "run"
    assert_user_error(attnmt("train", "--config", str(config), "--out", str(out), "--set", setting), fragment)
    assert not out.exists()


def test_argparse_errors_are_one_line_with_a_hint() -> None:
    assert_user_error(
        attnmt("translate"), "the following arguments are required: --model (see 'attnmt translate --help')"
    )
    assert_user_error(attnmt("explain", "--toy", "--seed", str(2**40)), "argument --seed: expected an integer from 0")
    assert_user_error(attnmt("quickstart", "--minutes", "nan"), "argument --minutes")
    assert_user_error(attnmt("frobnicate"), "invalid choice: 'frobnicate'")


def test_out_naming_a_file(tmp_path: Path, tiny_model_dir: Path) -> None:
    paths = write_tiny_corpus(tmp_path)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config(paths)), encoding="utf-8")
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert_user_error(attnmt("train", "--config", str(config), "--out", str(a_file)), "--out names a file")
    attention = tmp_path / "a.jsonl"
    assert (
        attnmt("translate", "--model", str(tiny_model_dir), "--attention", str(attention), stdin="a dog\n").returncode
        == 0
    )
    assert_user_error(attnmt("plot", str(attention), "--out", str(a_file)), "--out names a file")


@pytest.mark.parametrize(
    "row,fragment",
    [
        ({"source_tokens": ["a", "b"], "target_tokens": ["x"], "weights": [[0.5, 0.5], [1.0, 0.0]]}, "2 weight rows"),
        (
            {"source_tokens": ["a", "b"], "target_tokens": ["x"], "weights": [[1.0]]},
            "a weight row has 1 values for 2 source",
        ),
        (
            {"source_tokens": ["a"], "target_tokens": ["x"], "weights": [["?"]]},
            "weights must be numbers between 0 and 1",
        ),
        ({"source_tokens": ["a"]}, "not a row of attnmt translate --attention"),
    ],
)
def test_plot_refuses_rows_whose_shapes_do_not_match(tmp_path: Path, row: dict, fragment: str) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    assert_user_error(attnmt("plot", str(path), "--out", str(tmp_path / "maps")), f"a.jsonl:1: {fragment}")


def _read_only_folder() -> Path:
    """A folder nobody may write in, even root (sysfs); the test is skipped where sysfs allows it."""
    folder = Path("/sys")
    probe = folder / "attnmt-probe"
    try:
        probe.mkdir()
    except OSError:
        return folder
    probe.rmdir()
    pytest.skip("/sys is writable here")


def test_read_only_output_locations(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = _read_only_folder()
    paths = write_tiny_corpus(tmp_path)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config(paths)), encoding="utf-8")
    out = folder / "attnmt-run"
    assert_user_error(attnmt("train", "--config", str(config), "--out", str(out)), "cannot create the run directory")
    output = folder / "out.de"
    result = attnmt("translate", "--model", str(tiny_model_dir), "--output", str(output), stdin="a dog\n")
    assert_user_error(result, f"{output}: cannot write")


def test_translate_and_evaluate_an_ensemble(tiny_model_dir: Path) -> None:
    model = str(tiny_model_dir)
    result = attnmt("translate", "--model", model, "--model", model, "--beam", "2", stdin="red dog\n\nthe cat\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n") == [tiny_translate("red dog"), "", tiny_translate("the cat"), ""]
    data = tiny_model_dir.parent
    scored = attnmt(
        "evaluate", "--model", model, "--model", model, "--src", str(data / "test.src"), "--ref", str(data / "test.tgt")
    )
    assert scored.returncode == 0, scored.stderr
    row = json.loads(scored.stdout)  # one ensemble, one JSON object
    assert row["model"] == [model, model] and row["bleu"] > 50


@pytest.mark.parametrize("users", [None, "1024"])
def test_the_command_bounds_onednn_primitive_caches_unless_the_user_did(
    monkeypatch: pytest.MonkeyPatch, users: str | None
) -> None:
    from attnmt.cli import PRIMITIVE_CACHES, main

    assert {name for name, _ in PRIMITIVE_CACHES} == {"ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"}
    for name, _ in PRIMITIVE_CACHES:
        if users is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, users)
    with pytest.raises(SystemExit):
        main(["--version"])
    for name, default in PRIMITIVE_CACHES:
        assert os.environ[name] == (users or default)


def test_only_the_command_process_freezes_its_heap_at_the_end(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``main()`` as the process spares shutdown its last collection; ``main(argv)`` from Python leaves gc alone."""
    import gc

    from attnmt.cli import main

    missing = str(tmp_path / "missing.jsonl")
    frozen: list[bool] = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(True))
    assert main(["plot", missing, "--out", str(tmp_path / "a.png")]) == 2
    assert frozen == []
    monkeypatch.setattr(sys, "argv", ["attnmt", "plot", missing, "--out", str(tmp_path / "a.png")])
    assert main() == 2
    assert frozen == [True]
