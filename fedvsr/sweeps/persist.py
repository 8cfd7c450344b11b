"""A sweep's spec kept in its folder (``sweep.yaml``): written when the sweep starts, read back by
``fedvsr sweep --resume`` and by ``fedvsr report``, so that a sweep folder says what it swept without the command
line that started it."""

from __future__ import annotations

from pathlib import Path

import yaml

from fedvsr.platform.results import write_text_atomic
from fedvsr.sweeps.results import SWEEP_FILE
from fedvsr.sweeps.spec import SweepSpec, build_spec


def save_spec(spec: SweepSpec, sweep_dir: Path) -> None:
    """Write ``spec`` (its name and :meth:`~fedvsr.sweeps.spec.SweepSpec.to_dict`) into ``<sweep_dir>/sweep.yaml``."""
    write_text_atomic(sweep_dir / SWEEP_FILE, yaml.safe_dump({"name": spec.name, **spec.to_dict()}, sort_keys=False))


def saved_spec(sweep_dir: Path) -> SweepSpec:
    """The spec saved in ``<sweep_dir>/sweep.yaml``, validated again as a new one is (its name defaults to the
    folder's)."""
    data = yaml.safe_load((sweep_dir / SWEEP_FILE).read_text())
    name = data.pop("name", sweep_dir.name)
    return build_spec(name, data)
