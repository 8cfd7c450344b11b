"""A node lost mid-sweep, as a spot instance is: on a two-node loopback cluster (the head and a worker node on
127.0.0.2, each offering one CPU, token authentication on; see test_job_submit.py), the worker node's `ray start`
process group (its raylet and every process it started) is killed with SIGKILL while a trial runs there, after the
trial's first round checkpoint. Tune starts the trial again (runner.TRIAL_RESTARTS) on the node that is left, where
it continues from its run folder's checkpoint: the sweep ends with both trials finished, the restart is in
trials.parquet, and the restarted trial's numbers are bit-identical to its twin that ran without interruption
(the grid's two points differ only in data.hr_cache_mb, a cache size that cannot change a number). Rounds of
24 samples a video take about 2 s, so that the test sees a round checkpoint before the trial ends even on a busy
machine.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from test_job_submit import RAY, REPO, LoopbackCluster, _kill_group, free_port, started

from tests.conftest import tiny_fixed

# a two-node loopback cluster, a node killed mid-trial: 80-90 s on 2 cores (both tests), so outside the default
# run (the README test command); run it with `python -m pytest -m cluster tests/platform/test_cluster_node_loss.py`
pytestmark = [pytest.mark.slow, pytest.mark.cluster]

#: the GCS declares a node dead after ~1.5 s of silence instead of Ray's default ~30 s
FAST_HEALTH = {
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "500",
    "RAY_health_check_failure_threshold": "3",
}
TIMING = {"seconds", "train_seconds", "eval_seconds", "updates_per_s", "samples_per_s", "node"}


class TwoNodes(LoopbackCluster):
    def start(self) -> None:
        self.env.update(FAST_HEALTH)
        self.token_file.write_text("t" * 64)
        self.token_file.chmod(0o600)
        self._spawn(
            "head",
            [
                RAY,
                "start",
                "--head",
                "--block",
                f"--port={self.gcs_port}",
                "--num-cpus=1",
                f"--temp-dir={self.root / 'ray'}",
                "--include-dashboard=false",
                f"--dashboard-port={free_port()}",
                f"--ray-client-server-port={free_port()}",
                f"--dashboard-agent-listen-port={free_port()}",
                "--disable-usage-stats",
            ],
            {},
        )
        self._wait_for_gcs()
        self._spawn(
            "worker",
            [
                RAY,
                "start",
                "--block",
                f"--address={self.gcs}",
                "--num-cpus=1",
                "--node-ip-address=127.0.0.2",
                f"--temp-dir={self.root / 'ray-worker'}",
                f"--dashboard-agent-listen-port={free_port()}",
                "--disable-usage-stats",
            ],
            {},
        )
        self._wait_started("head")
        self._wait_started("worker")


def _rows(path: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in pq.read_table(path).to_pylist()]


@pytest.fixture(scope="module")
def two_nodes():
    yield from started(TwoNodes, "fvn-")


def test_a_trial_whose_node_is_lost_restarts_on_the_other_node_bit_identical(two_nodes, synth_root):
    cluster, root = two_nodes, two_nodes.root
    out = root / "sweep"
    fixed = {**tiny_fixed(synth_root, 5), "data.samples_per_video": 24, "platform.cpus_per_worker": 1}
    (root / "spec.yaml").write_text(
        yaml.safe_dump(
            {
                "search": "grid",
                "scheduler": "none",
                "fixed": fixed,
                "params": {"data.hr_cache_mb": {"grid": [64.0, 65.0]}},
            }
        )
    )
    sweep = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fedvsr.cli",
            "sweep",
            str(root / "spec.yaml"),
            "--out",
            str(out),
            "--concurrent",
            "2",
            "--address",
            cluster.gcs,
        ],
        env=cluster.env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline, lost = time.monotonic() + 300, None
    while lost is None and time.monotonic() < deadline and sweep.poll() is None:
        for node_file in out.glob("runs/*/node.json"):
            rounds = node_file.with_name("rounds.parquet")
            if json.loads(node_file.read_text())["node_ip"] == "127.0.0.2" and rounds.is_file():
                lost = (node_file.parent, pq.read_table(rounds).to_pylist())
                _kill_group(cluster.procs["worker"].pid, signal.SIGKILL)  # the node is gone, all at once
                break
        time.sleep(0.1)
    log = sweep.communicate(timeout=400)[0]
    assert lost is not None, log[-4000:]
    assert sweep.returncode == 0, log[-4000:]
    folder, before = lost
    assert 1 <= len(before) < 5  # killed between its first checkpoint and its end
    assert "was lost (1 of 2 restarts): it starts again, from its last round checkpoint" in log

    rows = {Path(r["out"]).name: r for r in pq.read_table(out / "trials.parquet").to_pylist()}
    statuses = {name: (r["status"], r["error"]) for name, r in rows.items()}
    assert {r["status"] for r in rows.values()} == {"finished"} and len(rows) == 2, (statuses, log[-4000:])
    restarted = rows[folder.name]
    (twin,) = [r for name, r in rows.items() if name != folder.name]
    worker_id, head_id = restarted["node_ids"].split(",")
    assert restarted["restarts"] == 1 and head_id == twin["node_id"] == restarted["node_id"] != worker_id
    # the twin ran on the head; it restarts too only when Ray placed its client worker's bundle on the lost node
    # (a trial's placement group packs its bundles where they fit): then every one of its workers was lost
    # (WorkersLost), and it started again on the head, from its own checkpoint
    assert twin["restarts"] == 0 or twin["node_ids"] == f"{head_id},{head_id}", statuses
    assert restarted["node_ip"] != "127.0.0.2"
    # continued from its checkpoint (the run's events say after which round): the rounds run before it are kept
    # as they were, timings included
    events = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
    (resumed,) = [e["message"] for e in events if e["kind"] == "resumed"]
    k = int(resumed.removeprefix("resumed after round "))
    assert 1 <= k <= len(before)
    assert pq.read_table(folder / "rounds.parquet").to_pylist()[:k] == before[:k]
    # bit-identical to the twin that ran without interruption
    twin_dir = Path(twin["out"])
    assert _rows(folder / "rounds.parquet") == _rows(twin_dir / "rounds.parquet")
    assert (folder / "model.safetensors").read_bytes() == (twin_dir / "model.safetensors").read_bytes()
    assert restarted["final_psnr"] == twin["final_psnr"]


def test_a_client_workers_node_lost_during_simulate_the_rounds_complete_on_the_other(two_nodes, synth_root):
    """After the sweep above the cluster has its head only: a new worker node joins on 127.0.0.3, a run with one
    client worker per node starts, and the new node is killed after the first round. The lost client is trained
    again on the head's worker; every round completes."""
    from tests.conftest import tiny_experiment

    cluster = two_nodes
    cluster._spawn(
        "worker2",
        [
            RAY,
            "start",
            "--block",
            f"--address={cluster.gcs}",
            "--num-cpus=1",
            "--node-ip-address=127.0.0.3",
            f"--temp-dir={cluster.root / 'ray-w2'}",
            f"--dashboard-agent-listen-port={free_port()}",
            "--disable-usage-stats",
        ],
        {},
    )
    cluster._wait_started("worker2")
    out = cluster.root / "simulate"
    overrides = tiny_experiment(
        synth_root,
        "fl.rounds=5",
        "fl.clients=8",
        "fl.clients_per_round=4",
        "data.samples_per_video=24",
        "platform.workers=2",
        "platform.cpus_per_worker=1",
    )
    sim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fedvsr.cli",
            "simulate",
            "--address",
            cluster.gcs,
            "--out",
            str(out),
            *[a for o in overrides for a in ("--set", o)],
        ],
        env=cluster.env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline, before = time.monotonic() + 300, None
    while before is None and time.monotonic() < deadline and sim.poll() is None:
        if (out / "clients.parquet").is_file():
            clients = pq.read_table(out / "clients.parquet").to_pylist()
            if len({c["node"] for c in clients}) == 2:  # both nodes have trained a client
                _kill_group(cluster.procs["worker2"].pid, signal.SIGKILL)
                before = clients
        time.sleep(0.1)
    log = sim.communicate(timeout=400)[0]
    assert before is not None, log[-4000:]
    assert sim.returncode == 0, log[-4000:]
    rounds = pq.read_table(out / "rounds.parquet").to_pylist()
    assert [r["round"] for r in rounds] == [1, 2, 3, 4, 5] and {r["status"] for r in rounds} == {"ok"}
    assert all(r["aggregated"] == 4 for r in rounds)  # no client left out: the lost one was trained again
    clients = pq.read_table(out / "clients.parquet").to_pylist()
    killed_after = max(c["round"] for c in before)
    later = [c for c in clients if c["round"] > killed_after + 1]  # the round of the kill may still have used it
    assert later and len({c["node"] for c in later}) == 1 and later[0]["node"] in {c["node"] for c in before}
    kinds = [json.loads(line)["kind"] for line in (out / "events.jsonl").read_text().splitlines()]
    assert "worker_died" in kinds
