"""Config validation: wrong keys and values are rejected by name before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnmt.config import ModelConfig, apply_overrides, config_from_dict, load_config
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
        ({"training": {"decay_start": 0.7}}, r"training\.decay_start: only the cosine .*is plateau"),
        ({"modle": {}}, r"unknown section 'modle'"),
        ({"data": {"vocab_size": 100}}, r"data\.vocab_size: must be at least 300"),
        ({"training": {"matmul": "mkl"}}, r"training\.matmul: 'mkl' is not allowed; choose one of auto, torch, onednn"),
        ({"decoding": {"matmul": "blas"}}, r"decoding\.matmul: 'blas' is not allowed; choose one of auto, torch"),
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


def test_a_key_given_twice_is_refused_with_its_line(tmp_path: Path) -> None:
    """PyYAML keeps the last of two equal keys silently; a config must not."""
    path = tmp_path / "twice.yaml"
    path.write_text("model:\n  dropout: 0.3\n  layers: 1\n  dropout: 0.5\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"twice\.yaml:4: invalid YAML \(key 'dropout' is given twice\)"):
        load_config(path)


VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
KNOWN_KEYS = {
    section: list(ModelConfig.__dataclass_fields__) if section == "model" else keys
    for section, keys in {
        "data": ["vocab_size", "max_length", "tokenizer", "joint_vocab", "train_src"],
        "model": [],
        "training": ["lr", "decay_factor", "seed", "threads", "batch_tokens", "scheduler", "max_minutes"],
        "decoding": ["beam", "length_penalty", "max_length_ratio", "max_length_extra", "batch_size"],
    }.items()
}
SECTION = st.sampled_from([*KNOWN_KEYS, "other"])


@st.composite
def raw_configs(draw: st.DrawFn) -> object:
    if draw(st.booleans()):
        return draw(VALUES)
    raw: dict = {}
    for _ in range(draw(st.integers(0, 4))):
        section = draw(SECTION)
        keys = KNOWN_KEYS.get(section, []) + ["nope"]
        raw.setdefault(section, {})[draw(st.sampled_from(keys))] = draw(VALUES)
    return raw


@settings(max_examples=400, deadline=None)
@given(raw=raw_configs())
def test_any_config_is_accepted_or_one_config_error(raw: object) -> None:
    """Random keys and values: a valid Config or a ConfigError naming the problem, never another exception."""
    try:
        config = config_from_dict(raw)
    except ConfigError as error:
        assert str(error)
        return
    assert config.data.vocab_size >= 300 and config.decoding.beam >= 1


@settings(max_examples=200, deadline=None)
@given(items=st.lists(st.text(max_size=30), max_size=3))
def test_any_override_is_accepted_or_one_config_error(items: list[str]) -> None:
    try:
        config_from_dict(apply_overrides({}, items))
    except ConfigError:
        pass
