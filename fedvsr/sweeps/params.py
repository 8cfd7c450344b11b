"""A sweep spec's parameters: one swept config key (or a joint set of keys) and its distribution, parsed and
checked against the config's key declarations (:mod:`fedvsr.fields`). See :mod:`fedvsr.sweeps.spec` for the
spec file these come from.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from typing import Any

from fedvsr.config import ConfigError, allowed_values, check_value, config_field

CONTINUOUS = ("uniform", "loguniform", "int")
CATEGORICAL = ("choice", "grid")
DERIVED = ("affine", "value")
KINDS = CONTINUOUS + CATEGORICAL + DERIVED


class SpecError(ConfigError):
    """A sweep spec that cannot run; the message names the spec, the key and what is allowed."""


@dataclass(frozen=True)
class Param:
    """One swept parameter (see the module docstring)."""

    name: str  #: the dotted config key, or the label of a joint parameter
    keys: tuple[str, ...]  #: the config keys it sets
    kind: str  #: one of KINDS
    low: float | None = None
    high: float | None = None
    step: int | None = None
    log: bool = False
    values: tuple = ()  #: categorical values (tuples for a joint parameter)
    source: str = ""  #: affine: the key it derives from
    scale: float = 1.0
    offset: float = 0.0
    when: tuple[tuple[str, tuple], ...] = ()  #: (key, allowed values) pairs

    @property
    def joint(self) -> bool:
        return len(self.keys) > 1 or self.keys[0] != self.name

    @property
    def is_log(self) -> bool:
        return self.kind == "loguniform" or (self.kind == "int" and self.log)

    def applies(self, values: dict[str, Any]) -> bool:
        """Whether the ``when`` conditions hold for the config values drawn so far."""
        return all(key in values and _matches(values[key], allowed) for key, allowed in self.when)

    def assign(self, value: Any) -> dict[str, Any]:
        """Config keys set when this parameter takes ``value`` (a tuple for a joint parameter)."""
        if self.joint:
            return dict(zip(self.keys, value, strict=True))
        return {self.name: value}

    def describe(self) -> str:
        if self.kind in CONTINUOUS:
            extra = f", step {self.step}" if self.step else ""
            return f"{self.kind}[{self.low:g}, {self.high:g}{extra}]" + (" (log)" if self.is_log else "")
        if self.kind in CATEGORICAL:
            return f"{self.kind} of {len(self.values)}: " + ", ".join(_fmt(v) for v in self.values)
        if self.kind == "affine":
            return f"{self.scale:g} * {self.source} + {self.offset:g}"
        return f"= {_fmt(self.values[0])}"


def _check(spec_name: str, key: str, value: Any) -> Any:
    try:
        return check_value(key, value)
    except ConfigError as e:
        raise SpecError(f"sweep spec {spec_name!r}: {e}") from None


def _param(spec_name: str, pname: str, body: Any, fixed: dict[str, Any], earlier: list[Param]) -> Param:
    """Parse one entry of a spec's ``params`` (name ``pname``, mapping ``body``), given the fixed keys and the
    parameters listed before it."""

    def err(msg: str) -> SpecError:
        return SpecError(f"sweep spec {spec_name!r}, parameter {pname!r}: {msg}")

    if not isinstance(body, dict):
        raise err(f"expected a mapping such as {{uniform: [0.1, 1]}} or {{choice: [a, b]}}, got {body!r}")
    body = dict(body)
    keys_raw = body.pop("keys", None)
    when_raw = body.pop("when", None) or {}
    extras = {k: body.pop(k) for k in ("step", "log", "scale", "offset") if k in body}
    kinds = [k for k in body if k in KINDS]
    other = [k for k in body if k not in KINDS]
    if other:
        raise err(
            f"unknown field(s) {', '.join(map(str, other))}; allowed: {', '.join(KINDS)}, keys, when, "
            "step, log, scale, offset"
        )
    if len(kinds) != 1:
        raise err(f"needs exactly one distribution of {', '.join(KINDS)}, got {kinds or 'none'}")
    kind = kinds[0]
    spec_value = body[kind]
    keys = _param_keys(pname, keys_raw, kind, err)
    when = _param_when(spec_name, when_raw, fixed, earlier, err)
    kw: dict[str, Any] = {"name": pname, "keys": keys, "kind": kind, "when": when}
    if kind in CONTINUOUS:
        kw.update(_continuous(spec_name, pname, kind, spec_value, extras, err))
    elif kind in CATEGORICAL:
        kw["values"] = _categorical(spec_name, keys, kind, spec_value, err)
    elif kind == "affine":
        kw.update(_affine_source(spec_name, pname, spec_value, extras, fixed, earlier, err))
    else:  # value
        kw["values"] = (_check(spec_name, pname, spec_value),)
    return Param(**kw)


def _param_keys(pname: str, keys_raw: Any, kind: str, err) -> tuple[str, ...]:
    """The config keys a parameter sets: its name, or a joint parameter's ``keys``."""
    if keys_raw is not None:
        if kind not in CATEGORICAL:
            raise err("a joint parameter (keys: [...]) takes choice/grid values: a list of tuples")
        if not isinstance(keys_raw, list) or len(keys_raw) < 2:
            raise err(f"keys = {keys_raw!r}: expected a list of at least two config keys")
        keys = tuple(str(k) for k in keys_raw)
        try:
            config_field(pname)  # raises for a name that is no key (a value check would also fail on a key)
        except ConfigError:
            pass
        else:
            raise err("a joint parameter's name must not be a config key; name it e.g. 'group_overlap'")
    else:
        keys = (pname,)
    for k in keys:
        try:
            allowed_values(k)
        except ConfigError as e:
            raise err(str(e)) from None
    return keys


