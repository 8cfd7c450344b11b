"""A sweep keeps its actors between trials, and a trial's numbers are those of the same experiment run alone."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from fedvsr.platform.run import run_experiment
from fedvsr.sweeps.runner import pack, run_sweep
from fedvsr.sweeps.spec import build_spec
from tests.conftest import tiny_fixed


@pytest.mark.slow
def test_a_sweep_of_four_trials_reuses_its_actors_and_gives_each_trial_its_own_runs_numbers(
    ray_local, synth_root, tmp_path
):
    lrs = [0.001, 0.002, 0.003, 0.004]
    spec = build_spec(
        "reuse",
        {"search": "grid", "scheduler": "none", "fixed": tiny_fixed(synth_root, 2), "params": {"fl.lr": {"grid": lrs}}},
    )
    lines: list[str] = []
    rows = run_sweep(spec, tmp_path / "sweep", concurrent=1, echo=lines.append)
    assert sorted(r["fl.lr"] for r in rows) == lrs and {r["status"] for r in rows} == {"finished"}
    runs = {r["fl.lr"]: tmp_path / "sweep" / r["out"] for r in rows}
    nodes = [json.loads((runs[lr] / "node.json").read_text()) for lr in lrs]
    # one trainable actor ran the four trials one after another, with the same coordinator and workers
    assert [n["trial_of_actor"] for n in nodes] == [1, 2, 3, 4]
    assert nodes[0]["worker_pids"] == nodes[3]["worker_pids"] and len(nodes[0]["worker_pids"]) == 1

    meta = json.loads(pq.read_schema(tmp_path / "sweep" / "trials.parquet").metadata[b"fedvsr.utilisation"])
    assert meta["resources"] == {"CPU": 2.0} and 0 < meta["utilisation"]["CPU"] <= 1
    assert any(line.startswith("fedvsr sweep: utilisation ") and "of 2 CPUs" in line for line in lines)

    # the timeline: a step per round of every trial, all on one actor, and a budget whose parts add up to the wall
    steps = pq.read_table(tmp_path / "sweep" / "timeline.parquet").to_pylist()
    assert len(steps) == 4 * 2 and len({s["actor_pid"] for s in steps}) == 1
    assert sorted((s["trial"], s["round"]) for s in steps) == sorted((r["trial"], k) for r in rows for k in (1, 2))
    assert all(s["begin_seconds"] > 0 for s in steps if s["round"] == 1)
    assert all(s["begin_seconds"] == 0 for s in steps if s["round"] == 2)
    budget = json.loads(pq.read_schema(tmp_path / "sweep" / "timeline.parquet").metadata[b"fedvsr.time_budget"])
    assert budget["slots"] == 1 and budget["actors"] == 1 and budget["trials"] == 4
    assert sum(budget["seconds"].values()) == pytest.approx(budget["slot_seconds"])
    assert abs(budget["seconds"]["other"]) < 1e-6 and budget["seconds"]["tail"] == 0  # one slot: never a tail
    assert budget["seconds"]["rounds"] == pytest.approx(sum(r["seconds"] for r in rows))
    assert any(line.startswith("fedvsr sweep: time of 1 trial slot x ") for line in lines)

    # a trial on reused actors (the 2nd, and the 4th after two others) gives bit for bit the rounds and clients of
    # its experiment run alone on fresh actors (the 1st trial ran on fresh actors, as a run alone does)
    for lr in (lrs[1], lrs[3]):
        alone = tmp_path / f"alone-{lr}"
        run_experiment(spec.experiment_config({"fl.lr": lr}), alone)
        for table in ("rounds.parquet", "clients.parquet"):
            got, want = (pq.read_table(d / table).to_pylist() for d in (runs[lr], alone))
            timing = ("seconds", "train_seconds", "eval_seconds", "updates_per_s", "samples_per_s", "node")
            strip = [{k: v for k, v in r.items() if k not in timing} for r in got]
            assert strip == [{k: v for k, v in r.items() if k not in timing} for r in want], (lr, table)


def test_concurrent_auto_sizes_each_trials_workers_to_the_trial_and_packs_them_side_by_side(synth_root):
    fixed = {**tiny_fixed(synth_root, 2), "platform.workers": 2}
    grid = {"search": "grid", "scheduler": "none", "fixed": fixed}
    sixteen = build_spec("s", {**grid, "params": {"fl.lr": {"grid": [0.001 * i for i in range(1, 17)]}}})
    packed, concurrent = pack(sixteen, {"CPU": 2.0})
    assert (packed.fixed["platform.workers"], concurrent) == (1, 2)  # two trials of one worker side by side
    one = build_spec("one", {**grid, "params": {"fl.lr": {"grid": [0.001]}}})
    assert pack(one, {"CPU": 2.0})[0].fixed["platform.workers"] == 2  # alone, it keeps both workers
    assert pack(one, {"CPU": 8.0})[0].fixed["platform.workers"] == 2  # no more than it asked for
    # 16 trials on 16 CPUs: all at once, one worker each
    assert (lambda s, c: (s.fixed["platform.workers"], c))(*pack(sixteen, {"CPU": 16.0})) == (1, 16)
    three = build_spec("three", {**grid, "params": {"fl.lr": {"grid": [0.001, 0.002, 0.003]}}})
    assert (lambda s, c: (s.fixed["platform.workers"], c))(*pack(three, {"CPU": 6.0})) == (2, 3)
    unfixed = {k: v for k, v in fixed.items() if k != "platform.workers"}
    swept = build_spec("w", {**grid, "fixed": unfixed, "params": {"platform.workers": {"grid": [1, 2]}}})
    assert pack(swept, {"CPU": 4.0}) == (swept, 2)  # a swept worker count is kept
    reps = build_spec("r", {**grid, "replicates": 2, "params": {"fl.lr": {"grid": [0.001, 0.002, 0.003]}}})
    assert (lambda s, c: (s.fixed["platform.workers"], c))(*pack(reps, {"CPU": 2.0})) == (1, 1)
