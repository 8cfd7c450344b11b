"""The model contract every VSR network in fedvsr follows.

A model takes a low-resolution clip ``lr: (b, t, c, h, w)`` with values in [0, 1] and
``t == model.num_frames``, and returns

* ``(b, c, s*h, s*w)`` when ``model.center_output`` is True (it restores the centre frame
  ``t // 2``), or
* ``(b, t, c, s*h, s*w)`` when it restores every input frame,

where ``s == model.scale``. The family's training recipe is :meth:`VSRModel.vsr_loss`
(``L_VSR`` in the FedVSR paper); strategies add their own terms on top of it.
"""

from __future__ import annotations

import torch
from torch import nn


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

    def check_input(self, lr: torch.Tensor) -> None:
        if lr.dim() != 5 or lr.shape[1] != self.num_frames:
            raise ValueError(
                f"{type(self).__name__} expects lr of shape (b, {self.num_frames}, c, h, w), "
                f"got {tuple(lr.shape)}"
            )
