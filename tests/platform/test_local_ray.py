"""A local `fedvsr simulate` and its Ray: on 127.0.0.1 only, refusing a driver without the run's token, and gone
after a ``kill -9`` of the driver (fedvsr.platform.local_ray, fedvsr.platform.reaper).

One real run (the tiny experiment with many rounds, so that it is still training) in a subprocess of its own
session; its Ray processes are read from /proc (the driver's descendants), their listening sockets from
/proc/net/tcp and tcp6. Linux only. Without Ray: the watchdog on a tree of `sleep` processes, and the split of
Ray's console output (fedvsr.platform.ray_console).
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedvsr.platform.reaper import descendants, process_table
from tests.conftest import tiny_experiment

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc")
REPO = Path(__file__).resolve().parents[2]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def ray_processes(driver: int) -> dict[int, int]:
    """The Ray processes below ``driver`` (pid -> start time), its watchdog left out."""
    table = process_table()
    return {
        pid: table[pid][1] for pid in descendants(table, [driver]) if pid != driver and "reaper.py" not in cmdline(pid)
    }


def alive(known: dict[int, int]) -> list[str]:
    table = process_table()
    return [f"{pid} {cmdline(pid)[:60]}" for pid, start in known.items() if table.get(pid, (0, -1))[1] == start]


def kill_left(known: dict[int, int]) -> None:
    from fedvsr.platform.reaper import kill

    kill(known)


def _address(hex_ip: str) -> str:
    raw = bytes.fromhex(hex_ip)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    return socket.inet_ntop(socket.AF_INET6, b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))


def listening(pids) -> list[tuple[int, str, int]]:
    """(pid, address, port) of every listening TCP socket the processes ``pids`` hold."""
    owner = {}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                owner[int(link[8:-1])] = pid
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[9]) in owner:  # state 0A: LISTEN
                host, port = fields[1].split(":")
                found.append((owner[int(fields[9])], _address(host), int(port, 16)))
    return found


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or (ip.version == 6 and ip.ipv4_mapped is not None and ip.ipv4_mapped.is_loopback)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH"))}
    return {**env, "PYTHONPATH": str(REPO), **extra}


class LocalRun:
    """A `fedvsr simulate` subprocess and what it printed so far."""

    def __init__(self, out: Path, proc: subprocess.Popen) -> None:
        self.out, self.proc, self.lines = out, proc, []

    def read_until(self, prefix: str) -> None:
        """Read the console until a line starting with ``prefix`` (a hang guard, not a speed assertion: the run
        prints a line per round)."""
        for line in self.proc.stdout:
            self.lines.append(line)
            if line.startswith(prefix):
                return
        raise AssertionError("the run ended:\n" + "".join(self.lines[-50:]))


@pytest.fixture(scope="module")
def local_run(synth_root, tmp_path_factory):
    """A `fedvsr simulate` training, its first round done: (the run, its Ray processes). Every client in every
    round, and the worker that starts client 3 in round 2 is SIGKILLed (a death the coordinator handles)."""
    root = tmp_path_factory.mktemp("local")
    out = root / "run"
    sets = [a for s in tiny_experiment(synth_root, "fl.rounds=1000", "fl.clients_per_round=4") for a in ("--set", s)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedvsr.cli", "simulate", "--out", str(out), *sets],
        env=clean_env(FEDVSR_FAULT=f"kill:2:3:{root / 'fault-fired'}"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    run = LocalRun(out, proc)
    run.read_until("round   1 ")
    known = ray_processes(proc.pid)
    try:
        yield run, known
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        kill_left(known)  # whatever a failed test left


@pytest.mark.slow
def test_a_local_run_listens_on_the_loopback_address_only(local_run):
    _, known = local_run
    names = " ".join(cmdline(pid) for pid in known)
    assert "gcs_server" in names and "raylet" in names and "ray::DashboardAgent" in names
    sockets = listening(known)
    gcs = [s for s in sockets if "gcs_server" in cmdline(s[0])]
    assert gcs, sockets  # the GCS listens (and so do the raylet, the agents and the workers)
    assert [s for s in sockets if not is_loopback(s[1])] == []
    assert len({s[0] for s in sockets}) >= 4  # GCS, raylet, agents, workers: every one of them on 127.0.0.1


def gcs_address(known) -> str:
    """The GCS's address, as the raylet was given it."""
    [line] = [cmdline(pid) for pid in known if "raylet/raylet " in cmdline(pid)]
    return line.split("--gcs-address=")[1].split()[0]


