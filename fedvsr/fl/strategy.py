"""The strategy interface: client-side hooks on local training, server-side hook on aggregation.

A strategy never imports Ray. The runtime (``fedvsr.platform``, or a plain loop in a test)
calls, for each sampled client:

1. :meth:`Strategy.begin_local` once, after the global weights were loaded into the model;
2. per local step, :meth:`Strategy.local_objective` to turn the model's own loss into the
   loss that is minimised, and :meth:`Strategy.before_step` after ``backward`` and before the
   optimizer step (gradient corrections);
3. :meth:`Strategy.end_local`, which adds the client's contributions to the worker's
   :class:`~fedvsr.fl.aggregate.PartialAggregate` and returns the client's new persistent state.

On the server, :meth:`Strategy.server_update` turns the merged partial aggregate into the new
global weights and server state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from fedvsr.fl.aggregate import Params, PartialAggregate


@dataclass
class ClientContext:
    """What a client's local training knows. ``global_params`` are the round's global floating-point
    state-dict entries on the training device; ``client_state`` is ``None`` for a client's first round."""

    client: int
    round: int
    total_rounds: int
    total_clients: int
    model: nn.Module
    global_params: Params
    server_state: Params
    client_state: Params | None
    lr: float
    samples: int = 0
    steps: int = 0
    scratch: dict[str, Any] = field(default_factory=dict)


@dataclass
class LocalResult:
    """A client's local training summary, reported to the server."""

    client: int
    samples: int
    steps: int
    loss: float
    seconds: float
    ok: bool = True
    reason: str = ""
    #: True when a deadline stopped local training before its planned steps (``steps`` were done)
    cut: bool = False
    #: training samples processed (mini-batch sizes summed over the steps taken)
    seen: int = 0


class Strategy:
    """Base strategy = FedAvg: plain local loss, sample-weighted model average."""

    name: ClassVar[str] = "fedavg"
    #: whether the platform must keep a per-client state between rounds
    stateful_clients: ClassVar[bool] = False

    # ------------------------------------------------------------------ client side
    def begin_local(self, ctx: ClientContext) -> None:
        """Called once before the client's first local step."""

    def local_objective(
        self, ctx: ClientContext, model_loss: torch.Tensor, sr: torch.Tensor | None, target: torch.Tensor | None
    ) -> torch.Tensor:
        """The loss minimised in one local step, from the model's own loss ``L_VSR``."""
        return model_loss

    def before_step(self, ctx: ClientContext) -> None:
        """Called after ``backward()`` and before ``optimizer.step()``: gradient corrections go here."""

    def client_log_weight(self, ctx: ClientContext, result: LocalResult) -> float:
        """Logarithm of a client's unnormalised aggregation weight (a log, so that weights of any size
        aggregate); FedAvg weighs by sample count."""
        return math.log(result.samples) if result.samples > 0 else -math.inf

    def end_local(
        self, ctx: ClientContext, result: LocalResult, log_weight: float, partial: PartialAggregate
    ) -> Params | None:
        """Add the client's contributions to ``partial``; return its new persistent state (or None)."""
        partial.add("model", local_params(ctx.model, ctx.global_params), log_weight=log_weight)
        return None

    # ------------------------------------------------------------------ server side
    def init_server_state(self, global_params: Params) -> Params:
        return {}

    def server_update(
        self,
        global_params: Params,
        aggregate: PartialAggregate,
        server_state: Params,
        round: int,
        total_clients: int,
        client_weights: list[float],
    ) -> tuple[Params, Params]:
        """New global weights: the weighted average of the clients' models. ``client_weights`` are the
        normalised aggregation weights of the aggregated clients (summing to 1), in client order."""
        return aggregate.mean("model"), server_state


def local_params(model: nn.Module, like: Params) -> Params:
    """The model's current values of the state-dict entries named in ``like`` (detached)."""
    state = model.state_dict()
    return {k: state[k].detach() for k in like}


def float_state(model: nn.Module) -> Params:
    """The floating-point entries of a model's state dict (what federated averaging averages)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}
