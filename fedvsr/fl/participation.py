"""How far each sampled client gets in a round: its plan (attempt, speed, deadline budget), the deadline rules
that cut or drop it, and the report it sends back. No Ray here: the platform carries these out.

Deadlines (``fl.deadline``, FedProx's partial work, arXiv 1812.06127, section 3.2): a client's budget is
``fl.deadline x speed`` (its speed from :func:`fedvsr.fl.sampling.client_speeds`) in ``fl.deadline_unit``. In
``steps`` (seeded, reproducible) a client that needs more local steps than its budget allows is cut to that many
steps, or dropped before training under ``fl.deadline_action = drop``; in ``seconds`` training stops once the
budget has passed, and under ``drop`` a client cut that way is dropped after training.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ClientPlan:
    """The coordinator's settings for one client in one round."""

    attempt: int = 1  #: 1 = first try; more when its worker died while training it
    speed: float = 1.0  #: its speed (fl.stragglers)
    budget: float = 0.0  #: fl.deadline x speed, in fl.deadline_unit; 0 = no deadline

    @classmethod
    def of(cls, deadline: float, speed: float, attempt: int = 1) -> ClientPlan:
        return cls(attempt, speed, deadline * speed if deadline else 0.0)


@dataclass(frozen=True)
class Limits:
    """What a deadline allows before training starts."""

    max_steps: int = 0  #: stop after this many local steps (0 = no limit)
    time_budget: float = 0.0  #: stop once this many seconds have passed (0 = no limit)
    refused: str = ""  #: why the client does not train at all ("" = it trains)


def deadline_limits(budget: float, unit: str, action: str, steps: int) -> Limits:
    """The limits of a client that needs ``steps`` local steps, with deadline ``budget`` in ``unit``
    (``fl.deadline_unit``) and ``action`` (``fl.deadline_action``)."""
    if budget <= 0:
        return Limits()
    if unit != "steps":
        return Limits(time_budget=budget)
    allowed = int(math.floor(budget))
    if allowed >= steps:
        return Limits()
    if action == "drop":
        return Limits(refused=f"missed the deadline: needs {steps} local steps, its deadline allows {allowed}")
    if allowed < 1:
        return Limits(refused="the deadline came before the first local step")
    return Limits(max_steps=allowed)


def missed_deadline(cut: bool, action: str, time_budget: float, steps_done: int, steps: int) -> str:
    """Why a client stopped by a wall-clock deadline is dropped under ``action = drop`` ("" when it is kept)."""
    if not (cut and action == "drop"):
        return ""
    return f"missed the deadline: {time_budget:.3g} s allowed, {steps_done} of {steps} local steps done"


#: the status of a client whose worker ran out of GPU memory (it trains again with fewer workers per GPU)
OUT_OF_MEMORY = "out_of_memory"


@dataclass
class ClientReport:
    """One row of ``clients.parquet``: what became of one sampled client in one round."""

    round: int
    client: int
    samples: int  #: training samples it holds
    steps: int  #: local steps done
    seen: int  #: samples seen in those steps
    loss: float  #: mean training loss (NaN when it did not train)
    lr: float  #: the round's learning rate
    log_weight: float  #: log of its unnormalised aggregation weight (-inf when left out)
    raw_weight: float  #: exp(log_weight), clamped
    worker: int  #: the worker that trained it (-1: none)
    device: str  #: the torch device it trained on
    gpu: str  #: the GPUs Ray gave that worker
    seconds: float  #: its local training time
    status: str  #: "ok" or "dropped"
    reason: str  #: why it was dropped ("" when ok)
    attempts: int  #: 1 = first try
    speed: float  #: its speed (fl.stragglers)
    budget: float  #: its deadline budget (0 = none)
    cut: bool  #: stopped early by its deadline
    node: str = ""  #: the Ray node of the worker (filled where the runtime knows it)
    workers_per_gpu: float = 0.0  #: workers sharing its worker's GPU when it trained (0: no GPU)
    weight: float = 0.0  #: its normalised aggregation weight, set by the coordinator once the round is in

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def not_trained(cls, round: int, client: int, lr: float, plan: ClientPlan, reason: str) -> ClientReport:
        """A sampled client that sent no update (dropped out, or lost with its workers)."""
        return cls(
            round,
            client,
            0,
            0,
            0,
            math.nan,
            lr,
            -math.inf,
            0.0,
            -1,
            "",
            "",
            0.0,
            "dropped",
            reason,
            plan.attempt,
            plan.speed,
            plan.budget,
            False,
        )

    def row(self) -> dict[str, Any]:
        return asdict(self)