def _param_when(
    spec_name: str, when_raw: Any, fixed: dict[str, Any], earlier: list[Param], err
) -> tuple[tuple[str, tuple], ...]:
    """A parameter's ``when`` conditions: each on a fixed key or an earlier parameter, with values it can take."""
    when = []
    if not isinstance(when_raw, dict):
        raise err(f"when = {when_raw!r}: expected a mapping {{key: value or [values]}}")
    known = dict(fixed)
    for p in earlier:
        for k in p.keys:
            known.setdefault(k, None)
    for ckey, cval in when_raw.items():
        ckey = str(ckey)
        if ckey not in known:
            raise err(
                f"when names {ckey!r}, which is neither a fixed key nor a parameter listed earlier; "
                f"known: {', '.join(sorted(known)) or 'none'}"
            )
        allowed = tuple(cval) if isinstance(cval, list) else (cval,)
        for v in allowed:
            _check(spec_name, ckey, v)
        possible = _possible_values(ckey, fixed, earlier)
        if possible is not None and not any(_matches(v, allowed) for v in possible):
            raise err(f"when {ckey} in {list(allowed)} can never hold: {ckey} takes {list(possible)}")
        when.append((ckey, allowed))
    return tuple(when)


def _continuous(spec_name: str, pname: str, kind: str, spec_value: Any, extras: dict[str, Any], err) -> dict[str, Any]:
    """``low`` and ``high`` (and an int range's ``step`` and ``log``) of a continuous distribution."""
    kw: dict[str, Any] = {}
    if not (
        isinstance(spec_value, list)
        and len(spec_value) == 2
        and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in spec_value)
    ):
        raise err(f"{kind} = {spec_value!r}: expected [low, high], two numbers")
    low, high = (float(x) for x in spec_value)
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise err(f"{kind} = {spec_value!r}: expected finite low < high")
    if kind == "loguniform" and low <= 0:
        raise err(f"loguniform = {spec_value!r}: low must be > 0")
    if kind == "int":
        if not (low.is_integer() and high.is_integer()):
            raise err(f"int = {spec_value!r}: expected integer bounds")
        step = extras.get("step", 1)
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise err(f"step = {step!r}: expected an integer >= 1")
        kw.update(step=step if step != 1 else None, log=bool(extras.get("log", False)))
        if kw["log"] and (low < 1 or step != 1):
            raise err("int with log: true needs low >= 1 and step 1 (Optuna's rule)")
    for bound in (low, high):  # ranges are intervals: both ends allowed -> every value allowed
        _check(spec_name, pname, int(bound) if kind == "int" else bound)
    kw.update(low=low, high=high)
    return kw


