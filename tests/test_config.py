"""Config validation: wrong keys and values are rejected by name before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from attnmt.config import apply_overrides, config_from_dict, load_config
from attnmt.errors import ConfigError

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_configs_are_valid(path: Path) -> None:
    load_config(path)


def test_required_example_configs_exist() -> None:
    assert {"quickstart", "luong_general", "bahdanau", "no_attention"} <= {p.stem for p in CONFIGS}


@pytest.mark.parametrize(
    "raw,message",
    [
        ({"model": {"atention": "dot"}}, r"unknown key model\.atention; valid keys in model: rnn, decoder, attention"),
        ({"model": {"attention": "softmax"}}, r"model\.attention: 'softmax' is not allowed; choose one of dot, cosine"),
        ({"model": {"rnn": "transformer"}}, r"model\.rnn: .* choose one of lstm, gru"),
        ({"model": {"decoder": "x"}}, r"model\.decoder: .* luong, bahdanau"),
        ({"model": {"layers": "two"}}, r"model\.layers: expected an integer"),
        ({"model": {"layers": 9}}, r"model\.layers: must be 1 to 4"),
        ({"model": {"input_feeding": "yes"}}, r"model\.input_feeding: expected true or false"),
        ({"model": {"input_feeding": True, "decoder": "bahdanau"}}, r"model\.input_feeding"),
        ({"model": {"bidirectional": True, "hidden_size": 33}}, r"model\.hidden_size: .* even"),
        ({"training": {"lr": -1}}, r"training\.lr: must be positive"),
        ({"modle": {}}, r"unknown section 'modle'"),
        ({"data": {"vocab_size": 100}}, r"data\.vocab_size: must be at least 300"),
    ],
)
def test_bad_keys_and_values_are_named(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)


def test_overrides_are_parsed_as_yaml_and_validated() -> None:
    raw = apply_overrides(
        {}, ["model.attention=dot", "model.layers=2", "training.lr=0.001", "model.input_feeding=true"]
    )
    config = config_from_dict(raw)
    assert (config.model.attention, config.model.layers, config.training.lr) == ("dot", 2, 0.001)
    assert config.model.input_feeding is True
    with pytest.raises(ConfigError, match="expected section.key=value"):
        apply_overrides({}, ["attention=dot"])
    with pytest.raises(ConfigError, match="unknown key model.nope"):
        config_from_dict(apply_overrides({}, ["model.nope=1"]))


def test_yaml_errors_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  attention: dot\n bad indent: [\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: invalid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
