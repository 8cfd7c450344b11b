"""The Ray runtime: client worker actors, the coordinator actor, checkpoints, the results store."""

from fedvsr.platform.run import run_experiment

__all__ = ["run_experiment"]
