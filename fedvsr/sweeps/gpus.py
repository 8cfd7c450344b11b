"""``platform.gpus_per_worker = auto`` in a sweep: one probe at the sweep's start, every trial packed alike.

The sweep probes a client of its base config once (:func:`fedvsr.platform.gpus.probe`: one training step on one
GPU, or the ``gpu-probe`` testing hook) and every trial runs with the numeric ``platform.gpus_per_worker = 1 / k``
and ``platform.workers`` the packing allows (:func:`fedvsr.platform.gpus.resolve`), written into the spec's fixed
keys before the trials' resources are sized. The decision is kept in ``<sweep>/gpu_packing.json``. One probe
measures one configuration, so a spec that sweeps a key that changes a client's GPU memory (:data:`MEMORY_KEYS`)
is refused; a trial that still runs out of GPU memory trains on with fewer of its workers
(:meth:`fedvsr.platform.coordinator.Coordinator._fewer_per_gpu`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from fedvsr.config import ConfigError, ExperimentConfig
from fedvsr.platform.gpus import AUTO, PACKING_FILE, Packing, resolve
from fedvsr.sweeps.spec import SweepSpec

__all__ = ["MEMORY_KEYS", "PACKING_FILE", "check_auto", "is_auto_sweep", "resolve_sweep"]

#: swept keys that change a client's peak GPU memory (its model, optimizer, strategy and batch); ``model.`` is a
#: prefix: every model key (name, preset, options)
MEMORY_KEYS = (
    "model.",
    "fl.batch_size",
    "fl.optimizer",
    "fl.strategy",
    "data.patch",
    "data.clip_frames",
    "data.scale",
)


def is_auto_sweep(spec: SweepSpec) -> bool:
    """Whether the spec's fixed keys (base config and ``--set``) ask for ``platform.gpus_per_worker = auto``."""
    return spec.fixed.get("platform.gpus_per_worker") == AUTO


def check_auto(spec: SweepSpec) -> None:
    """A :class:`ConfigError` when ``auto`` cannot be resolved once for the whole sweep: a swept key that changes
    a client's memory, a swept worker count or a swept ``auto``."""
    swept = spec.swept_keys()
    if any(_values_of(p, "platform.gpus_per_worker").count(AUTO) for p in spec.params):
        raise ConfigError(
            "platform.gpus_per_worker = auto is decided once per sweep: give it as a fixed key (or --set), "
            "not among the swept values; allowed here: numbers"
        )
    if not is_auto_sweep(spec):
        return
    for key in swept:
        if key.startswith(MEMORY_KEYS[0]) or key in MEMORY_KEYS[1:]:
            raise ConfigError(
                f"platform.gpus_per_worker = auto measures one configuration, but this sweep varies {key}, which "
                f"changes a client's GPU memory; allowed here: a number for platform.gpus_per_worker"
            )
    for key in ("platform.workers", "platform.gpus_per_worker"):
        if key in swept:
            raise ConfigError(
                f"platform.gpus_per_worker = auto sets platform.workers and platform.gpus_per_worker to what fits, "
                f"but this sweep varies {key}; allowed here: a number for platform.gpus_per_worker"
            )


def _values_of(param, key: str) -> list:
    """The categorical values ``param`` gives ``key`` (none when it does not set it)."""
    if key not in param.keys:
        return []
    i = param.keys.index(key)
    return [v[i] if param.joint else v for v in param.values]


def resolve_sweep(
    spec: SweepSpec, base: ExperimentConfig, resources: dict[str, float], measure: Callable[[], tuple[int, int]]
) -> tuple[SweepSpec, Packing]:
    """The spec with ``auto`` resolved from one probe (``measure``) of ``base``, its trials' config, on
    ``resources`` (Ray's ``cluster_resources()``): fixed ``platform.gpus_per_worker = 1 / k`` and
    ``platform.workers``. Replicates are runs alive at once: they run in parallel, each worker holding its own
    1 / k (:func:`fedvsr.platform.gpus.resolve`)."""
    check_auto(spec)
    packing = resolve(base, resources, measure, copies=spec.replicates)
    cfg = packing.config(base)
    fixed = {
        **spec.fixed,
        "platform.gpus_per_worker": cfg.platform.gpus_per_worker,
        "platform.workers": cfg.platform.workers,
    }
    return dataclasses.replace(spec, fixed=fixed), packing
