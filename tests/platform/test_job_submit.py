"""A two-node Ray cluster on loopback, started here with `ray start` and Ray's token authentication on, as
cluster.yaml starts one: a sweep submitted with `ray job submit --working-dir` runs its trials on both nodes,
`fedvsr best` reads its results, and drivers without the cluster's token are refused with clear messages.

Every address given here is 127.0.0.1. Ray itself replaces a loopback address with this machine's own interface
address as the nodes' address (as every local ``ray.init()`` does; Ray's loopback-only mode refuses a second
node), so nothing leaves the machine. The cluster has its own temp dir, ports and HOME (no ~/.ray/auth_token of
this machine is read; each node has a temp dir of its own, as on separate machines, where Ray keeps the job's
working directory), and is torn down by killing its own process groups, never with `ray stop` (which would
stop every Ray on the machine).

Unlike cluster.yaml's head (no CPU for Ray's scheduler), this head offers one CPU, so that two nodes are enough to
show trials spread over nodes: each trial needs one CPU for its one client worker, and two run at once.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray
import yaml

from fedvsr.platform.cluster import SharedStorageError, check_nodes_see
from tests.conftest import tiny_fixed

pytestmark = pytest.mark.slow
# the dashboard (Ray's job-submission server) needs Ray's "default" extra: ray[default] in pyproject.toml
pytest.importorskip("aiohttp", reason="ray job submit needs the dashboard: pip install 'ray[default]'")

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray")) if Path(sys.executable).with_name("ray").exists() else "ray"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _base_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH", "RAY_API_SERVER"))}
    env.update(HOME=str(home), RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(REPO))
    return env


class LoopbackCluster:
    """A head and one worker node, each a `ray start --block` in its own process group."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.token_file = root / "token"
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        self.gcs = f"127.0.0.1:{self.gcs_port}"
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        (root / "home").mkdir()
        self.procs: dict[str, subprocess.Popen] = {}
        #: what a driver that has the cluster's token runs with
        self.env = {**_base_env(root / "home"), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_file)}

    def no_token_env(self, **extra: str) -> dict[str, str]:
        env = _base_env(self.root / "home")
        env.update(extra)
        return env

    def start(self) -> None:
        self.token_file.write_text(secrets.token_hex(32))
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
                '--resources={"head_node": 1}',
                f"--temp-dir={self.root / 'ray'}",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
                f"--ray-client-server-port={free_port()}",
                f"--dashboard-agent-listen-port={free_port()}",
                "--disable-usage-stats",
            ],
            {},
        )
        self._wait_for_gcs()  # the worker joins while the head still starts its dashboard
        self._spawn(
            "worker",
            [
                RAY,
                "start",
                "--block",
                f"--address={self.gcs}",
                "--num-cpus=1",
                '--resources={"worker_node": 1}',
                f"--temp-dir={self.root / 'ray-worker'}",
                f"--dashboard-agent-listen-port={free_port()}",
                "--disable-usage-stats",
            ],
            {},
        )
        self._wait_started("head")
        self._wait_started("worker")

    def _spawn(self, name: str, cmd: list[str], extra_env: dict[str, str]) -> None:
        log = open(self.root / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
        self.procs[name] = subprocess.Popen(
            cmd, env={**self.env, **extra_env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def _wait_for_gcs(self, timeout: float = 120.0) -> None:
        from fedvsr.platform.cluster import ClusterUnreachable, probe_gcs

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.procs["head"].poll() is None:
            try:
                return probe_gcs(self.gcs, timeout=2)
            except ClusterUnreachable:
                time.sleep(0.5)
        self._wait_started("head", 0)  # raises with the head's output

    def _wait_started(self, name: str, timeout: float = 120.0) -> None:
        log = self.root / f"{name}.log"
        deadline = time.monotonic() + timeout
        while True:
            if "Ray runtime started" in log.read_text():
                return
            if self.procs[name].poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        raise RuntimeError(f"`ray start` of the {name} did not start; its output:\n{log.read_text()[-3000:]}")

    def nodes(self) -> list[dict]:
        """The alive nodes, from the dashboard's REST API (with the token, as an HTTP bearer)."""
        request = urllib.request.Request(
            f"{self.dashboard}/api/v0/nodes?limit=100",
            headers={"Authorization": f"Bearer {self.token_file.read_text()}"},
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            rows = json.load(reply)["data"]["result"]["result"]
        return [r for r in rows if r["state"] == "ALIVE"]

    def stop(self) -> None:
        for proc in reversed(self.procs.values()):
            _kill_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 3
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _kill_group(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        for pid in _pids_mentioning(str(self.root)):  # a job's driver runs in a session of its own
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _pids_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def started(make, prefix: str):
    """``make(root)`` started in a fresh short folder under /tmp (Ray's socket paths live under it), yielded, then
    stopped and its folder removed: the body of a module-scoped cluster fixture."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    c = make(root)
    try:
        c.start()
        yield c
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    yield from started(LoopbackCluster, "fvc-")


def _run(cmd: list[str], env: dict[str, str], timeout: float = 120, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_a_sweep_submitted_as_a_job_runs_on_both_nodes_and_best_reads_it(cluster, synth_root):
    nodes = cluster.nodes()
    assert len(nodes) == 2
    spec = cluster.root / "spec.yaml"
    out = cluster.root / "sweep"
    fixed = {**tiny_fixed(synth_root, 1), "platform.cpus_per_worker": 1}
    spec.write_text(
        yaml.safe_dump(
            {"search": "grid", "scheduler": "none", "fixed": fixed, "params": {"fl.lr": {"grid": [0.001, 0.003]}}}
        )
    )

    job = _run(
        [
            RAY,
            "job",
            "submit",
            "--address",
            cluster.dashboard,
            "--working-dir",
            str(REPO),
            "--",
            sys.executable,
            "-m",
            "fedvsr.cli",
            "sweep",
            str(spec),
            "--out",
            str(out),
            "--concurrent",
            "2",
        ],
        cluster.env,
        timeout=420,
    )
    log = job.stdout + job.stderr
    assert job.returncode == 0, log[-4000:]
    assert f"fedvsr sweep: all 2 nodes of the cluster see {out}" in log  # the shared-folder check ran
    assert "Job 'raysubmit_" in log and "succeeded" in log

    rows = pq.read_table(out / "trials.parquet").to_pylist()
    assert len(rows) == 2 and {r["status"] for r in rows} == {"finished"}
    assert [r["rounds_run"] for r in rows] == [1, 1], rows
    # one trial per node: each node has one CPU and each trial's worker needs one
    assert {r["node_id"] for r in rows} == {n["node_id"] for n in nodes}
    assert {r["node_ip"] for r in rows} == {n["node_ip"] for n in nodes}

    best = _run([sys.executable, "-m", "fedvsr.cli", "best", str(out)], cluster.no_token_env())
    assert best.returncode == 0, best.stderr
    winner = max(rows, key=lambda r: r["final_psnr"])
    assert best.stdout.startswith(f"# fedvsr best: sweep/{winner['trial']}: final_psnr = ")
    assert yaml.safe_load(best.stdout)["fl"]["lr"] == winner["fl.lr"]


def test_simulate_spreads_its_clients_over_both_nodes(cluster, synth_root):
    """Two client workers of one CPU each, one per node; clients.parquet's `node` names the Ray node of the worker
    that trained each client (docs/cluster.md's per-node counts come from it)."""
    from tests.conftest import tiny_experiment

    out = cluster.root / "spread"
    overrides = tiny_experiment(
        synth_root,
        "fl.rounds=1",
        "fl.clients=8",
        "fl.clients_per_round=8",
        "platform.workers=2",
        "platform.cpus_per_worker=1",
    )
    sim = _run(
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
        cluster.env,
        timeout=300,
    )
    assert sim.returncode == 0, (sim.stdout + sim.stderr)[-4000:]
    clients = pq.read_table(out / "clients.parquet").to_pylist()
    assert len(clients) == 8 and {c["status"] for c in clients} == {"ok"}
    per_node = {n["node_id"]: sum(c["node"] == n["node_id"] for c in clients) for n in cluster.nodes()}
    assert sum(per_node.values()) == 8 and min(per_node.values()) >= 1, per_node


def test_job_submit_without_the_token_is_refused(cluster):
    job = _run(
        [RAY, "job", "submit", "--address", cluster.dashboard, "--", "echo", "never runs"], cluster.no_token_env()
    )
    assert job.returncode != 0
    assert "Unauthorized: Missing authentication token" in job.stderr
    assert "never runs" not in job.stdout


#: what a driver without the cluster's token is told, by what it has
REFUSALS = {
    "no-mode": (
        {},
        "has token authentication on and refused this driver, which sends no token (RAY_AUTH_MODE is not 'token' here)",
    ),
    "wrong-token": (
        {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "not-the-token"},
        "refused this driver's token, read from the RAY_AUTH_TOKEN environment variable: it is not the "
        "token the cluster's nodes were started with",
    ),
    "no-token": ({"RAY_AUTH_MODE": "token"}, "RAY_AUTH_MODE=token but this driver has no Ray token to send"),
}


def test_simulate_without_the_token_is_a_clear_error(cluster, tmp_path):
    started = time.monotonic()
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "fedvsr.cli", "simulate", "--address", cluster.gcs, "--out", str(tmp_path / name)],
            env=cluster.no_token_env(**env),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (env, _) in REFUSALS.items()
    }  # side by side: each is mostly Python's imports
    for name, proc in procs.items():
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 2, (name, stderr[-3000:])
        assert stderr.startswith("fedvsr: cluster error: ") and REFUSALS[name][1] in stderr, (name, stderr)
        assert f"127.0.0.1:{cluster.gcs_port}" in stderr and "RAY_AUTH_TOKEN_PATH" in stderr
        assert "Traceback" not in stderr
        assert not (tmp_path / name).exists()
    assert time.monotonic() - started < 90  # Ray alone retries for 20 s each and ends in "Failed to connect"


#: what `fedvsr check DASHBOARD_URL` (the address `ray job submit` takes) says about this machine's token
DASHBOARD_REFUSALS = {
    "no-mode": "has token authentication on and refused this machine, which sends no token (RAY_AUTH_MODE is not "
    "'token' here)",
    "wrong-token": "refused this machine's token, read from the RAY_AUTH_TOKEN environment variable: it is not the "
    "token the cluster's nodes were started with",
    "no-token": "RAY_AUTH_MODE=token but this machine has no Ray token to send to the dashboard",
}


def test_check_says_whether_job_submit_and_a_driver_will_be_let_in(cluster):
    """`fedvsr check` before `ray job submit` (through the dashboard, as over `ray dashboard`'s tunnel) and before a
    driver joins (the GCS): our one-line answer instead of Ray's traceback, side by side in subprocesses (Ray reads
    the token once per process)."""

    def check(address: str, env: dict[str, str]) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "fedvsr.cli", "check", address]
        return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    procs = {("ok", "dashboard"): check(cluster.dashboard, cluster.env), ("ok", "gcs"): check(cluster.gcs, cluster.env)}
    procs |= {
        (name, "dashboard"): check(cluster.dashboard, cluster.no_token_env(**env))
        for name, (env, _) in REFUSALS.items()
    }
    outputs = {key: proc.communicate(timeout=120) + (proc.returncode,) for key, proc in procs.items()}

    token = f"token from the file {cluster.token_file} (RAY_AUTH_TOKEN_PATH)"
    stdout, stderr, code = outputs["ok", "dashboard"]
    assert code == 0, stderr
    dashboard = f"the Ray dashboard at {cluster.dashboard} (Ray {ray.__version__})"
    assert stdout.strip() == f"ok: {dashboard} accepts `ray job submit` from here ({token})"
    stdout, stderr, code = outputs["ok", "gcs"]
    assert code == 0, stderr
    assert stdout.strip() == f"ok: the Ray cluster at {cluster.gcs} accepts a fedvsr driver from here ({token})"
    for name, phrase in DASHBOARD_REFUSALS.items():
        stdout, stderr, code = outputs[name, "dashboard"]
        assert code == 2 and stdout == "", (name, stderr)
        assert stderr.startswith("fedvsr: cluster error: ") and phrase in stderr, (name, stderr)
        assert cluster.dashboard in stderr and "RAY_AUTH_TOKEN_PATH" in stderr and "Traceback" not in stderr


def test_a_node_that_does_not_see_the_sweep_folder_is_named(ray_local, tmp_path):
    """The check `fedvsr sweep` runs on every node of a cluster before its first trial (here on the one node of the
    test session's local Ray), and what it says when a node sees another folder, none, or no dataset."""
    (tmp_path / "sweep-id").write_text("abc\n")
    assert check_nodes_see(tmp_path, "abc", {"data.root": str(tmp_path)}) == 1
    hint = "must be on a file system every node mounts at the same path"
    with pytest.raises(SharedStorageError, match=rf"1 of 1 nodes of the cluster do not see .*another sweep.*{hint}"):
        check_nodes_see(tmp_path, "another-sweep")
    with pytest.raises(SharedStorageError, match=r"node \S+ \(\w+\): .*sweep-id' is not there"):
        check_nodes_see(tmp_path / "elsewhere", "abc")
    with pytest.raises(SharedStorageError, match="data.root = '/no/such/folder' is not a folder there"):
        check_nodes_see(tmp_path, "abc", {"data.root": "/no/such/folder"})


def test_a_dashboard_url_given_as_the_cluster_address_is_named():
    from fedvsr.platform.cluster import ClusterUnreachable, split_address

    with pytest.raises(ClusterUnreachable, match=r"'http://127.0.0.1:8265' is an HTTP address \(the dashboard's"):
        split_address("http://127.0.0.1:8265")
