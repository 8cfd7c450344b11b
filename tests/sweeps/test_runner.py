"""The sweep driver's progress output, without Ray: the table of running trials and why a trial failed."""

from __future__ import annotations

from types import SimpleNamespace

from fedvsr.sweeps.results import ERROR_FILE
from fedvsr.sweeps.runner import _error_message, _running_table


def test_the_running_table_lists_trials_by_id_with_round_and_psnr():
    running = {
        "b_00001": {"round": 3, "rounds": 10, "psnr": 25.4321, "values": "fl.lr=0.001"},
        "a_00000": {"round": 10, "rounds": 10, "psnr": 26.0, "values": "fl.lr=0.01"},
    }
    assert _running_table(running).splitlines() == [
        "  running  trial              round    psnr  values",
        "           a_00000           10/10    26.00  fl.lr=0.01",
        "           b_00001            3/10    25.43  fl.lr=0.001",
    ]


def test_a_failed_trial_says_fedvsrs_error_first_then_rays_last_line(tmp_path):
    ray_error = tmp_path / "error.txt"
    ray_error.write_text("Traceback ...\n  File x\nValueError: from Ray\n")
    trial = SimpleNamespace(error_file=str(ray_error))
    folder = tmp_path / "run"
    assert _error_message(folder, SimpleNamespace()) == ""
    assert _error_message(folder, trial) == "ValueError: from Ray"
    folder.mkdir()
    (folder / ERROR_FILE).write_text("ConfigError: fl.lr = -1 is not allowed\n\nTraceback (most recent call last):\n")
    assert _error_message(folder, trial) == "ConfigError: fl.lr = -1 is not allowed"


def test_a_trial_whose_workers_are_all_lost_is_restarted_not_failed():
    """A trial's coordinator can outlive its client workers (a trial's placement group may put its driver's
    bundle on one node and its workers' on another): when the workers' node dies, the pool raises WorkersLost,
    which reaches the trial as a Ray task error caused by it, and the trial is restarted like one whose own node
    died. Any other error of the coordinator stays the trial's error."""
    from ray.exceptions import ActorDiedError, RayTaskError

    from fedvsr.platform.pool import WorkersLost
    from fedvsr.sweeps.trial import node_lost

    lost = WorkersLost("no client worker is left (2 started, all lost); resume it")
    via_ray = RayTaskError("Coordinator.run_round", "Traceback ...", lost).as_instanceof_cause()
    assert node_lost(lost) and node_lost(via_ray) and node_lost(ActorDiedError())
    other = RayTaskError(
        "Coordinator.run_round", "Traceback ...", RuntimeError("no client worker")
    ).as_instanceof_cause()
    assert not node_lost(RuntimeError("no client worker is left")) and not node_lost(other)
    assert not node_lost(ValueError("a bad config"))


def test_a_trials_actor_writes_nothing_before_its_first_step(tmp_path):
    """Tune drops a trial's actor still in its setup when a cached actor frees up for the same trial
    (reuse_actors): the dropped actor's setup must leave the trial's folder alone. It once began the run there,
    and the fresh results table of that second start removed the rounds of the run the cached actor finished (a
    finished trial with no rounds in trials.parquet)."""
    from fedvsr.sweeps.spec import build_spec
    from fedvsr.sweeps.trial import SweepTrial
    from tests.conftest import tiny_fixed

    spec = build_spec(
        "t",
        {
            "search": "grid",
            "scheduler": "none",
            "fixed": tiny_fixed(tmp_path / "data", 1),
            "params": {"fl.lr": {"grid": [0.001, 0.003]}},
        },
    )
    sweep = tmp_path / "sweep"
    trial = SweepTrial.__new__(SweepTrial)  # the actor's object, as Tune builds it, without Tune's logger set-up
    trial.setup({"fl.lr": 0.001}, spec=spec, sweep_dir=str(sweep), sweep_id="id")
    assert trial.reset_config({"fl.lr": 0.003})
    trial.cleanup()
    assert not sweep.exists() and not (tmp_path / "data").exists()
    assert trial.save_checkpoint(str(tmp_path)) == {"out": ""}
