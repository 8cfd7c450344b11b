"""A Ray-free runtime for strategies: every client of a round trained in turn in this process.

The platform's workers do the same per client (:func:`fedvsr.fl.client.run_client`), so a
strategy behaves identically here, in a unit test or a notebook, and on a cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from fedvsr.fl.aggregate import Params, PartialAggregate, normalised_weights
from fedvsr.fl.client import StepLoss, run_client
from fedvsr.fl.schedule import LRSchedule
from fedvsr.fl.strategy import ClientContext, LocalResult, Strategy


def local_round(
    strategy: Strategy,
    model: nn.Module,
    global_params: Params,
    server_state: Params,
    client_states: dict[int, Params],
    clients: list[int],
    client_data: Callable[[int], tuple[int, Callable[[int], Iterable[Any]]]],
    round: int,
    total_rounds: int,
    total_clients: int,
    lr: float,
    epochs: int = 1,
    optimizer: str = "sgd",
    step_loss: StepLoss | None = None,
    schedule: LRSchedule | None = None,
    steps: int = 0,
    clip_grad_norm: float = 0.0,
) -> tuple[Params, Params, list[LocalResult]]:
    """One round: train ``clients`` from ``global_params`` and aggregate with the strategy.

    ``client_data(client)`` returns ``(samples, batches)`` where ``batches(epoch)`` yields the client's
    mini-batches. ``schedule``, ``steps`` (a client's local steps per round, for the ``local`` clock) and
    ``clip_grad_norm`` are those of :func:`~fedvsr.fl.client.train_local`. ``client_states`` is updated in
    place. Returns the new global params, the new server state and the clients' local results (a left-out
    client has ``ok = False`` and its reason)."""
    partial = PartialAggregate()
    results, weights = [], []
    for cid in clients:
        samples, batches = client_data(cid)
        with torch.no_grad():
            state = model.state_dict()
            for k, v in global_params.items():
                state[k].copy_(v)
        ctx = ClientContext(cid, round, total_rounds, total_clients, model, global_params, server_state,
                            client_states.get(cid), lr, samples=samples)
        kwargs = {"step_loss": step_loss} if step_loss is not None else {}
        result, weight, new_state = run_client(ctx, strategy, batches, epochs, partial, optimizer, schedule=schedule,
                                               steps=steps, clip_grad_norm=clip_grad_norm, **kwargs)
        results.append(result)
        if result.ok:
            weights.append(weight)
            if new_state is not None:
                client_states[cid] = {k: v.detach().clone() for k, v in new_state.items()}
    if not weights:
        return global_params, server_state, results
    new_params, new_server = strategy.server_update(global_params, partial, server_state, round, total_clients,
                                                    normalised_weights(weights))
    return new_params, new_server, results

