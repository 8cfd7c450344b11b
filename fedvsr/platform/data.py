"""An experiment's data as the platform meets it: checked by the driver before Ray starts, and the videos left
out recorded in the run folder.

The driver scans and probes the data first (:func:`check_data`: every video decoded once, the answers cached
with the LR cache), so data that cannot make the experiment -- no usable video, fewer than the clients -- stops
the command before Ray starts, naming the files; the coordinator then reads the same answers from the cache.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from fedvsr.config import ConfigError, ExperimentConfig
from fedvsr.data.sources import DataError, ExperimentData, experiment_data, left_out_counts
from fedvsr.fl.partition import partition_videos
from fedvsr.platform.results import write_parquet_atomic

log = logging.getLogger(__name__)

#: the run folder's table of the videos left out: ``path``, ``kind`` (unreadable, too short, too small, ...)
#: and ``reason``
LEFT_OUT_TABLE = "data_skipped.parquet"


class _Recorder(Protocol):
    def __call__(self, kind: str, message: str, **fields: Any) -> None: ...


def check_data(cfg: ExperimentConfig, out: str | os.PathLike) -> ExperimentData:
    """The experiment's data (:func:`~fedvsr.data.sources.experiment_data`), its client pool checked against
    the partition; a :class:`ConfigError` when it cannot make the experiment. Logs one line when videos are
    left out: how many of how many, counted by kind, and where they are listed."""
    try:
        data = experiment_data(cfg)
    except (FileNotFoundError, DataError) as err:
        raise ConfigError(str(err)) from None
    if data.left_out:
        log.warning("fedvsr: %s", left_out_line(data, Path(out) / LEFT_OUT_TABLE))
    labels = [data.videos[i].label for i in data.pool]
    try:
        partition_videos(labels, cfg.fl.clients, cfg.fl.partition, cfg.data.seed, cfg.fl.dirichlet_beta)
    except ValueError as err:
        left = f" ({len(data.left_out)} videos left out: {left_out_counts(data.left_out)})" if data.left_out else ""
        raise ConfigError(
            f"fl.clients = {cfg.fl.clients} cannot be given the {len(labels)} client videos{left}: {err}"
        ) from None
    return data


def left_out_line(data: ExperimentData, table: Path) -> str:
    """``"4 of 13 videos left out (unreadable: 3, too small: 1), see <table>"``."""
    return f"{len(data.left_out)} of {data.considered} videos left out ({left_out_counts(data.left_out)}), see {table}"


def record_left_out(out: Path, data: ExperimentData, event: _Recorder | None) -> None:
    """Write :data:`LEFT_OUT_TABLE` (one row per video left out, none when all are used) and, with ``event``, a
    ``video_skipped`` event for each (its message the reason, with ``path`` and ``problem``, the kind)."""
    rows = [e._asdict() for e in data.left_out]
    schema = pa.schema([("path", pa.string()), ("kind", pa.string()), ("reason", pa.string())])
    write_parquet_atomic(out / LEFT_OUT_TABLE, pa.Table.from_pylist(rows, schema=schema))
    for e in data.left_out if event is not None else ():
        event("video_skipped", e.reason, path=e.path, problem=e.kind)
