"""Configuration: one YAML file with sections data, model, training, decoding.

Each section is a typed dataclass. Loading checks every key and value before any
work starts: an unknown key, a wrong type or a value outside its allowed choices
is a ``ConfigError`` naming the key and what is allowed. ``--set key.path=value``
overrides are applied and checked the same way.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from attnmt import limits
from attnmt.errors import ConfigError
from attnmt.files import write_text

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
    target_vocab: Literal["used", "all"] = "used"


@dataclass
class ModelConfig:
    """The network: embeddings, encoder, attention, decoder (see model.py)."""

    rnn: Literal["lstm", "gru"] = "lstm"
    decoder: Literal["luong", "bahdanau"] = "luong"
    attention: Literal["dot", "cosine", "general", "concat", "location", "none"] = "general"
    attention_span: Literal["global", "local-m", "local-p"] = "global"
    local_window: int = 10
    input_feeding: bool = False
    bidirectional: bool = True
    layers: int = 1
    embedding_size: int = 256
    hidden_size: int = 512
    dropout: float = 0.3
    init_range: float = 0.1
    tie_embeddings: bool = False


@dataclass
class TrainingConfig:
    """Optimisation, schedule, validation, budgets and checkpoints (see train.py)."""

    batch_tokens: int = 2000
    lr: float = 0.002
    clip_norm: float = 5.0
    label_smoothing: float = 0.1
    scheduler: Literal["plateau", "warmup_decay", "cosine", "constant"] = "plateau"
    decay_factor: float = 0.5
    patience: int = 1
    warmup_steps: int = 1000
    min_lr: float = 1e-5
    decay_start: float = 0.0
    valid_every: int = 500
    log_every: int = 50
    early_stopping: int = 5
    max_epochs: int = 30
    max_steps: int = 0
    max_minutes: float = 0.0
    save_every: int = 200
    keep_checkpoints: int = 0
    accumulate_steps: int = 1
    seed: int = 1
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    matmul: Literal["auto", "torch", "onednn"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = 0


@dataclass
class DecodingConfig:
    """Search settings used for validation BLEU defaults and ``translate``."""

    beam: int = 5
    #: GNMT alpha. 1.0, not GNMT's 0.6: on val2016, beam 5, as good or better on six models, up to +0.37 BLEU
    length_penalty: float = 1.0
    max_length_ratio: float = 1.5
    max_length_extra: int = 10
    batch_size: int = 64
    matmul: Literal["auto", "torch", "onednn"] = "auto"


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
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
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


@dataclass(frozen=True)
class Range:
    """Allowed values of a number: ``low`` to ``high``, each end included unless marked open."""

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False
    says: str = ""  # the rule in words, when brackets would say it less clearly

    def holds(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        if self.says:
            return self.says
        low, high = (f"{x:g}" if isinstance(x, float) else str(x) for x in (self.low, self.high))
        return f"must be in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"


#: Every numeric key and its allowed values (limits on decoding come from ``limits.py``).
RANGES: dict[str, Range] = {
    "data.max_length": Range(1, 10_000),
    "data.vocab_size": Range(
        300, 1_000_000, says="must be at least 300 (256 byte pieces make any text representable) and at most 1000000"
    ),
    "model.layers": Range(1, 4, says="must be 1 to 4"),
    "model.embedding_size": Range(1, 8192),
    "model.hidden_size": Range(1, 8192),
    "model.local_window": Range(1, 1000),
    "model.dropout": Range(0.0, 1.0, high_open=True),
    "model.init_range": Range(0.0, 10.0, low_open=True),
    "training.batch_tokens": Range(1, 10_000_000),
    "training.lr": Range(0.0, 10.0, low_open=True, says="must be positive and at most 10"),
    "training.clip_norm": Range(0.0, 1e6),
    "training.label_smoothing": Range(0.0, 1.0, high_open=True),
    "training.decay_factor": Range(0.0, 1.0, low_open=True, high_open=True),
    "training.patience": Range(0, 1_000_000),
    "training.warmup_steps": Range(1, 1_000_000_000),
    "training.min_lr": Range(0.0, 10.0),
    "training.decay_start": Range(0.0, 1.0, high_open=True),
    "training.valid_every": Range(1, 1_000_000_000),
    "training.log_every": Range(1, 1_000_000_000),
    "training.save_every": Range(0, 1_000_000_000),
    "training.keep_checkpoints": Range(0, 1000),
    "training.accumulate_steps": Range(1, 1024),
    "training.early_stopping": Range(0, 1_000_000),
    "training.max_epochs": Range(1, 1_000_000),
    "training.max_steps": Range(0, 10**12),
    "training.max_minutes": Range(0.0, 1e7),
    "training.seed": Range(0, 2**32 - 1),
    "training.threads": Range(0, 1024),
    "decoding.beam": Range(1, limits.MAX_BEAM),
    "decoding.length_penalty": Range(0.0, 10.0),
    "decoding.max_length_ratio": Range(0.0, limits.MAX_LENGTH_RATIO, low_open=True),
    "decoding.max_length_extra": Range(0, limits.MAX_LENGTH_EXTRA),
    "decoding.batch_size": Range(1, limits.MAX_BATCH_SIZE),
}


def _check_ranges(config: Config) -> None:
    """Range checks from ``RANGES``, then the cross-field checks that types alone cannot express."""
    for key, allowed in RANGES.items():
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        if not allowed.holds(value):
            raise ConfigError(f"{key}: {allowed}, got {value}")
    if config.model.bidirectional and config.model.hidden_size % 2:
        raise ConfigError(
            f"model.hidden_size: a bidirectional encoder splits it in two halves, so it must be even, "
            f"got {config.model.hidden_size}"
        )
    if config.model.input_feeding and (config.model.decoder != "luong" or config.model.attention == "none"):
        raise ConfigError("model.input_feeding: only the luong decoder with an attention feeds h~ back")
    if config.training.decay_start > 0 and config.training.scheduler != "cosine":
        raise ConfigError(
            f"training.decay_start: only the cosine scheduler holds the rate before cooling down "
            f"(training.scheduler is {config.training.scheduler})"
        )
    if config.model.attention_span != "global" and config.model.attention == "none":
        raise ConfigError("model.attention_span: local attention needs an attention (model.attention is none)")


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


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error, not "last wins"."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key '{key}' is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


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
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader: runs no code)
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
    """Write the fully resolved config as YAML (atomically)."""
    write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
