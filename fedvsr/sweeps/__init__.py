"""Ray Tune + Optuna sweeps: search spaces as data, one trial = one federated experiment, results as rows."""

from fedvsr.sweeps.spec import SpecError, SweepSpec, list_specs, load_spec

__all__ = ["SpecError", "SweepSpec", "list_specs", "load_spec"]