def test_a_local_runs_ray_returns_small_results_inline(local_run):
    """The local Ray sends task results up to DIRECT_RESULT_BYTES back in the reply (efvsr/tiny's client update,
    128 KiB, among them), where Ray's default sends those above 100 KiB through the object store: the system
    config the GCS was started with (and hands to every raylet and worker) says so."""
    import base64
    import json

    from fedvsr.platform.local_ray import DIRECT_RESULT_BYTES

    _, known = local_run
    [line] = [cmdline(pid) for pid in known if "gcs_server " in cmdline(pid)]
    config = json.loads(base64.b64decode(line.split("--config_list=")[1].split()[0]))
    assert config["max_direct_call_object_size"] == DIRECT_RESULT_BYTES == 512 * 1024


@pytest.mark.slow
def test_a_driver_without_the_runs_token_is_refused(local_run, tmp_path):
    _, known = local_run
    address = gcs_address(known)
    assert address.startswith("127.0.0.1:")
    home = tmp_path / "home"  # no ~/.ray/auth_token of this machine
    home.mkdir()
    join = f"import ray; ray.init(address={address!r}, logging_level='ERROR'); print('joined')"
    probe = f"from fedvsr.platform.cluster import probe_auth; probe_auth({address!r}); print('accepted')"
    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").write_text("0" * 64)
    # the run's token (the raylet's environment holds it, as the driver set it)
    [raylet] = [pid for pid in known if "raylet/raylet " in cmdline(pid)]
    environ = dict(v.split("=", 1) for v in Path(f"/proc/{raylet}/environ").read_text().split("\0") if "=" in v)
    assert environ["RAY_AUTH_MODE"] == "token" and len(environ["RAY_AUTH_TOKEN"]) == 64
    drivers = {
        # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: this driver keeps 127.0.0.1 (else Ray swaps in the machine's interface
        # address, where nothing of the run listens, and retries for minutes): it reaches the GCS, which refuses it;
        # it sends no token (no RAY_AUTH_MODE)
        "refused": (join, {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}),
        # Ray's default token file (~/.ray/auth_token) does not open it either: the run has a token of its own
        "wrong": (probe, {"RAY_AUTH_MODE": "token"}),
        # the run's token does: the refusals were the token's
        "right": (probe, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": environ["RAY_AUTH_TOKEN"]}),
    }
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-c", code],
            env=clean_env(HOME=str(home), **extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (code, extra) in drivers.items()
    }  # side by side: the refused driver mostly waits on Ray's retries
    said = {name: proc.communicate(timeout=180) for name, proc in procs.items()}
    stdout, stderr = said["refused"]
    assert procs["refused"].returncode != 0 and "joined" not in stdout
    assert "AuthenticationError: RPC error: InvalidAuthToken: Authentication token is missing or incorrect" in stderr
    assert "refused this driver's token" in said["wrong"][1]
    assert said["right"][0].strip() == "accepted", said["right"][1][-2000:]


@pytest.mark.slow
def test_a_handled_worker_death_shows_our_line_and_leaves_rays_messages_in_the_log(local_run):
    run, _ = local_run
    run.read_until("round   2 ")
    assert "1 retried" in run.lines[-1]  # our line: the client of the killed worker was trained again
    console = "".join(run.lines)
    for rays in ("(raylet)", "A worker died", "Traceback", "ray::"):
        assert rays not in console, console
    log = (run.out / "ray.log").read_text()
    assert "(raylet) A worker died or was killed while executing a task" in log
    events = (run.out / "events.jsonl").read_text()
    assert '"kind": "worker_died"' in events and '"kind": "client_retried"' in events


@pytest.mark.slow
def test_a_killed_driver_takes_its_ray_processes_with_it(local_run):
    run, known = local_run
    proc = run.proc
    known.update(ray_processes(proc.pid))  # the workers started since
    assert len(known) >= 6  # GCS, raylet, log monitor, two agents, the coordinator and two client workers
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # a bound, not a speed assertion: without the watchdog Ray's agents stay for about a minute
    deadline = time.monotonic() + 15
    while alive(known) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert alive(known) == []
    reapers = [pid for pid in process_table() if "reaper.py" in cmdline(pid) and f" {proc.pid} " in cmdline(pid)]
    assert reapers == []  # the watchdog is gone too


# ----------------------------------------------------------------------------- without Ray


DRIVER = """
import importlib.util, subprocess, sys, time
spec = importlib.util.spec_from_file_location("local_ray", {path!r})  # the module alone: no torch, no Ray
local_ray = importlib.util.module_from_spec(spec)
spec.loader.exec_module(local_ray)
# a 'Ray' process of this driver with a child of its own, as the raylet has its agents
ray = subprocess.Popen(["sh", "-c", "sleep 300 & sleep 300"])
time.sleep(0.5)
local_ray._start_reaper([ray.pid])
print(ray.pid, flush=True)
time.sleep(300)
"""


def test_the_watchdog_kills_the_processes_below_the_dead_drivers_ray(tmp_path):
    script = DRIVER.format(path=str(REPO / "fedvsr" / "platform" / "local_ray.py"))
    driver = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, start_new_session=True)
    known: dict[int, int] = {}
    try:
        ray_pid = int(driver.stdout.readline())
        time.sleep(1.5)  # the watchdog has looked at the tree at least once
        known = ray_processes(driver.pid)
        assert ray_pid in known and len(known) == 3  # sh and its two sleeps
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        deadline = time.monotonic() + 10  # a bound: the watchdog looks twice a second
        while alive(known) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert alive(known) == []
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        kill_left(known)


