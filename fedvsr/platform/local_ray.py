"""A local Ray for one driver: on the loopback address only, with a token of its own, and gone with the driver.

* **Loopback.** Ray on Linux replaces a loopback node address with the machine's interface address (so that other
  nodes could join) and its GCS, raylet and agents then listen on every interface. :func:`start_local_ray` starts
  it with ``_node_ip_address="127.0.0.1"`` and Ray's multi-node mode off for that call (``ENABLE_RAY_CLUSTER``, the
  switch Ray itself turns off on macOS and Windows): every Ray process of the run listens on 127.0.0.1 only.
* **Token.** Ray's token authentication on (``RAY_AUTH_MODE=token``) with a fresh 256-bit token per driver process
  (``RAY_AUTH_TOKEN``, in the environment of the driver and the Ray processes it starts, never written to disk), so
  another user of the machine, who can reach 127.0.0.1 too, cannot attach a driver and run code in the run: Ray
  refuses a client without the token. It is not Ray's shared ``~/.ray/auth_token`` (which Ray 2.60's own local
  default would use, written with the default umask: 0644 here) and an explicit ``RAY_AUTH_MODE=disabled`` does
  not turn it off for a local run.
* **Small results inline.** A task's result up to :data:`DIRECT_RESULT_BYTES` goes back in the reply, not
  through the object store (on a cluster, the head's ``ray start --system-config`` sets it, as the shipped
  cluster configs do: docs/gpu-and-overhead.md).
* **Clean-up.** A watchdog (:mod:`fedvsr.platform.reaper`) ends the Ray processes the driver started when the
  driver dies, ``kill -9`` included, instead of the minute Ray's agents otherwise linger.

A cluster (``platform.address``, ``ray job submit``) is joined as before: its own token and binding apply
(fedvsr.platform.cluster, docs/cluster.md).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

LOOPBACK = "127.0.0.1"
#: task results up to this size travel inline in the reply to the caller instead of through the shared-memory
#: object store (Ray's ``max_direct_call_object_size``, 100 KiB by default). Measured here (2 cores, Ray 2.60, an
#: actor returning a float32 array, 60 calls): 128 KiB 1.8-2.1 ms a call inline against 2.7-3.1 ms through the
#: store, 512 KiB 2.2-2.7 against 3.4-3.5, but 1 MiB 4.0-4.7 against 3.6-3.8: so inline up to 512 KiB. A small
#: model's client update (efvsr/tiny: 128 KiB) is such a result; larger models still go through the store.
DIRECT_RESULT_BYTES = 512 << 10
_TOKEN: str | None = None
_REAPERS: list[subprocess.Popen] = []


def process_token() -> str:
    """This driver process's token for the local Rays it starts (one per process: Ray caches the token it read)."""
    global _TOKEN
    if _TOKEN is None:
        _TOKEN = secrets.token_hex(32)  # what `ray get-auth-token --generate` makes: 256 random bits
    return _TOKEN


def _children(pid: int) -> set[int]:
    if not os.path.isdir("/proc"):
        return set()
    from fedvsr.platform.reaper import process_table

    return {child for child, (ppid, _) in process_table().items() if ppid == pid}


def _is_ray(pid: int, ray_dir: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return ray_dir.encode() in f.read()
    except OSError:
        return False


def start_local_ray(**init_kwargs) -> None:
    """``ray.init(**init_kwargs)`` of a new local Ray, closed to the network and tied to this process (module
    docstring)."""
    import ray
    from ray._private import ray_constants
    from ray._raylet import AuthenticationTokenLoader, Config

    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = process_token()
    Config.initialize("")  # this process reads the mode again, as Ray's own token set-up does
    AuthenticationTokenLoader.instance().reset_cache()
    before = _children(os.getpid())
    multi_node = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False  # keep 127.0.0.1 as the node's address (module docstring)
    try:
        system_config = {"max_direct_call_object_size": DIRECT_RESULT_BYTES, **init_kwargs.pop("_system_config", {})}
        ray.init(_node_ip_address=LOOPBACK, _system_config=system_config, **init_kwargs)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = multi_node
    ray_dir = str(Path(ray.__file__).parent)
    started = sorted(pid for pid in _children(os.getpid()) - before if _is_ray(pid, ray_dir))
    if started:
        _start_reaper(started)


def _start_reaper(ray_pids: list[int]) -> None:
    for old in [p for p in _REAPERS if p.poll() is not None]:  # reap the watchdogs of earlier local Rays
        _REAPERS.remove(old)
    cmd = [sys.executable, "-I", str(Path(__file__).with_name("reaper.py")), str(os.getpid()), *map(str, ray_pids)]
    _REAPERS.append(
        subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env={"PATH": os.environ.get("PATH", "")},
        )
    )
