"""The typed, validated experiment configuration.

``load_config(path, overrides)`` builds one :class:`ExperimentConfig` from an optional YAML
file and ``key=value`` overrides with dotted keys (``fl.lr=1e-3``). Every bad value is
rejected here, before Ray starts, with a :class:`ConfigError` naming the key, the value and
what is allowed. Each field documents itself where it is declared (:func:`fedvsr.fields.key`), once: the
sections' own keys in :mod:`fedvsr.config_sections` (re-exported here), a strategy's keys (``fl.mu``,
``fl.lambda_hifr``) in its parameter dataclass (:mod:`fedvsr.fl.registry`), a model family's training-recipe
keys (``model.recipe.*``) in its recipe dataclass, the checks across keys in :mod:`fedvsr.config_checks`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from fedvsr.config_checks import (  # noqa: F401  (re-exported: fedvsr.config is where callers look)
    DEADLINE_KEYS,
    KEY_CONDITIONS,
    MAX_MODEL_OPTION,
    SPLIT_SOURCES,
    key_applies,
    validate,
)
from fedvsr.config_sections import (  # noqa: F401  (re-exported: fedvsr.config is where callers look)
    AUGMENTS,
    DATA_SOURCES,
    DEADLINE_ACTIONS,
    DEADLINE_UNITS,
    DEGRADATIONS,
    EVAL_CHANNELS,
    EVAL_SOURCES,
    KERNELS,
    LR_CLOCKS,
    LR_SCHEDULES,
    MAX_REPLICATES,
    OPTIMIZERS,
    PARTITIONS,
    SEED_MAX,
    SYNTHETIC_CONTENT,
    DataConfig,
    EvalConfig,
    ExperimentConfig,
    FLConfig,
    ModelConfig,
    PlatformConfig,
    _model_entry,
)
from fedvsr.fields import ConfigError, allowed, coerce, default_of, field_type, is_key, key_fields
from fedvsr.fl.registry import all_key_fields, get_strategy, readers
from fedvsr.models.registry import recipe_fields

# ----------------------------------------------------------------------------------------- building


def section_keys(cls: type) -> dict[str, dataclasses.Field]:
    """The keys of a config section (name -> declaration), in table order: the ``fl`` section's own keys and,
    where its ``params`` field stands, every registered strategy's keys (each once)."""
    if cls is _Recipes:
        return dict(recipe_fields())
    out: dict[str, dataclasses.Field] = {}
    for f in fields(cls):
        if is_key(f):
            out[f.name] = f
        elif cls is FLConfig and f.name == "params":
            out.update(all_key_fields())
        elif cls is ModelConfig and f.name == "recipe":
            out["recipe"] = _RECIPE_SECTION
    return out


@dataclass
class _Recipes:
    """The ``model.recipe`` section as the table and the key lookup see it: every family's recipe keys."""


#: the field that stands for the model.recipe section (its keys: fedvsr.models.registry.recipe_fields)
_RECIPE_SECTION = field(default_factory=_Recipes, metadata={"help": "training recipe"})
_RECIPE_SECTION.name = "recipe"


def _is_section(f: dataclasses.Field) -> bool:
    return dataclasses.is_dataclass(f.default_factory if f.default_factory is not dataclasses.MISSING else None)


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    by_name = section_keys(cls)
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        key = f"{prefix}{name}"
        if name not in by_name:
            raise ConfigError(
                f"unknown key {key!r}; allowed keys{' in ' + repr(prefix[:-1]) if prefix else ''}: "
                + ", ".join(sorted(by_name))
            )
        f = by_name[name]
        if _is_section(f):
            if value is None:
                value = {}
            if not isinstance(value, dict):
                raise ConfigError(f"{key} = {value!r} is not allowed; expected a mapping of {key}.* keys")
            kwargs[name] = _build(f.default_factory, value, key + ".")
        else:
            kwargs[name] = coerce(key, f, value)
    if cls is _Recipes:
        return kwargs
    if cls is FLConfig:
        return _build_fl(kwargs)
    return _build_model(kwargs) if cls is ModelConfig else cls(**kwargs)


