"""Self-documenting configuration keys: one declaration gives a key its default, help text and range.

A key is a dataclass field declared with :func:`key` (``mu: float = key(0.001, "FedProx: weight of ...",
min=0.0, max=1000.0)``). The same declaration serves the config sections (:mod:`fedvsr.config`), a
strategy's parameter dataclass (:mod:`fedvsr.fl`), a model family's recipe (:mod:`fedvsr.models`), the
generated configuration table and a sweep's checks of the values it samples. :func:`coerce` turns a
YAML value into the key's type or raises a :class:`ConfigError` naming the key, the value and what is
allowed. This module imports nothing of fedvsr, so every layer may use it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import field, fields
from typing import Any


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names key, value and what is allowed."""


def key(
    default: Any,
    help: str,
    *,
    choices: tuple | Callable[[], tuple] | None = None,
    min: float | None = None,
    max: float | None = None,
    min_exclusive: bool = False,
    factory: Any = None,
) -> Any:
    """A dataclass field that is a configuration key: its default, what it is (``help``) and what it allows
    (``choices``, a tuple or a function returning one for a registry that can grow, or ``min`` / ``max``)."""
    meta = {"help": help, "choices": choices, "min": min, "max": max, "min_exclusive": min_exclusive}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def is_key(f: dataclasses.Field) -> bool:
    """Whether a dataclass field was declared with :func:`key` (a parameter dataclass may also hold internal
    switches that only a registry entry sets, such as FedVSR's ``loss_aware``)."""
    return "help" in f.metadata


def key_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of a dataclass declared with :func:`key`, in declaration order."""
    return [f for f in fields(cls) if is_key(f)]


def default_of(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def choices_of(f: dataclasses.Field) -> tuple | None:
    c = f.metadata.get("choices")
    return tuple(c()) if callable(c) else c


def field_type(f: dataclasses.Field) -> type:
    t = f.type if isinstance(f.type, str) else f.type.__name__
    return {"int": int, "float": float, "str": str, "bool": bool, "dict": dict, "list": list}.get(t, object)


def allowed(f: dataclasses.Field) -> str:
    """What a key allows, in words: ``"one of 'a', 'b'"``, ``"a number > 0.0 and <= 10.0"``."""
    m = f.metadata
    choices = choices_of(f)
    if choices:
        return "one of " + ", ".join(repr(c) for c in choices)
    parts = []
    if m.get("min") is not None:
        parts.append(f"{'>' if m.get('min_exclusive') else '>='} {m['min']}")
    if m.get("max") is not None:
        parts.append(f"<= {m['max']}")
    kind = {
        int: "an integer",
        float: "a number",
        str: "a string",
        bool: "true/false",
        dict: "a mapping",
        list: "a list of integers",
    }
    return kind.get(field_type(f), "a value") + (" " + " and ".join(parts) if parts else "")


def _coerce_type(t: type, value: Any, bad: ConfigError, key: str) -> Any:
    if t is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise bad
    elif t is float:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise bad from None
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad
        return float(value)
    elif t is str:
        if not isinstance(value, str):
            raise bad
        if "\x00" in value:
            raise ConfigError(f"{key} = {value!r} is not allowed: it holds a NUL character")
    elif t is bool:
        if not isinstance(value, bool):
            raise bad
    elif t is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise bad
    return value


def _coerce_list(value: Any, bad: ConfigError) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise bad
    items = []
    for v in value:
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            raise bad
        items.append(v)
    return items


def coerce(key: str, f: dataclasses.Field, value: Any, upper: bool = True) -> Any:
    """``value`` as the key ``f`` (dotted name ``key``) stores it, or a ConfigError naming key, value and what
    is allowed. YAML reads ``1e-3`` as a string: a float key parses it. ``upper=False`` skips the ``max`` bound."""
    t = field_type(f)
    auto = key == "platform.gpus_per_worker"  # or "auto": packed to fit at the start (fedvsr.platform.gpus)
    if auto and value == "auto":
        return value
    bad = ConfigError(f"{key} = {value!r} is not allowed; expected {allowed(f)}{' or auto' if auto else ''}")
    if t is list:
        return _coerce_list(value, bad)
    value = _coerce_type(t, value, bad, key)
    m = f.metadata
    choices = choices_of(f)
    if choices and value not in choices:
        raise bad
    if m.get("min") is not None:
        if value < m["min"] or (m.get("min_exclusive") and value == m["min"]):
            raise bad
    if upper and m.get("max") is not None and value > m["max"]:
        raise bad
    return value


def check_fields(obj: Any, prefix: str) -> None:
    """Check every key of a dataclass instance against its declaration (a parameter dataclass's
    ``__post_init__``): its type, choices and lower bound. The upper bounds guard a config against typos
    (``fl.alpha <= 100``); a caller in Python may go past them (the tests of extreme exponents do)."""
    for f in key_fields(type(obj)):
        coerce(f"{prefix}{f.name}", f, getattr(obj, f.name), upper=False)
