"""Name -> constructor registry with size presets.

A family registers its class with ``@register_model("name", presets={...})``; a preset is a
dict of constructor keyword arguments, so a YAML block ``model: {name, preset, options}``
builds a model with no glue code (``options`` override the preset's arguments).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from fedvsr.models.base import VSRModel


@dataclass(frozen=True)
class ModelEntry:
    name: str
    cls: type[VSRModel]
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    description: str = ""


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str, presets: dict[str, dict[str, Any]], description: str = ""
) -> Callable[[type[VSRModel]], type[VSRModel]]:
    """Class decorator adding a model family to the registry under ``name``."""

    def wrap(cls: type[VSRModel]) -> type[VSRModel]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        if not presets:
            raise ValueError(f"model {name!r} needs at least one preset")
        doc = description or (cls.__doc__ or "").strip().splitlines()[0]
        _REGISTRY[name] = ModelEntry(name, cls, dict(presets), doc)
        return cls

    return wrap


def model_names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    _load_builtin()
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; registered models: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def preset_kwargs(name: str, preset: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    entry = get_entry(name)
    if preset not in entry.presets:
        raise KeyError(
            f"model {name!r} has no preset {preset!r}; presets: {', '.join(entry.presets)}"
        )
    return {**entry.presets[preset], **(options or {})}


def build_model(name: str, preset: str, options: dict[str, Any] | None = None) -> VSRModel:
    """Instantiate model ``name`` with the arguments of ``preset`` updated by ``options``."""
    entry = get_entry(name)
    kwargs = preset_kwargs(name, preset, options)
    try:
        model = entry.cls(**kwargs)
    except TypeError as err:
        raise TypeError(f"model {name!r} preset {preset!r}: bad constructor arguments: {err}") from err
    return model


def count_params(model: nn.Module) -> int:
    """Parameters of the network that restores frames: a model that also trains a helper network (a GAN's
    discriminator) names its restoring part ``counted_module`` (VSRGAN: its generator), as papers count."""
    counted = getattr(model, "counted_module", None)
    module = counted if isinstance(counted, nn.Module) else model
    return sum(p.numel() for p in module.parameters())


def _load_builtin() -> None:
    # explicit imports (no folder scanning): each module registers its family on import
    import fedvsr.models  # noqa: F401
