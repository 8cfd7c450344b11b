from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

# the suite's degraded-LR cache and built videos go to a folder of this session, never the user's cache (set
# before any Ray worker starts, so the workers inherit it); an explicit $FEDVSR_CACHE is kept
if not os.environ.get("FEDVSR_CACHE"):
    os.environ["FEDVSR_CACHE"] = tempfile.mkdtemp(prefix="fedvsr-test-cache-")
    atexit.register(shutil.rmtree, os.environ["FEDVSR_CACHE"], True)


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole test session (2 CPUs, as on CI)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """Folder for the small synthetic videos shared by the experiment tests."""
    return tmp_path_factory.mktemp("synthetic")


def tiny_experiment(root, *extra: str) -> list[str]:
    """Overrides of a 2-round experiment that runs in seconds: tiny model, 4 clients, 2 per round."""
    return [
        "model.preset=tiny",
        "fl.rounds=2",
        "fl.clients=4",
        "fl.clients_per_round=2",
        "fl.batch_size=4",
        f"data.root={root}",
        "data.videos=10",
        "data.frames=5",
        "data.height=64",
        "data.width=64",
        "data.patch=16",
        "data.samples_per_video=4",
        "eval.holdout=2",
        "eval.clips=2",
        "platform.workers=2",
        *extra,
    ]


def tiny_fixed(root, rounds: int) -> dict:
    """A sweep spec's fixed keys: a 2-client-per-round, tiny-preset experiment of one worker (a trial takes a few
    seconds)."""
    return {
        "model.preset": "tiny",
        "fl.rounds": rounds,
        "fl.clients": 4,
        "fl.clients_per_round": 2,
        "fl.batch_size": 4,
        "data.root": str(root),
        "data.videos": 10,
        "data.frames": 5,
        "data.height": 64,
        "data.width": 64,
        "data.patch": 16,
        "data.samples_per_video": 4,
        "eval.holdout": 2,
        "eval.clips": 2,
        "platform.workers": 1,
    }


def run_tiny(tmp_path, name, root, *extra, **kwargs):
    """Run :func:`tiny_experiment` (plus ``extra`` overrides) into ``tmp_path / name``; returns (out, summary)."""
    from fedvsr.config import load_config
    from fedvsr.platform.run import run_experiment

    out = tmp_path / name
    return out, run_experiment(load_config(None, tiny_experiment(root, *extra)), out, **kwargs)


@pytest.fixture(scope="session")
def fedavg_run(ray_local, synth_root, tmp_path_factory):
    """The tiny experiment (:func:`tiny_experiment`) run once for the session, FedAvg on 2 workers: (out, summary).
    Read it, never write into it: several test files compare with it."""
    return run_tiny(tmp_path_factory.mktemp("fedavg"), "run", synth_root)