def _build_model(kwargs: dict[str, Any]) -> ModelConfig:
    """The ``model`` section: the family's recipe dataclass from ``model.recipe.*``, whose values that differ
    from their defaults join ``options`` (the constructor's keyword arguments). A recipe key in ``options`` or one
    the family does not read is refused, naming where it belongs."""
    given = kwargs.pop("recipe", {})
    cfg = ModelConfig(**kwargs)
    entry = _model_entry(cfg.name)
    if entry is None:
        return cfg  # validate() names the unknown model
    declared = recipe_fields()  # the values are coerced already (section model.recipe)
    reads = {f.name: f for f in key_fields(entry.recipe)} if entry.recipe is not None else {}
    for name in cfg.options:
        if name in reads:
            raise ConfigError(
                f"model.options.{name} is a key of {cfg.name}'s training recipe: set "
                f"model.recipe.{name} instead (the value is checked there)"
            )
    chosen = {}
    for name, value in given.items():
        if name in reads:
            chosen[name] = value
        elif value != default_of(declared[name]):
            raise ConfigError(
                f"model.recipe.{name} = {value!r} has no effect with model.name = {cfg.name!r} "
                f"({'its recipe keys: ' + ', '.join(reads) if reads else 'it has no recipe keys'}); "
                f"remove it, or choose the model family it belongs to"
            )
    if entry.recipe is not None:
        try:
            cfg.recipe = entry.recipe(**chosen)
        except ValueError as err:  # the recipe's own cross-key checks (VSRGAN's LPIPS weights file)
            raise ConfigError(str(err)) from None
        defaults = entry.recipe()
        cfg.options = {**cfg.options, **{k: v for k, v in chosen.items() if v != getattr(defaults, k)}}
    return cfg


def _build_fl(kwargs: dict[str, Any]) -> FLConfig:
    """The ``fl`` section: its own keys, then the chosen strategy's parameter dataclass from the strategy keys.
    A strategy key the strategy does not read is refused unless it holds its default (what earlier runs'
    config.yaml files hold for every strategy's keys), as fl.lr_milestones is without fl.lr_schedule multistep."""
    strategy_keys = all_key_fields()
    given = {name: kwargs.pop(name) for name in list(kwargs) if name in strategy_keys}
    fl = FLConfig(**kwargs)
    entry = get_strategy(fl.strategy)
    reads = entry.keys()
    for name, value in given.items():
        if name not in reads and value != default_of(strategy_keys[name]):
            own = f"it reads {', '.join('fl.' + k for k in reads)}" if reads else "it reads no fl.* key of its own"
            raise ConfigError(
                f"fl.{name} = {value!r} has no effect with fl.strategy = {entry.name!r} ({entry.description}; "
                f"{own}); remove it, or choose a strategy that reads it: {', '.join(readers(name))}"
            )
    fl.params = entry.make_params({name: v for name, v in given.items() if name in reads})
    return fl


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{dotted}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """``tree["fl"]["mu"] = value`` for ``dotted = "fl.mu"``, creating sections as needed (in place)."""
    _set_dotted(tree, dotted, value)


def config_field(dotted: str) -> dataclasses.Field | None:
    """The dataclass field of a dotted key (``"fl.mu"``), None for a free-form key under a mapping
    field (``"model.options.group_size"``); raises ConfigError for a key that does not exist."""
    cls, parts = ExperimentConfig, dotted.split(".")
    for i, part in enumerate(parts):
        by_name = section_keys(cls)
        if part not in by_name:
            where = ".".join(parts[:i])
            raise ConfigError(
                f"unknown key {dotted!r}; allowed keys{' in ' + repr(where) if where else ''}: "
                + ", ".join(sorted(by_name))
            )
        f = by_name[part]
        if _is_section(f):
            if i == len(parts) - 1:
                raise ConfigError(
                    f"{dotted!r} is a section, not a key; its keys: "
                    + ", ".join(sorted(section_keys(f.default_factory)))
                )
            cls = f.default_factory
            continue
        if i == len(parts) - 1:
            return f
        if field_type(f) is dict:
            return None  # free-form mapping (model.options): checked when the model is built
        parent = ".".join(parts[: i + 1])
        raise ConfigError(f"unknown key {dotted!r}: {parent!r} is a key ({allowed(f)}), not a section")
    return None


