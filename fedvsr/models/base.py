"""The model contract every VSR network in fedvsr follows.

A model takes a low-resolution clip ``lr: (b, t, c, h, w)`` with values in [0, 1] and
``t == model.num_frames``, and returns

* ``(b, c, s*h, s*w)`` when ``model.center_output`` is True (it restores the centre frame
  ``t // 2``), or
* ``(b, t, c, s*h, s*w)`` when it restores every input frame,

where ``s == model.scale``. The family's training recipe is :meth:`VSRModel.vsr_loss`
(``L_VSR`` in the FedVSR paper); strategies add their own terms on top of it.

Local training calls :meth:`VSRModel.training_step` once per mini-batch with one optimizer per
entry of :meth:`VSRModel.optimizer_groups`. The default is one optimizer over every trainable
parameter and one step on ``L_VSR`` plus the strategy's terms; a family with its own recipe (a GAN
with a discriminator step, an autoencoder kept frozen while its backbone trains) overrides the two.
Whatever it does, it passes the loss that includes the strategy's terms through ``hooks.objective``
and steps every optimizer through ``hooks.apply``, which runs ``backward``, the strategy's gradient
correction (SCAFFOLD), gradient clipping and the optimizer step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass
class StepHooks:
    """What the federated runtime lends a model's :meth:`VSRModel.training_step`."""

    #: ``objective(model_loss, sr, target) -> loss``: the model's loss plus the strategy's local terms
    #: (FedProx's proximal term, FedVSR's DWT loss); ``sr`` / ``target`` may be None when unused
    objective: Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor | None], torch.Tensor]
    #: ``apply(loss, optimizer, zero_grad=True)``: zero that optimizer's gradients (unless ``zero_grad`` is
    #: False: gradient accumulation, where earlier micro-batches already called ``backward``),
    #: ``loss.backward()``, the strategy's gradient correction, gradient clipping, ``optimizer.step()``
    apply: Callable[..., None]


def charbonnier(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Mean Charbonnier penalty ``sqrt((pred - target)^2 + eps^2)`` over every element."""
    return torch.sqrt((pred - target) ** 2 + eps * eps).mean()


class VSRModel(nn.Module):
    """Base class of fedvsr's VSR networks (see the module docstring for the contract).

    Subclasses set the three class attributes or pass them to ``__init__``, and implement
    ``forward``. They may override :meth:`vsr_loss` with the family's own loss.
    """

    num_frames: int = 1
    center_output: bool = True
    #: True when transposing (rotating by 90 degrees) a training clip is a valid augmentation: nothing in the
    #: model depends on the orientation of its input (no fixed non-square windows or positional tables)
    rotation_safe: bool = True
    scale: int = 4
    #: epsilon of the Charbonnier spatial loss used by the default recipe
    charbonnier_eps: float = 1e-3

    def target(self, hr: torch.Tensor) -> torch.Tensor:
        """The part of an HR clip ``(b, t, c, H, W)`` that the model's output is compared to."""
        if self.center_output:
            return hr[:, hr.shape[1] // 2]
        return hr

    def vsr_loss(self, sr: torch.Tensor, hr: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
        """``L_VSR``: the family's training loss. ``sr`` is ``forward(lr)``, ``hr`` the whole HR clip."""
        return charbonnier(sr, self.target(hr), self.charbonnier_eps)

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        """The parameters trained locally, one optimizer per entry (fresh each round). Default: one
        ``"model"`` optimizer over every parameter that requires a gradient."""
        return {"model": [p for p in self.parameters() if p.requires_grad]}

    def training_step(self, batch: Any, optimizers: dict[str, torch.optim.Optimizer], hooks: StepHooks) -> torch.Tensor:
        """One local step on ``batch = (lr, hr)``; returns the loss this client reports for the step
        (detached; its mean over the local epochs is ``L_i`` of loss-aware aggregation)."""
        lr, hr = batch
        sr = self(lr)
        target = self.target(hr)
        loss = hooks.objective(self.vsr_loss(sr, hr, lr), sr, target)
        hooks.apply(loss, optimizers["model"])
        return loss.detach()

    def check_input(self, lr: torch.Tensor) -> None:
        if lr.dim() != 5 or lr.shape[1] != self.num_frames:
            raise ValueError(
                f"{type(self).__name__} expects lr of shape (b, {self.num_frames}, c, h, w), got {tuple(lr.shape)}"
            )
