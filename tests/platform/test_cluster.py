"""Joining a Ray cluster: an address where no cluster answers is a clear error, within seconds."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fedvsr.platform.cluster import ClusterAuthRefused, ClusterUnreachable, check_cluster, probe_gcs, split_address

REPO = Path(__file__).resolve().parents[2]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the socket goes


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:6380", ("127.0.0.1", 6380)),
        ("ray://127.0.0.1:10001", ("127.0.0.1", 10001)),
        ("localhost", ("localhost", 6379)),
        ("[::1]:7000", ("::1", 7000)),
    ],
)
def test_split_address(address, expected):
    assert split_address(address) == expected


@pytest.mark.parametrize(
    ("address", "message"),
    [(":6379", "names no host"), ("127.0.0.1:port", "not a number"), ("127.0.0.1:70000", "out of range")],
)
def test_malformed_addresses(address, message):
    with pytest.raises(ClusterUnreachable, match=message):
        split_address(address)


def test_closed_port_is_refused_and_named():
    port = closed_port()
    message = rf"no Ray cluster at 127\.0\.0\.1:{port}: .*refused.*ray start --head"
    with pytest.raises(ClusterUnreachable, match=message):
        probe_gcs(f"127.0.0.1:{port}")


def _server(reply: bytes | None):
    """A loopback TCP server that accepts one connection and sends ``reply`` (or stays silent)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    stop = threading.Event()

    def serve():
        conn, _ = sock.accept()
        with conn:
            conn.recv(64)
            if reply is not None:
                conn.sendall(reply)
            stop.wait(5)

    threading.Thread(target=serve, daemon=True).start()
    return sock, stop


def test_silent_server_times_out_with_the_address():
    sock, stop = _server(None)
    port = sock.getsockname()[1]
    try:
        with pytest.raises(ClusterUnreachable, match=rf"no Ray cluster answered at 127\.0\.0\.1:{port} within 0\.5 s"):
            probe_gcs(f"127.0.0.1:{port}", timeout=0.5)
    finally:
        stop.set()
        sock.close()


def test_other_protocol_is_not_taken_for_ray():
    sock, stop = _server(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    port = sock.getsockname()[1]
    try:
        with pytest.raises(ClusterUnreachable, match="answers, but not as a Ray cluster"):
            probe_gcs(f"127.0.0.1:{port}")
    finally:
        stop.set()
        sock.close()


def test_an_http2_server_passes_the_probe():
    settings = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # an empty SETTINGS frame, as a gRPC server sends first
    sock, stop = _server(settings)
    try:
        probe_gcs(f"127.0.0.1:{sock.getsockname()[1]}")
    finally:
        stop.set()
        sock.close()


def test_check_of_a_dashboard_url_where_nothing_listens_names_the_tunnel(monkeypatch):
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    port = closed_port()
    message = rf"no Ray dashboard answers at http://127\.0\.0\.1:{port}: .*refused.*`ray dashboard cluster\.yaml`"
    with pytest.raises(ClusterUnreachable, match=message):
        check_cluster(f"http://127.0.0.1:{port}/")


@pytest.mark.parametrize(
    ("status", "error", "message"),
    [
        (404, ClusterUnreachable, "answers HTTP 404 to the job API: is it a Ray dashboard?"),
        (401, ClusterAuthRefused, "has token authentication on and refused this machine, which sends no token"),
    ],
)
def test_check_of_a_dashboard_maps_what_the_server_answers(monkeypatch, status, error, message):
    """The HTTP statuses Ray's dashboard answers (401: no token, 403: another one; tested against a real dashboard in
    test_job_submit.py), here from a plain HTTP server."""
    import http.server

    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args):
            pass

    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    server = http.server.HTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(error, match=message):
            check_cluster(f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()


def _simulate(tmp_path, *sets: str, env: dict | None = None) -> subprocess.CompletedProcess:
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "fedvsr.cli", "simulate", "--out", str(out), *[a for s in sets for a in ("--set", s)]]
    run_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    run_env.pop("RAY_ADDRESS", None)
    # a hang guard, not a speed assertion: without the probe this took minutes
    return subprocess.run(cmd, capture_output=True, text=True, env=run_env, timeout=120)


def test_simulate_on_an_unreachable_address_is_a_clear_error(tmp_path):
    port = closed_port()
    proc = _simulate(tmp_path, f"platform.address=127.0.0.1:{port}")
    assert proc.returncode == 2
    assert f"fedvsr: cluster error: no Ray cluster at 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()  # nothing written for a run that never started


def _gcs_addresses() -> list[str]:
    from ray._private.services import find_gcs_addresses

    find_gcs_addresses.cache_clear()
    return list(find_gcs_addresses())


def test_simulate_with_auto_and_no_cluster_is_a_clear_error(tmp_path):
    import ray

    # Ray's 'auto' joins any GCS process it finds with ps, whoever started it. The suite's own session Ray
    # (the ray_local fixture of earlier tests) is stopped for this test and started again after it.
    own = ray.get_runtime_context().gcs_address if ray.is_initialized() else None
    if [a for a in _gcs_addresses() if a != own]:
        pytest.skip("another Ray instance runs on this machine: 'auto' would join it")
    if own is not None:
        ray.shutdown()
        for _ in range(100):  # the GCS process exits shortly after shutdown
            if not _gcs_addresses():
                break
            time.sleep(0.1)
    try:
        ray_tmp = tmp_path / "ray"  # a temp dir where no `ray start` ever ran
        ray_tmp.mkdir()
        proc = _simulate(tmp_path, "platform.address=auto", env={"RAY_TMPDIR": str(ray_tmp)})
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "platform.address = 'auto' but no running Ray cluster was found" in proc.stderr
        assert "Traceback" not in proc.stderr
    finally:
        if own is not None:  # as tests/conftest.py's ray_local started it
            ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