def check_value(dotted: str, value: Any) -> Any:
    """The value as the config would store it, or ConfigError naming key, value and what is allowed."""
    f = config_field(dotted)
    return value if f is None else coerce(dotted, f, value)


def allowed_values(dotted: str) -> str:
    """What a key allows, in words (``"a number > 0.0"``); empty for a free-form key."""
    f = config_field(dotted)
    return "" if f is None else allowed(f)


def parse_override(text: str) -> tuple[str, Any]:
    """``"fl.lr=1e-3"`` -> ``("fl.lr", 0.001)``; the value is parsed as YAML (so ``1e-3`` stays a string
    until the float field coerces it, and ``{a: 1}`` is a mapping)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: cannot parse the value: {one_line(err)}") from None
    return key, value


def config_from_dict(values: dict[str, Any]) -> ExperimentConfig:
    cfg = _build(ExperimentConfig, values or {}, "")
    validate(cfg)
    return cfg


#: the largest config or spec file read (a config is a few KiB; this stops a mistaken data file or device early)
MAX_YAML_BYTES = 16 * 2**20


def one_line(text: str) -> str:
    """``text`` on one line (YAML's and the OS's messages span several): lines joined by ``"; "``."""
    return "; ".join(" ".join(line.split()) for line in str(text).splitlines() if line.strip())


def read_yaml_file(path: str | os.PathLike, what: str = "config file") -> Any:
    """The YAML document in ``path``, or a ConfigError naming the file: missing, a folder or a device, unreadable
    (permissions), larger than :data:`MAX_YAML_BYTES`, not UTF-8 text, or not YAML."""
    p = Path(path)
    name = repr(str(p))
    try:
        info = p.stat()
    except OSError as err:
        if not p.exists() and isinstance(err, FileNotFoundError):
            raise ConfigError(f"{what} {name} does not exist") from None
        raise ConfigError(f"{what} {name} cannot be read: {err.strerror}") from None
    if p.is_dir():
        raise ConfigError(f"{what} {name} is a folder, not a YAML file")
    if not p.is_file():
        raise ConfigError(f"{what} {name} is not a regular file (a device, a pipe or a socket)")
    if info.st_size > MAX_YAML_BYTES:
        raise ConfigError(
            f"{what} {name} holds {info.st_size:,} bytes, more than the {MAX_YAML_BYTES:,} a YAML {what} may have"
        )
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except OSError as err:
        raise ConfigError(f"{what} {name} cannot be read: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{what} {name} is not UTF-8 text (byte {err.start}: {err.reason}); expected a YAML file"
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{what} {name} is not valid YAML: {one_line(err)}") from None
    except RecursionError:
        raise ConfigError(f"{what} {name} is not valid YAML: nested too deeply") from None


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Build and validate the config from a YAML file (optional) and ``key=value`` overrides."""
    tree: dict[str, Any] = {}
    if path is not None:
        loaded = read_yaml_file(path)
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(
                f"config file {str(path)!r} must hold a mapping at the top level, not a {type(loaded).__name__}"
            )
        tree = loaded or {}
    for text in overrides or []:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
    return config_from_dict(tree)


def config_table() -> str:
    """Every key as a Markdown table (key, default, allowed, what it is): docs/reference/config.md's table."""
    lines = ["| key | default | allowed | what it is |", "|---|---|---|---|"]

    def walk(cls: type, prefix: str) -> None:
        for name, f in section_keys(cls).items():
            if _is_section(f):
                walk(f.default_factory, f"{prefix}{name}.")
                continue
            lines.append(f"| `{prefix}{name}` | `{default_of(f)!r}` | {allowed(f)} | {f.metadata['help']} |")

    walk(ExperimentConfig, "")
    return "\n".join(lines) + "\n"
