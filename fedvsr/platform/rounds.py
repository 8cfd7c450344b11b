"""What one round of the coordinator gathers while its clients train: the merge of their updates in dispatch
order (:class:`MergeInOrder`) and the round's reports, states and retries (:class:`RoundState`); then whether the
round failed (:func:`failed_round`) and its row of rounds.parquet (:func:`round_row`)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedvsr.fl.aggregate import PartialAggregate, merge_updates
from fedvsr.fl.participation import ClientReport

#: client updates merged at once (block by block: see fedvsr.fl.aggregate.merge_updates)
MERGE_BATCH = 8


class MergeInOrder:
    """Client updates merged in dispatch order, whichever worker trained them and whenever they arrive: a small
    reorder buffer, flushed MERGE_BATCH at a time (None: a client that sent none, a hole to skip)."""

    def __init__(self, aggregate: PartialAggregate, order: list[int]) -> None:
        self.aggregate = aggregate
        self.position = {c: i for i, c in enumerate(order)}
        self.arrived: dict[int, Any] = {}
        self.merged = 0

    def add(self, client: int, update: Any) -> None:
        self.arrived[self.position[client]] = update
        self.flush()

    def flush(self, final: bool = False) -> None:
        ready = 0
        while self.merged + ready in self.arrived:
            ready += 1
        if ready and (final or ready >= MERGE_BATCH):
            batch = [self.arrived.pop(i) for i in range(self.merged, self.merged + ready)]
            merge_updates(self.aggregate, [u for u in batch if u is not None])
            self.merged += ready


@dataclass
class RoundState:
    """What one round gathers while its clients train."""

    round: int
    clients: list[int]  #: sampled
    params_ref: Any  #: the global weights in the object store
    server_ref: Any  #: the server state there
    training: list[int] = field(default_factory=list)  #: sampled and not dropped out
    reports: dict[int, ClientReport] = field(default_factory=dict)
    states: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)  #: new persistent client states
    attempts: dict[int, int] = field(default_factory=dict)  #: the next attempt of a retried client
    merge: MergeInOrder | None = None
    oom: list[int] = field(default_factory=list)  #: clients that ran out of GPU memory in the last pass
    oom_reason: dict[int, str] = field(default_factory=dict)  #: their error, at how many workers per GPU


def failed_round(t: int, rows: list[ClientReport], min_clients: int) -> str:
    """Why round ``t`` failed (``"round 3: 1 of 4 clients trained (data error: 2, missed the deadline: 1)"``),
    or ``""`` when at least ``min_clients`` (``fl.min_clients``) of its clients trained."""
    trained = sum(r.ok for r in rows)
    if trained >= min_clients:
        return ""
    reasons = Counter(r.reason.split(":")[0] for r in rows if not r.ok)
    counted = ", ".join(f"{k}: {n}" for k, n in reasons.most_common())
    return f"round {t}: {trained} of {len(rows)} clients trained ({counted}), fewer than fl.min_clients = {min_clients}"


def round_row(
    t: int,
    metrics: dict[str, float],
    rows: list[ClientReport],
    kept: list[ClientReport],
    seconds: float,
    train_seconds: float,
    lr: float,
    workers: int,
) -> dict[str, Any]:
    """Round ``t``'s row of rounds.parquet: the evaluation ``metrics``, the client reports (``rows``, of which
    ``kept`` were aggregated), the round's wall time and training time, its learning rate and live workers."""
    seen = int(sum(c.seen for c in kept))
    return {
        "round": t,
        **{k: v for k, v in metrics.items() if k not in ("eval_seconds", "eval_workers")},
        "train_loss": float(np.mean([c.loss for c in kept])) if kept else math.nan,
        "clients": len(rows),
        "aggregated": len(kept),
        "dropped": len(rows) - len(kept),
        "retried": int(sum(c.attempts > 1 for c in rows)),
        "cut": int(sum(bool(c.cut) for c in kept)),
        "seconds": seconds,
        "train_seconds": train_seconds,
        "eval_seconds": metrics["eval_seconds"],
        "samples": int(sum(c.samples for c in kept)),
        "updates_per_s": len(kept) / train_seconds if train_seconds > 0 else math.nan,
        "samples_per_s": seen / train_seconds if train_seconds > 0 else math.nan,
        "lr": lr,
        "workers": workers,
        "eval_workers": metrics["eval_workers"],
    }
