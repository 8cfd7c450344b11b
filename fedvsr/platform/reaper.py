"""Watchdog of a local Ray: when the driver that started it dies, however (``kill -9`` included), Ray goes too.

A local ``ray.init`` starts Ray's processes as children of the driver. When the driver dies, Ray's own fate sharing
(``PR_SET_PDEATHSIG``) ends the GCS and the raylet at once and the raylet's workers follow; but the raylet's agents
(``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``) first try to report the raylet's death to the GCS, which is dead
too, and linger for up to a minute (Ray 2.60: ``publish_error_to_driver`` waits 60 s). This process is started by
the driver right after ``ray.init``, in a session of its own, with the pids of the Ray processes the driver started.
Twice a second it notes every process descended from them (pid and start time, so that a pid reused later is never
taken for one of them). When its parent, the driver, is gone, it SIGKILLs those still alive and exits; when Ray's
processes end while the driver lives on (``ray.shutdown()``), it kills whatever of them is left a few seconds later
and exits. Linux only (it reads /proc); standard library only, so that it starts in milliseconds with ``python -I``.

    python -I reaper.py DRIVER_PID RAY_PID...
"""

from __future__ import annotations

import os
import signal
import sys
import time

#: seconds between two looks at the process table
INTERVAL = 0.5
#: seconds Ray gets to end its own processes after ``ray.shutdown()`` before the rest are killed
GRACE = 5.0


def process_table() -> dict[int, tuple[int, int]]:
    """Every process: pid -> (parent pid, start time in clock ticks since boot)."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        table[int(name)] = (int(fields[1]), int(fields[19]))
    return table


def descendants(table: dict[int, tuple[int, int]], roots: list[int]) -> list[int]:
    """``roots`` and every process below them."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def kill(known: dict[int, int]) -> list[int]:
    """SIGKILL the processes of ``known`` (pid -> start time) still alive as themselves; returns their pids."""
    table = process_table()
    killed = []
    for pid, start in known.items():
        if table.get(pid, (0, -1))[1] == start:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except OSError:
                pass
    return killed


def watch(driver: int, roots: list[int], interval: float = INTERVAL, grace: float = GRACE) -> None:
    table = process_table()
    roots_known = {pid: table[pid][1] for pid in roots if pid in table}
    known = dict(roots_known)
    while True:
        if os.getppid() != driver:  # the driver died: this process was handed to another parent
            kill(known)
            return
        table = process_table()
        if not any(table.get(pid, (0, -1))[1] == start for pid, start in roots_known.items()):
            time.sleep(grace)  # Ray was shut down by its driver
            kill(known)
            return
        known = {pid: start for pid, start in known.items() if table.get(pid, (0, -1))[1] == start}
        alive = [pid for pid, start in roots_known.items() if table.get(pid, (0, -1))[1] == start]
        for pid in descendants(table, alive):
            known.setdefault(pid, table[pid][1])
        time.sleep(interval)


if __name__ == "__main__":
    watch(int(sys.argv[1]), [int(a) for a in sys.argv[2:]])
