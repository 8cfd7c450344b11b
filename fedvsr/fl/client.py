"""One client's local training, independent of the runtime (Ray worker, test loop, notebook).

``train_local`` runs the local epochs of Algorithm 1 (lines 5-12 of the FedVSR paper) with the
strategy's hooks: the model's loss goes through ``strategy.local_objective`` (FedProx's proximal
term, FedVSR's lambda-weighted DWT loss), gradients through ``strategy.before_step`` (SCAFFOLD's
correction). A non-finite loss or weight marks the result as not ok, with the reason, so the
platform can leave the client out of the aggregate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from fedvsr.fl.aggregate import Params, PartialAggregate, all_finite
from fedvsr.fl.schedule import LRSchedule
from fedvsr.fl.strategy import ClientContext, LocalResult, Strategy, local_params
from fedvsr.models.base import StepHooks, VSRModel

StepLoss = Callable[[nn.Module, Any], tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]]

OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class LocalTraining:
    """How a client trains locally (:func:`train_local`)."""

    epochs: int = 1  #: local epochs
    optimizer: str = "adam"  #: one of OPTIMIZERS
    #: the loss of a plain step (a toy model's, a test's); None: the model's own training_step
    step_loss: StepLoss | None = None
    #: sets every optimizer's rate before each step; None: ``ctx.lr`` throughout
    schedule: LRSchedule | None = None
    steps: int = 0  #: the client's local steps this round (the horizon of the ``local`` clock)
    #: > 0: clip each optimizer's gradients to that total L2 norm right before its step, after the strategy's
    #: correction, so it bounds the step actually taken
    clip_grad_norm: float = 0.0
    max_steps: int = 0  #: a deadline: stop after that many steps (the result is ``cut``)
    time_budget: float = 0.0  #: a deadline: stop once that many seconds have passed (checked after each step)


def make_optimizer(name: str, params: Iterable[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.99))
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}; allowed: {', '.join(OPTIMIZERS)}")


def vsr_step_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
    """``L_VSR`` of a VSR model on one ``(lr, hr)`` batch, with its output and target."""
    lr, hr = batch
    sr = model(lr)
    return model.vsr_loss(sr, hr, lr), sr, model.target(hr)


def seed_torch(seed: int, device: torch.device) -> None:
    """``torch.manual_seed(seed)`` for what a step on ``device`` draws from. On a CPU device only the CPU generator
    is seeded: ``torch.manual_seed`` also queues a seed for every CUDA device, and in a process where CUDA is not
    initialised that records the Python stack each time (0.2 ms in a shallow stack, more in a Ray worker's; on its
    own inside the noise of the Flower benchmark: docs/gpu-and-overhead.md). The numbers drawn are the same."""
    if device.type == "cpu":
        torch.default_generator.manual_seed(seed)
    else:
        torch.manual_seed(seed)


def epoch_batches(dataset, batch_size: int, seed: int, epoch: int, collate, device) -> Iterable[Any]:
    """Mini-batches of one epoch in an order drawn from ``(seed, epoch)``."""
    order = np.random.default_rng([seed, epoch]).permutation(len(dataset))
    for start in range(0, len(order), batch_size):
        items = [dataset[int(i)] for i in order[start : start + batch_size]]
        yield tuple(t.to(device, non_blocking=True) for t in collate(items))


def _batch_size(batch: Any) -> int:
    """Samples in a mini-batch: the leading size of its first tensor (1 for anything else)."""
    first = batch[0] if isinstance(batch, (tuple, list)) and batch else batch
    return int(first.shape[0]) if isinstance(first, torch.Tensor) and first.dim() else 1


def _plain_step(step_loss: StepLoss):
    """A ``training_step`` for a module without one (a test's toy model): one optimizer, one step."""

    def training_step(
        model: nn.Module, batch: Any, optimizers: dict[str, torch.optim.Optimizer], hooks: StepHooks
    ) -> torch.Tensor:
        model_loss, sr, target = step_loss(model, batch)
        loss = hooks.objective(model_loss, sr, target)
        hooks.apply(loss, optimizers["model"])
        return loss.detach()

    return training_step


def train_local(
    ctx: ClientContext, strategy: Strategy, batches: Callable[[int], Iterable[Any]], training: LocalTraining
) -> LocalResult:
    """Train ``ctx.model`` (already holding the global weights) for ``training.epochs`` local epochs.

    Each mini-batch is one call of the model's :meth:`~fedvsr.models.base.VSRModel.training_step`
    (or, with ``training.step_loss`` or for a module without one, a plain step on that loss).
    See :class:`LocalTraining` for the schedule, the gradient clipping and the deadlines."""
    epochs, optimizer, step_loss, schedule = training.epochs, training.optimizer, training.step_loss, training.schedule
    steps, clip_grad_norm = training.steps, training.clip_grad_norm
    max_steps, time_budget = training.max_steps, training.time_budget
    start = time.perf_counter()
    model = ctx.model
    model.train()
    if step_loss is None and isinstance(model, VSRModel):
        groups, step = model.optimizer_groups(), type(model).training_step
    else:
        groups = {"model": [p for p in model.parameters() if p.requires_grad]}
        step = _plain_step(step_loss or vsr_step_loss)
    opts = {name: make_optimizer(optimizer, params, ctx.lr) for name, params in groups.items() if params}

    def apply(loss: torch.Tensor, opt: torch.optim.Optimizer, zero_grad: bool = True) -> None:
        if zero_grad:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        strategy.before_step(ctx)
        if clip_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], clip_grad_norm)
        opt.step()

    hooks = StepHooks(
        objective=lambda model_loss, sr, target: strategy.local_objective(ctx, model_loss, sr, target), apply=apply
    )
    strategy.begin_local(ctx)

    def set_rate(rate: float) -> None:
        for opt in opts.values():
            for group in opt.param_groups:
                group["lr"] = rate

    per_step = schedule is not None and schedule.varies_within_round
    if schedule is not None and not per_step:  # one rate for the whole round: set it once
        set_rate(schedule.step_rate(ctx.round, ctx.total_rounds, 0, steps))
    total = torch.zeros((), dtype=torch.float64, device=next(model.parameters()).device)
    seen, cut = 0, False
    for epoch in range(epochs):
        for batch in batches(epoch):
            if (max_steps and ctx.steps >= max_steps) or (time_budget and time.perf_counter() - start >= time_budget):
                cut = True
                break
            if per_step:
                set_rate(schedule.step_rate(ctx.round, ctx.total_rounds, ctx.steps, steps))
            reported = step(model, batch, opts, hooks)
            ctx.steps += 1
            seen += _batch_size(batch)
            total += reported.to(torch.float64)
        if cut:
            break
    seconds = time.perf_counter() - start
    mean_loss = float(total) / max(ctx.steps, 1)
    result = LocalResult(ctx.client, ctx.samples, ctx.steps, mean_loss, seconds, cut=cut, seen=seen)
    if ctx.steps == 0:
        result.ok, result.reason = (
            False,
            ("the deadline came before the first local step" if cut else "no local step (empty client dataset)"),
        )
    elif not math.isfinite(mean_loss):
        result.ok, result.reason = False, f"non-finite training loss ({mean_loss})"
    elif not all_finite(local_params(model, ctx.global_params)):
        result.ok, result.reason = False, "non-finite weights after local training"
    return result


def run_client(
    ctx: ClientContext,
    strategy: Strategy,
    batches: Callable[[int], Iterable[Any]],
    partial: PartialAggregate,
    training: LocalTraining,
) -> tuple[LocalResult, float, Params | None]:
    """Train one client (:func:`train_local`) and, if its result is usable, add it to ``partial``.

    Returns the local result (``ok = False`` with the reason when the client is left out: non-finite
    loss or weights, or an invalid aggregation weight), the log of its unnormalised aggregation weight
    (-inf when left out) and its new persistent state (None when the strategy keeps none or the client
    is left out).
    """
    result = train_local(ctx, strategy, batches, training)
    if not result.ok:
        return result, -math.inf, None
    try:
        log_weight = float(strategy.client_log_weight(ctx, result))
    except ValueError as err:
        result.ok, result.reason = False, f"invalid aggregation weight: {err}"
        return result, -math.inf, None
    if not math.isfinite(log_weight):
        result.ok, result.reason = False, f"invalid aggregation weight exp({log_weight})"
        return result, -math.inf, None
    state = strategy.end_local(ctx, result, log_weight, partial)
    return result, log_weight, state
