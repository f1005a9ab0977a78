"""The structure the architecture issue asks for stays true: imports, registries, sizes, names."""

from __future__ import annotations

import ast
import importlib
import re
import typing
from pathlib import Path

import pytest

from attnmt.attention import ATTENTION
from attnmt.config import ModelConfig
from attnmt.decoder import DECODERS
from attnmt.encoder import RNN

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "src" / "attnmt"


def _imported_modules(path: Path) -> set[str]:
    """attnmt modules a file imports (at any depth: lazy imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("attnmt"):
            found.add(node.module.removeprefix("attnmt.").removeprefix("attnmt"))
            if node.module == "attnmt":
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.removeprefix("attnmt.") for a in node.names if a.name.startswith("attnmt."))
    return found


@pytest.mark.parametrize(
    "module,forbidden",
    [
        ("vocab", {"model", "decoder", "train", "cli", "tokenizer", "data"}),
        ("data", {"model", "decoder", "train", "cli"}),
        ("tokenizer", {"model", "decoder", "train", "cli"}),
        ("config", {"model", "decoder", "train", "cli"}),
        ("model", {"search", "train", "cli", "translator"}),
        ("search", {"train", "cli", "translator", "server"}),
        ("selection", {"model", "decoder", "search", "train", "cli", "translator", "server"}),
        ("translator", {"train", "cli", "server"}),
    ],
)
def test_layering(module: str, forbidden: set[str]) -> None:
    assert not _imported_modules(PACKAGE / f"{module}.py") & forbidden


def test_modules_and_functions_stay_small() -> None:
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        if len(source.splitlines()) > 400:
            too_long.append(f"{path.name}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                too_long.append(f"{path.name}:{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not too_long


@pytest.mark.parametrize(
    "key,registry",
    [("attention", [*ATTENTION, "none"]), ("decoder", list(DECODERS)), ("rnn", list(RNN))],
)
def test_config_choices_are_the_registries(key: str, registry: list[str]) -> None:
    choices = typing.get_args(typing.get_type_hints(ModelConfig)[key])
    assert sorted(choices) == sorted(registry)


def test_readme_lecture_table_names_real_code() -> None:
    """Every `module.py` `Name.attr` pair in README's "where each step lives" table exists."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("## Where each step of the lecture lives", 1)[1].split("\n## ", 1)[0]
    checked = 0
    for row in table.splitlines()[2:]:
        if not row.startswith("|"):
            continue
        cell = re.sub(r"\([^)]*\)", "", row.split("|")[2])  # "(context)" names a variable, not code
        module_name = None
        for token in re.findall(r"`([^`]+)`", cell):
            if token.endswith(".py"):
                module_name = token[:-3]
                importlib.import_module(f"attnmt.{module_name}")
                continue
            if module_name is None or not re.fullmatch(r"[A-Za-z_][\w.]*", token):
                continue
            target: object = importlib.import_module(f"attnmt.{module_name}")
            for part in token.split("."):
                target = getattr(target, part)
            checked += 1
    assert checked >= 8


def test_nothing_outside_the_repository_is_cited() -> None:
    for path in [ROOT / "README.md", *PACKAGE.rglob("*.py")]:
        assert "shared/" not in path.read_text(encoding="utf-8"), path


def test_version_is_one_value() -> None:
    import attnmt
    from attnmt.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["--version"])
    assert attnmt.__version__ == importlib.metadata.version("attnmt")


@pytest.mark.parametrize("document", ["RELIABILITY.md", "README.md", "BENCHMARKS.md"])
def test_tests_cited_in_the_docs_exist(document: str) -> None:
    """Each `test_file.py::test_name` a document cites as proof is a real test."""
    text = (ROOT / document).read_text(encoding="utf-8")
    for file_name, test_name in re.findall(r"(test_\w+\.py)::(test_\w+)", text):
        source = (ROOT / "tests" / file_name).read_text(encoding="utf-8")
        assert f"def {test_name}(" in source, f"{document} cites {file_name}::{test_name}"
