"""Learning-rate schedules of local training, and where their clock is.

A schedule maps a clock position ``i`` (0-based) and the clock's horizon ``n`` to a rate:

* ``constant``: ``lr``;
* ``cosine``: ``lr_min + (lr - lr_min) * (1 + cos(pi * i / n)) / 2`` (SGDR without restarts, as the FCA2
  paper and VRT / RVRT train; torch's ``CosineAnnealingLR`` with ``T_max = n``);
* ``multistep``: ``lr * gamma ** k``, ``k`` the number of milestones ``<= i`` (FCVSR halves its rate at
  2K, 8K and 12K of 30K; torch's ``MultiStepLR``);

times a linear warm-up ``min(1, (i + 1) / warmup)`` over the first ``warmup`` positions (BasicSR's
warm-up: the first step already trains, at ``lr / warmup``).

The clock (``fl.lr_clock``): ``round`` counts global rounds (``i = t - 1``, ``n = fl.rounds``): every
local step of round ``t`` uses the same rate, and the schedule spans the whole run, as a centralized
schedule spans its epochs. ``local`` counts the client's local steps within one round (``i`` = step
index, ``n`` = that client's steps this round): the schedule restarts each round, as the client's
optimizer does (a fresh optimizer per round is the FedVSR paper's Algorithm 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULES = ("constant", "cosine", "multistep")
CLOCKS = ("round", "local")


@dataclass(frozen=True)
class LRSchedule:
    lr: float
    kind: str = "constant"
    clock: str = "round"
    warmup: int = 0
    lr_min: float = 0.0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.5

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown learning-rate schedule {self.kind!r}; allowed: {', '.join(SCHEDULES)}")
        if self.clock not in CLOCKS:
            raise ValueError(f"unknown schedule clock {self.clock!r}; allowed: {', '.join(CLOCKS)}")

    @classmethod
    def from_config(cls, fl) -> LRSchedule:
        return cls(
            lr=fl.lr,
            kind=fl.lr_schedule,
            clock=fl.lr_clock,
            warmup=fl.lr_warmup,
            lr_min=fl.lr_min,
            milestones=tuple(fl.lr_milestones),
            gamma=fl.lr_gamma,
        )

    def at(self, i: int, n: int) -> float:
        """The rate at clock position ``i`` of a horizon of ``n`` positions."""
        if self.kind == "cosine":
            rate = self.lr_min + (self.lr - self.lr_min) * (1 + math.cos(math.pi * i / max(n, 1))) / 2
        elif self.kind == "multistep":
            rate = self.lr * self.gamma ** sum(1 for m in self.milestones if m <= i)
        else:
            rate = self.lr
        if self.warmup > 0 and i < self.warmup:
            rate *= (i + 1) / self.warmup
        return rate

    @property
    def varies_within_round(self) -> bool:
        return self.clock == "local" and (self.kind != "constant" or self.warmup > 0)

    def round_rate(self, round: int, rounds: int) -> float:
        """The rate of round ``round`` (1-based) on the round clock; on the local clock the rate of the first
        local step (the schedule restarts each round)."""
        if self.clock == "round":
            return self.at(round - 1, rounds)
        return self.at(0, 1)

    def step_rate(self, round: int, rounds: int, step: int, steps: int) -> float:
        """The rate of local step ``step`` (0-based) of ``steps`` in round ``round``."""
        if self.clock == "round":
            return self.at(round - 1, rounds)
        return self.at(step, steps)
