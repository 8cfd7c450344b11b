"""Result tables in Parquet, written atomically (temp file + rename) so a crash never leaves half a file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


def atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_parquet_atomic(path: str | os.PathLike, table: pa.Table) -> None:
    atomic_write(Path(path), lambda tmp: pq.write_table(table, tmp))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=False)
            f.write("\n")

    atomic_write(Path(path), write)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    atomic_write(Path(path), write)


class ResultsStore:
    """``rounds.parquet`` (one row per round) and ``clients.parquet`` (one row per client-round).

    Rows are kept in memory and both files are rewritten atomically after every round. On resume,
    rows of rounds after the checkpointed round are discarded (they were not checkpointed)."""

    def __init__(self, out_dir: str | os.PathLike, keep_until_round: int = 0) -> None:
        self.out = Path(out_dir)
        self.rounds: list[dict[str, Any]] = []
        self.clients: list[dict[str, Any]] = []
        if keep_until_round > 0:
            for name, rows in (("rounds", self.rounds), ("clients", self.clients)):
                path = self.out / f"{name}.parquet"
                if path.exists():
                    rows += [r for r in pq.read_table(path).to_pylist() if r["round"] <= keep_until_round]

    def append(self, round_row: dict[str, Any], client_rows: list[dict[str, Any]]) -> None:
        self.rounds.append(round_row)
        self.clients.extend(client_rows)
        write_parquet_atomic(self.out / "clients.parquet", pa.Table.from_pylist(self.clients))
        write_parquet_atomic(self.out / "rounds.parquet", pa.Table.from_pylist(self.rounds))
