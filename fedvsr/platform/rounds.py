"""What one round of the coordinator gathers while its clients train: the merge of their updates in dispatch
order (:class:`MergeInOrder`) and the round's reports, states and retries (:class:`RoundState`)."""

from __future__ import annotations

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
