"""A Ray-free runtime for strategies: every client of a round trained in turn in this process.

The platform's workers do the same per client (:func:`fedvsr.fl.client.run_client`), so a
strategy behaves identically here, in a unit test or a notebook, and on a cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fedvsr.fl.aggregate import Params, PartialAggregate, normalised_weights
from fedvsr.fl.client import LocalTraining, run_client
from fedvsr.fl.strategy import ClientContext, LocalResult, Strategy


@dataclass(frozen=True)
class RoundSpec:
    """Where a round stands: what every client's :class:`~fedvsr.fl.strategy.ClientContext` shares."""

    round: int  #: 1-based
    total_rounds: int
    total_clients: int
    lr: float  #: the round's learning rate


#: one local epoch of plain SGD, local_round's default
SGD = LocalTraining(optimizer="sgd")


def local_round(
    strategy: Strategy,
    model: nn.Module,
    global_params: Params,
    server_state: Params,
    client_states: dict[int, Params],
    clients: list[int],
    client_data: Callable[[int], tuple[int, Callable[[int], Iterable[Any]]]],
    spec: RoundSpec,
    training: LocalTraining = SGD,
) -> tuple[Params, Params, list[LocalResult]]:
    """One round: train ``clients`` from ``global_params`` and aggregate with the strategy.

    ``client_data(client)`` returns ``(samples, batches)`` where ``batches(epoch)`` yields the client's
    mini-batches; each trains as ``training`` says (:class:`~fedvsr.fl.client.LocalTraining`).
    ``client_states`` is updated in place. Returns the new global params, the new server state and the clients'
    local results (a left-out client has ``ok = False`` and its reason)."""
    partial = PartialAggregate()
    results, weights = [], []
    for cid in clients:
        samples, batches = client_data(cid)
        with torch.no_grad():
            state = model.state_dict()
            for k, v in global_params.items():
                state[k].copy_(v)
        ctx = ClientContext(
            cid,
            spec.round,
            spec.total_rounds,
            spec.total_clients,
            model,
            global_params,
            server_state,
            client_states.get(cid),
            spec.lr,
            samples=samples,
        )
        result, weight, new_state = run_client(ctx, strategy, batches, partial, training)
        results.append(result)
        if result.ok:
            weights.append(weight)
            if new_state is not None:
                client_states[cid] = {k: v.detach().clone() for k, v in new_state.items()}
    if not weights:
        return global_params, server_state, results
    new_params, new_server = strategy.server_update(
        global_params, partial, server_state, spec.round, spec.total_clients, normalised_weights(weights)
    )
    return new_params, new_server, results