def _categorical(spec_name: str, keys: tuple[str, ...], kind: str, spec_value: Any, err) -> tuple:
    """The checked values of a choice / grid (tuples for a joint parameter)."""
    if not isinstance(spec_value, list) or not spec_value:
        raise err(f"{kind} = {spec_value!r}: expected a non-empty list of values")
    values = []
    for v in spec_value:
        if len(keys) > 1:
            if not isinstance(v, list) or len(v) != len(keys):
                raise err(f"value {v!r} must be a list of {len(keys)} values, one per key {list(keys)}")
            values.append(tuple(_check(spec_name, k, x) for k, x in zip(keys, v, strict=True)))
        else:
            values.append(_check(spec_name, keys[0], v))
    if len({_label(v) for v in values}) != len(values):
        raise err(f"{kind} = {spec_value!r} lists a value twice")
    return tuple(values)


def _affine_source(
    spec_name: str,
    pname: str,
    spec_value: Any,
    extras: dict[str, Any],
    fixed: dict[str, Any],
    earlier: list[Param],
    err,
) -> dict[str, Any]:
    """An affine parameter's source, scale and offset, checked at the source's possible values."""
    source = str(spec_value)
    if source not in {k for p in earlier for k in p.keys} | set(fixed):
        raise err(f"affine = {source!r} must name a fixed key or a parameter listed earlier")
    scale, offset = extras.get("scale", 1.0), extras.get("offset", 0.0)
    for what, x in (("scale", scale), ("offset", offset)):
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise err(f"{what} = {x!r}: expected a number")
    possible = _possible_values(source, fixed, earlier)
    src_param = next((p for p in earlier if source in p.keys), None)
    if src_param is not None and src_param.kind in CONTINUOUS:
        possible = (src_param.low, src_param.high)
    for x in possible or ():
        _check(spec_name, pname, _affine(float(x), float(scale), float(offset)))
    return {"source": source, "scale": float(scale), "offset": float(offset)}


def _possible_values(key: str, fixed: dict[str, Any], earlier: list[Param]) -> tuple | None:
    """The values ``key`` can take given the fixed keys and earlier parameters; None when continuous."""
    values: list[Any] = []
    setters = [p for p in earlier if key in p.keys]
    for p in setters:
        i = p.keys.index(key)
        if p.kind in CATEGORICAL:
            values += [v[i] if p.joint else v for v in p.values]
        elif p.kind == "value":
            values.append(p.values[0])
        else:
            return None
    if key in fixed and (not setters or any(p.when for p in setters)):
        values.append(fixed[key])
    if not setters and key not in fixed:
        return None
    return tuple(values)


def _exclusive(params: list[Param], key: str) -> bool:
    """Whether the parameters setting ``key`` have conditions on one key with disjoint values."""
    setters = [p for p in params if key in p.keys]
    if any(not p.when for p in setters):
        return False
    for a, b in itertools.combinations(setters, 2):
        wa, wb = dict(a.when), dict(b.when)
        if not any(k in wb and not set(map(_label, wa[k])) & set(map(_label, wb[k])) for k in wa):
            return False
    return True


def _derived(p: Param, context: dict[str, Any]) -> Any:
    if p.kind == "value":
        return p.values[0]
    return _affine(float(context[p.source]), p.scale, p.offset)


def _affine(x: float, scale: float, offset: float) -> float:
    # rounded so that 1 - 0.7 is 0.3, not 0.30000000000000004
    return round(scale * x + offset, 12)


def _matches(value: Any, allowed: tuple) -> bool:
    return any(_label(value) == _label(a) for a in allowed)


def _label(value: Any) -> str:
    """A stable string for a value (Optuna's categorical choices must be plain scalars)."""
    if isinstance(value, tuple):
        return json.dumps(list(value))
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return "(" + ", ".join(_fmt(v) for v in value) + ")"
    return str(value)


def _fmt_point(point: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in point.items())
