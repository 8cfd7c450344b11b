"""Name -> constructor registry with size presets, and user models by import path.

A family registers its class with ``@register_model("name", presets={...})``; a preset is a
dict of constructor keyword arguments, so a YAML block ``model: {name, preset, options}``
builds a model with no glue code (``options`` override the preset's arguments).

A name of the form ``package.module:ClassName`` builds a user's own network without editing fedvsr
(VRT, RVRT, IART, ...): the module is imported, the class must be an ``nn.Module`` that follows the model
contract (:mod:`fedvsr.models.base`: best a :class:`VSRModel` subclass; otherwise it must have every
attribute in :data:`CONTRACT`), ``model.options`` are its constructor's keyword arguments, and presets do
not apply (any preset name is accepted and adds nothing). Every failure (no such module, no such
attribute, not a class, not an ``nn.Module``, missing contract attributes) is a :class:`ModelImportError`
(a ``KeyError``, as an unknown name) whose message says what to fix.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from fedvsr.fields import default_of, key_fields
from fedvsr.models.base import VSRModel


@dataclass(frozen=True)
class ModelEntry:
    name: str
    cls: type[VSRModel]
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    description: str = ""
    #: the family's training-recipe dataclass (loss weights, patch sizes...: keys declared with
    #: fedvsr.fields.key, the config's ``model.recipe.*``), passed to the constructor as keyword arguments; None
    #: for a family whose constructor takes only network sizes
    recipe: type | None = None


_REGISTRY: dict[str, ModelEntry] = {}

#: what the platform uses of a model: class attributes / methods (a VSRModel subclass has them all)
CONTRACT_METHODS = ("forward", "target", "vsr_loss", "optimizer_groups", "training_step")
#: data attributes, which a model may also set in ``__init__`` (checked on the built instance)
CONTRACT_VALUES = ("num_frames", "center_output", "scale", "rotation_safe")
CONTRACT = CONTRACT_VALUES + CONTRACT_METHODS


class ModelImportError(KeyError):
    """A ``package.module:Class`` model name that cannot be imported or does not follow the model contract."""

    def __str__(self) -> str:
        return str(self.args[0])


class AnyPreset(dict):
    """Presets of a user model: every name is accepted and contributes no arguments."""

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: str) -> dict[str, Any]:
        return {}

    def __iter__(self):
        return iter(["default"])


def is_import_path(name: str) -> bool:
    return ":" in name


def _import_entry(name: str) -> ModelEntry:
    module_name, _, attr = name.partition(":")
    hint = "model.name must be 'package.module:ClassName' (a module importable from the Python path)"
    if not module_name or not attr:
        raise ModelImportError(f"model {name!r}: {hint}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ModelImportError(f"model {name!r}: cannot import module {module_name!r} ({err}); {hint}") from None
    cls = getattr(module, attr, None)
    if cls is None:
        raise ModelImportError(f"model {name!r}: module {module_name!r} has no attribute {attr!r}")
    if not inspect.isclass(cls):
        raise ModelImportError(f"model {name!r}: {attr!r} is a {type(cls).__name__}, not a class")
    if not issubclass(cls, nn.Module):
        raise ModelImportError(f"model {name!r}: class {attr!r} is not a torch.nn.Module subclass")
    if not issubclass(cls, VSRModel):
        missing = [a for a in CONTRACT_METHODS if not callable(getattr(cls, a, None))]
        if missing:
            raise ModelImportError(
                f"model {name!r}: class {attr!r} is not a fedvsr.models.VSRModel and lacks the model contract's "
                f"{', '.join(missing)}; subclass fedvsr.models.VSRModel (it provides them) and set num_frames, "
                f"center_output, scale"
            )
    doc = (cls.__doc__ or "").strip().splitlines()
    return ModelEntry(name, cls, AnyPreset(), doc[0] if doc else f"user model {name}")


def check_contract(name: str, model: nn.Module) -> None:
    """A built user model must have the contract's data attributes (they may be set in ``__init__``)."""
    missing = [a for a in CONTRACT if not hasattr(model, a)]
    if missing:
        raise ModelImportError(
            f"model {name!r} lacks the model contract's {', '.join(missing)}; subclass "
            f"fedvsr.models.VSRModel and set num_frames, center_output, scale"
        )
    for a in ("num_frames", "scale"):
        v = getattr(model, a)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ModelImportError(f"model {name!r}: {a} = {v!r} must be a positive int")


def register_model(
    name: str, presets: dict[str, dict[str, Any]], description: str = "", recipe: type | None = None
) -> Callable[[type[VSRModel]], type[VSRModel]]:
    """Class decorator adding a model family to the registry under ``name``; ``recipe`` is its training-recipe
    dataclass (see :class:`ModelEntry`)."""

    def wrap(cls: type[VSRModel]) -> type[VSRModel]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        if not presets:
            raise ValueError(f"model {name!r} needs at least one preset")
        doc = description or (cls.__doc__ or "").strip().splitlines()[0]
        if recipe is not None:
            _check_recipe(name, recipe, presets)
        _REGISTRY[name] = ModelEntry(name, cls, dict(presets), doc, recipe)
        return cls

    return wrap


def unregister_model(name: str) -> None:
    """Remove a family (tests that register one of their own)."""
    _REGISTRY.pop(name, None)


def _check_recipe(name: str, recipe: type, presets: dict[str, dict[str, Any]]) -> None:
    """A recipe key is declared once: no preset sets it, and a key two families share is declared alike."""
    keys = {f.name: f for f in key_fields(recipe)}
    for preset, kwargs in presets.items():
        clash = sorted(set(kwargs) & set(keys))
        if clash:
            raise ValueError(f"model {name!r} preset {preset!r} sets the recipe key(s) {', '.join(clash)}")
    for other, f in recipe_fields().items():
        mine = keys.get(other)
        if mine is not None and (mine.type, default_of(mine), dict(mine.metadata)) != (
            f.type,
            default_of(f),
            dict(f.metadata),
        ):
            raise ValueError(f"model {name!r}: model.recipe.{other} is declared differently by another family")


def recipe_fields() -> dict[str, dataclasses.Field]:
    """Every registered family's recipe keys (name -> declaration), each once, in registration order."""
    _load_builtin()
    out: dict[str, dataclasses.Field] = {}
    for entry in _REGISTRY.values():
        if entry.recipe is not None:
            for f in key_fields(entry.recipe):
                out.setdefault(f.name, f)
    return out


def model_names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    if is_import_path(name):
        return _import_entry(name)
    _load_builtin()
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; registered models: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def preset_kwargs(name: str, preset: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    entry = get_entry(name)
    if preset not in entry.presets:
        raise KeyError(f"model {name!r} has no preset {preset!r}; presets: {', '.join(entry.presets)}")
    return {**entry.presets[preset], **(options or {})}


def build_model(name: str, preset: str, options: dict[str, Any] | None = None) -> VSRModel:
    """Instantiate model ``name`` with the arguments of ``preset`` updated by ``options``."""
    entry = get_entry(name)
    kwargs = preset_kwargs(name, preset, options)
    try:
        model = entry.cls(**kwargs)
    except TypeError as err:
        raise TypeError(f"model {name!r} preset {preset!r}: bad constructor arguments: {err}") from err
    if is_import_path(name):
        check_contract(name, model)
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
