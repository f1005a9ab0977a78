"""Configuration: one YAML file with sections data, model, training, decoding.

Each section is a typed dataclass. Loading checks every key and value before any
work starts: an unknown key, a wrong type or a value outside its allowed choices
is a ``ConfigError`` naming the key and what is allowed. ``--set key.path=value``
overrides are applied and checked the same way.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from attnmt.errors import ConfigError

#: Prefix of paths inside the installed package (the bundled corpus).
BUNDLED_PREFIX = "bundled:"


@dataclass
class DataConfig:
    """Where the parallel corpus is and how it is tokenised.

    Each split is either two line-aligned files (``*_src``, ``*_tgt``, plain or
    .gz) or one tab-separated file (``*_tsv``). Paths starting with ``bundled:``
    name files shipped with attnmt (``bundled:multi30k/train.en.gz``).
    """

    train_src: str = ""
    train_tgt: str = ""
    train_tsv: str = ""
    valid_src: str = ""
    valid_tgt: str = ""
    valid_tsv: str = ""
    test_src: str = ""
    test_tgt: str = ""
    max_length: int = 100
    tokenizer: Literal["bpe", "unigram"] = "bpe"
    vocab_size: int = 8000
    joint_vocab: bool = True


@dataclass
class ModelConfig:
    """The network: embeddings, encoder, attention, decoder (see model.py)."""

    rnn: Literal["lstm", "gru"] = "lstm"
    decoder: Literal["luong", "bahdanau"] = "luong"
    attention: Literal["dot", "cosine", "general", "concat", "location", "none"] = "general"
    input_feeding: bool = False
    bidirectional: bool = True
    layers: int = 1
    embedding_size: int = 256
    hidden_size: int = 512
    dropout: float = 0.3
    init_range: float = 0.1


@dataclass
class TrainingConfig:
    """Optimisation, schedule, validation, budgets and checkpoints (see train.py)."""

    batch_tokens: int = 2000
    lr: float = 0.002
    clip_norm: float = 5.0
    label_smoothing: float = 0.1
    scheduler: Literal["plateau", "warmup_decay", "constant"] = "plateau"
    decay_factor: float = 0.5
    patience: int = 1
    warmup_steps: int = 1000
    min_lr: float = 1e-5
    valid_every: int = 500
    log_every: int = 50
    early_stopping: int = 5
    max_epochs: int = 30
    max_steps: int = 0
    max_minutes: float = 0.0
    seed: int = 1
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = 0


@dataclass
class DecodingConfig:
    """Search settings used for validation BLEU defaults and ``translate``."""

    beam: int = 5
    length_penalty: float = 0.6
    max_length_ratio: float = 1.5
    max_length_extra: int = 10
    batch_size: int = 64


@dataclass
class Config:
    """The whole configuration; ``to_dict`` gives the resolved YAML saved with a run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    decoding: DecodingConfig = field(default_factory=DecodingConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}


def _check_value(key: str, value: Any, hint: Any) -> Any:
    """Return ``value`` converted to the annotated type, or raise ConfigError naming ``key``."""
    if typing.get_origin(hint) is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(f"{key}: {value!r} is not allowed; choose one of {', '.join(map(str, choices))}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint} for {key}")


def _build_section(name: str, values: Any) -> Any:
    cls = {"data": DataConfig, "model": ModelConfig, "training": TrainingConfig, "decoding": DecodingConfig}[name]
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{name}: expected a mapping of keys, got {values!r}")
    hints = typing.get_type_hints(cls)
    allowed = [f.name for f in dataclasses.fields(cls)]
    checked = {}
    for key, value in values.items():
        if key not in hints:
            raise ConfigError(f"unknown key {name}.{key}; valid keys in {name}: {', '.join(allowed)}")
        checked[key] = _check_value(f"{name}.{key}", value, hints[key])
    return cls(**checked)


def _check_ranges(config: Config) -> None:
    """Cross-field and range checks that types alone cannot express."""
    positive = {
        "data.max_length": config.data.max_length,
        "data.vocab_size": config.data.vocab_size,
        "model.layers": config.model.layers,
        "model.embedding_size": config.model.embedding_size,
        "model.hidden_size": config.model.hidden_size,
        "training.batch_tokens": config.training.batch_tokens,
        "training.valid_every": config.training.valid_every,
        "training.log_every": config.training.log_every,
        "training.max_epochs": config.training.max_epochs,
        "decoding.beam": config.decoding.beam,
        "decoding.batch_size": config.decoding.batch_size,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key}: must be positive, got {value}")
    if not 1 <= config.model.layers <= 4:
        raise ConfigError(f"model.layers: must be 1 to 4, got {config.model.layers}")
    if not 0.0 <= config.model.dropout < 1.0:
        raise ConfigError(f"model.dropout: must be in [0, 1), got {config.model.dropout}")
    if not 0.0 <= config.training.label_smoothing < 1.0:
        raise ConfigError(f"training.label_smoothing: must be in [0, 1), got {config.training.label_smoothing}")
    if config.training.lr <= 0:
        raise ConfigError(f"training.lr: must be positive, got {config.training.lr}")
    if config.model.bidirectional and config.model.hidden_size % 2:
        raise ConfigError(
            f"model.hidden_size: a bidirectional encoder splits it in two halves, so it must be even, "
            f"got {config.model.hidden_size}"
        )
    if config.model.input_feeding and (config.model.decoder != "luong" or config.model.attention == "none"):
        raise ConfigError("model.input_feeding: only the luong decoder with an attention feeds h~ back")
    if config.data.vocab_size < 300:
        raise ConfigError(
            f"data.vocab_size: must be at least 300 (256 byte pieces make any text representable), "
            f"got {config.data.vocab_size}"
        )


def config_from_dict(raw: Any, origin: str = "config") -> Config:
    """Build and validate a Config from parsed YAML (``origin`` names it in errors)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: expected sections {', '.join(_SECTIONS)}, got {type(raw).__name__}")
    for name in raw:
        if name not in _SECTIONS:
            raise ConfigError(f"{origin}: unknown section {name!r}; valid sections: {', '.join(_SECTIONS)}")
    config = Config(**{name: _build_section(name, raw.get(name)) for name in _SECTIONS})
    _check_ranges(config)
    return config


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings (values parsed as YAML) to a raw config dict."""
    for item in overrides:
        path, sep, text = item.partition("=")
        parts = path.strip().split(".")
        if not sep or len(parts) != 2 or not all(parts):
            raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. model.attention=dot")
        section, key = parts
        if section not in _SECTIONS:
            raise ConfigError(f"--set {item!r}: unknown section {section!r}; valid sections: {', '.join(_SECTIONS)}")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        raw.setdefault(section, {})
        if raw[section] is None:
            raw[section] = {}
        raw[section][key] = value
    return raw


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file; a missing file or bad YAML is a ConfigError naming it (and the line)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read config file ({error})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: invalid YAML ({getattr(error, 'problem', error)})") from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read, override and validate a config file."""
    raw = read_yaml(path)
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected sections {', '.join(_SECTIONS)}")
    return config_from_dict(apply_overrides(raw or {}, overrides or []), origin=str(path))


def save_config(config: Config, path: str | Path) -> None:
    """Write the fully resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
