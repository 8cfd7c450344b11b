"""The strategy registry: ``fl.strategy`` name -> strategy class, its parameter dataclass, fixed overrides.

Each strategy's hyperparameters are declared once, in its frozen parameter dataclass with
:func:`fedvsr.fields.key` (default, help, range). Those fields are the ``fl.*`` keys of the config
(``fl.mu`` is :class:`~fedvsr.fl.fedprox.FedProxParams`'s ``mu``), the rows of the configuration table
and what a sweep samples. An ablation is an entry over the same class and dataclass with some fields
fixed (``fedvsr-gla`` = FedVSR with ``lambda_hifr = 0`` and ``alpha_decay = none``) and the keys that
then have no effect listed as ``unused``: the config refuses such a key set to anything but its default,
naming the strategy, instead of running without the user's value.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fedvsr.fields import default_of, key_fields
from fedvsr.fl.fedavg import FedAvg, FedAvgParams
from fedvsr.fl.fedprox import FedProx, FedProxParams
from fedvsr.fl.fedvsr import FedVSR, FedVSRParams
from fedvsr.fl.scaffold import Scaffold, ScaffoldParams
from fedvsr.fl.strategy import Strategy


@dataclass(frozen=True)
class StrategyEntry:
    """One ``fl.strategy`` value: the class built, its parameter dataclass, and what the entry fixes."""

    name: str
    cls: type[Strategy]
    params: type  #: the frozen parameter dataclass whose key fields are ``fl.*`` keys
    description: str
    fixed: Mapping[str, Any] = field(default_factory=dict)  #: parameter fields the entry sets (an ablation)
    unused: tuple[str, ...] = ()  #: key fields without effect in this entry (their loss term is off)

    def keys(self) -> tuple[str, ...]:
        """The ``fl.*`` key names this entry reads (its dataclass's keys, less the fixed and unused ones)."""
        return tuple(f.name for f in key_fields(self.params) if f.name not in self.fixed and f.name not in self.unused)

    def make_params(self, values: Mapping[str, Any] | None = None) -> Any:
        """The parameter dataclass from the keys this entry reads (``values``), with the fixed fields set."""
        values = dict(values or {})
        extra = sorted(set(values) - set(self.keys()))
        if extra:
            raise ValueError(f"strategy {self.name!r} does not read {', '.join(extra)}")
        return self.params(**{**values, **self.fixed})

    def build(self, params: Any = None) -> Strategy:
        """The strategy object with ``params`` (default: the dataclass's defaults and the fixed fields)."""
        if params is None:
            params = self.make_params()
        if not isinstance(params, self.params):
            raise TypeError(f"strategy {self.name!r} takes {self.params.__name__}, not {type(params).__name__}")
        strategy = self.cls(params)
        strategy.name = self.name
        return strategy


_REGISTRY: dict[str, StrategyEntry] = {}


def register_strategy(entry: StrategyEntry) -> StrategyEntry:
    """Add an entry. A key shared by two parameter dataclasses must be declared alike in both (same type,
    default and help), since the config holds one ``fl.<key>``."""
    if entry.name in _REGISTRY:
        raise ValueError(f"strategy {entry.name!r} is registered twice")
    if not dataclasses.is_dataclass(entry.params):
        raise TypeError(f"strategy {entry.name!r}: params must be a dataclass, not {entry.params!r}")
    declared = all_key_fields()
    for f in key_fields(entry.params):
        other = declared.get(f.name)
        if other is not None and (other.type, default_of(other), dict(other.metadata)) != (
            f.type,
            default_of(f),
            dict(f.metadata),
        ):
            raise ValueError(
                f"strategy {entry.name!r}: fl.{f.name} is declared differently by another strategy's "
                f"parameters; rename it or share the dataclass"
            )
    unknown = sorted((set(entry.fixed) | set(entry.unused)) - {f.name for f in dataclasses.fields(entry.params)})
    if unknown:
        raise ValueError(f"strategy {entry.name!r}: {', '.join(unknown)} not fields of {entry.params.__name__}")
    _REGISTRY[entry.name] = entry
    return entry


def unregister_strategy(name: str) -> None:
    """Remove an entry (tests that register a strategy of their own)."""
    _REGISTRY.pop(name, None)


def strategy_names() -> tuple[str, ...]:
    """The ``fl.strategy`` values, in registration order."""
    return tuple(_REGISTRY)


def get_strategy(name: str) -> StrategyEntry:
    if name not in _REGISTRY:
        raise KeyError(f"unknown strategy {name!r}; registered: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def all_key_fields() -> dict[str, dataclasses.Field]:
    """Every strategy key (field name -> its declaration), each once, in registration order."""
    out: dict[str, dataclasses.Field] = {}
    for entry in _REGISTRY.values():
        for f in key_fields(entry.params):
            out.setdefault(f.name, f)
    return out


def readers(key: str) -> list[str]:
    """The strategies that read ``fl.<key>``."""
    return [e.name for e in _REGISTRY.values() if key in e.keys()]


# ------------------------------------------------------------------------------------------ the entries
_HIFR_KEYS = ("hifr_mode", "hifr_eps")
for _entry in (
    StrategyEntry("fedavg", FedAvg, FedAvgParams, "FedAvg: sample-weighted average of the client models"),
    StrategyEntry("fedprox", FedProx, FedProxParams, "FedProx: FedAvg plus the proximal term (mu/2)||w - w_global||^2"),
    StrategyEntry("scaffold", Scaffold, ScaffoldParams, "SCAFFOLD (option II): drift-corrected local steps"),
    StrategyEntry("fedvsr", FedVSR, FedVSRParams, "FedVSR: DWT loss L_HiFr and loss-aware aggregation with decay"),
    # the FedVSR paper's Table 2 ablations: FedVSR with parts switched off
    StrategyEntry(
        "fedavg-dwt",
        FedVSR,
        FedVSRParams,
        "F-L_HiFr: the DWT loss with FedAvg's sample weights",
        fixed={"loss_aware": False},
        unused=("alpha", "alpha_decay"),
    ),
    StrategyEntry(
        "fedvsr-gla",
        FedVSR,
        FedVSRParams,
        "F-GLA: greedy loss-aware aggregation without decay, no DWT loss",
        fixed={"lambda_hifr": 0.0, "alpha_decay": "none"},
        unused=_HIFR_KEYS,
    ),
    StrategyEntry(
        "fedvsr-ala",
        FedVSR,
        FedVSRParams,
        "F-ALA: loss-aware aggregation with decay, no DWT loss",
        fixed={"lambda_hifr": 0.0},
        unused=_HIFR_KEYS,
    ),
):
    register_strategy(_entry)
