"""Per-client persistent state (SCAFFOLD's control variates), keyed by client id, outside worker memory.

The store is a directory of safetensors files, one per client and round it was written in
(``client_00007.r00012.safetensors``), fronted by a small in-memory cache. The coordinator puts
the states returned in round t with ``commit(t, states)`` (each file fsynced, then the folder)
*before* it writes the round's checkpoint, and prunes old versions only after it, keeping every
version a kept checkpoint may need (:meth:`ClientStateStore.prune`), so a run killed anywhere
in between resumes from a consistent pair: :meth:`ClientStateStore.rollback` drops versions
newer than the checkpointed round. Any worker can train any client: it is handed the client's
state with the client. Run as a Ray actor on the coordinator's node (or used directly in-process).
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np

from fedvsr.platform.checkpoint import load_arrays, save_arrays
from fedvsr.platform.results import fsync_dir, fsync_file

_FILE = re.compile(r"^client_(\d+)\.r(\d+)\.safetensors$")


class ClientStateStore:
    def __init__(self, directory: str | os.PathLike, cache_size: int = 64) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._cache: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()
        self._cache_size = cache_size
        self._versions: dict[int, list[int]] = {}
        for f in self.dir.iterdir():
            m = _FILE.match(f.name)
            if m:
                self._versions.setdefault(int(m[1]), []).append(int(m[2]))
            elif f.name.startswith(".client_"):  # the temp file of a write cut short by a crash
                f.unlink(missing_ok=True)
        for v in self._versions.values():
            v.sort()

    def _path(self, client: int, round: int) -> Path:
        return self.dir / f"client_{client:05d}.r{round:05d}.safetensors"

    def rollback(self, last_round: int) -> int:
        """Forget versions written after ``last_round`` (not covered by the checkpoint); returns how many."""
        dropped = 0
        for client, versions in self._versions.items():
            for r in [r for r in versions if r > last_round]:
                self._path(client, r).unlink(missing_ok=True)
                versions.remove(r)
                dropped += 1
        self._cache.clear()
        return dropped

    def get_many(self, clients: list[int]) -> dict[int, dict[str, np.ndarray] | None]:
        """The latest state of each client, or None for a client never trained."""
        out: dict[int, dict[str, np.ndarray] | None] = {}
        for c in clients:
            if c in self._cache:
                self._cache.move_to_end(c)
                out[c] = self._cache[c]
            elif self._versions.get(c):
                out[c] = self._remember(c, load_arrays(self._path(c, self._versions[c][-1])))
            else:
                out[c] = None
        return out

    def commit(self, round: int, states: dict[int, dict[str, np.ndarray]]) -> int:
        """Persist the states written in ``round`` (on disk when this returns); older versions stay until
        :meth:`prune`."""
        for c, state in states.items():
            save_arrays(self._path(c, round), state, durable=False)
            versions = self._versions.setdefault(c, [])
            if round not in versions:
                versions.append(round)
            self._remember(c, state)
        for c in states:
            fsync_file(self._path(c, round))
        fsync_dir(self.dir)
        return len(states)

    def prune(self, oldest: int) -> int:
        """Remove the versions no checkpoint from round ``oldest`` on can need: per client, those older than its
        newest version at or before ``oldest``; returns how many."""
        removed = 0
        for client, versions in self._versions.items():
            needed = [r for r in versions if r <= oldest][-1:] + [r for r in versions if r > oldest]
            for r in [r for r in versions if r not in needed]:
                self._path(client, r).unlink(missing_ok=True)
                versions.remove(r)
                removed += 1
        return removed

    def _remember(self, client: int, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._cache[client] = state
        self._cache.move_to_end(client)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return state

    def clients(self) -> list[int]:
        return sorted(c for c, v in self._versions.items() if v)