def test_tracebacks_are_split_from_the_rest_of_a_workers_output_across_batches():
    from fedvsr.platform.ray_console import TracebackSplitter

    split = TracebackSplitter().split
    batch = [
        "loading videos",
        "Traceback (most recent call last):",
        '  File "a.py", line 3, in f',
        "    g()",
        "ValueError: bad",
        "",
        "During handling of the above exception, another exception occurred:",
        "",
        "Traceback (most recent call last):",
        '  File "b.py", line 9, in h',
    ]
    console, traced = split("w1", batch)
    assert console == ["loading videos"] and traced == batch[1:]
    assert split("w2", ["    frames of another worker"]) == (["    frames of another worker"], [])
    # worker 1's traceback goes on in its next batch, then its own lines come back
    assert split("w1", ["    raise KeyError('k')", "KeyError: 'k'", "round done"]) == (
        ["round done"],
        ["    raise KeyError('k')", "KeyError: 'k'"],
    )
    header = (
        "Exception raised in creation task: The actor died because of an error raised in its creation task, "
        "\x1b[36mray::Coordinator.__init__()\x1b[39m (pid=3830, ip=127.0.0.1, actor_id=40de)"
    )
    ray_error = [
        header,
        "           ^^^^^^^^",
        '  File "c.py", line 77, in __init__',
        "FileNotFoundError: data.root '/x' is not a folder",
    ]
    assert split("w3", ray_error) == ([], ray_error)


def test_rays_error_channel_and_tracebacks_go_to_the_log_the_rest_to_the_console(tmp_path, monkeypatch):
    from fedvsr.platform import ray_console

    printed = []
    monkeypatch.setattr(ray_console, "_original", lambda data, ignore_prefix: printed.append(data["lines"]))
    monkeypatch.setattr(ray_console, "_log_path", tmp_path / "run" / "ray.log")
    monkeypatch.setattr(ray_console, "_splitter", ray_console.TracebackSplitter())
    ray_console._route({"pid": "raylet", "lines": ["A worker died or was killed while executing a task"]}, False)
    ray_console._route(
        {
            "pid": 7,
            "ip": "127.0.0.1",
            "actor_name": "ClientWorker",
            "lines": ["note", "Traceback (most recent call last):", "  File x", "OSError: gone"],
        },
        False,
    )
    ray_console._route(
        {"pid": "autoscaler", "lines": ["Warning: The following resource request cannot be scheduled"]}, False
    )
    assert printed == [["note"], ["Warning: The following resource request cannot be scheduled"]]
    log = [line.split(" ", 2)[2] for line in (tmp_path / "run" / "ray.log").read_text().splitlines()]
    assert log == [
        "(raylet) A worker died or was killed while executing a task",
        "(ClientWorker pid=7, ip=127.0.0.1) Traceback (most recent call last):",
        "(ClientWorker pid=7, ip=127.0.0.1)   File x",
        "(ClientWorker pid=7, ip=127.0.0.1) OSError: gone",
    ]
