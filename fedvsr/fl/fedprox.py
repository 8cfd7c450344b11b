"""FedProx (Li et al., "Federated Optimization in Heterogeneous Networks", arXiv:1812.06127).

Every local step minimises ``L_VSR(w) + (mu/2) * ||w - w_global||^2`` from the first round on;
the server side is FedAvg's. With ``mu = 0`` the term is skipped and FedProx is FedAvg exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedvsr.fl.strategy import ClientContext, Strategy


@dataclass(frozen=True)
class FedProxParams:
    mu: float = 0.001  #: weight of the proximal term; the FedProx paper tries {0.001, 0.01, 0.1, 1}

    def __post_init__(self) -> None:
        if not self.mu >= 0:
            raise ValueError(f"fl.mu = {self.mu} is not allowed; expected a number >= 0")


def proximal_term(ctx: ClientContext, mu: float) -> torch.Tensor:
    """``(mu/2) * sum ||w - w_global||^2`` over the model's trainable parameters."""
    pairs = ctx.scratch["prox_pairs"]
    return 0.5 * mu * sum(((w - g) ** 2).sum() for w, g in pairs)


class FedProx(Strategy):
    """FedAvg whose local objective adds the proximal term (mu/2)||w - w_global||^2."""

    name = "fedprox"

    def __init__(self, params: FedProxParams | None = None) -> None:
        self.params = params or FedProxParams()

    def begin_local(self, ctx: ClientContext) -> None:
        ctx.scratch["prox_pairs"] = [
            (w, ctx.global_params[n]) for n, w in ctx.model.named_parameters() if w.requires_grad
        ]

    def local_objective(self, ctx, model_loss, sr, target):
        if self.params.mu == 0.0:
            return model_loss
        return model_loss + proximal_term(ctx, self.params.mu)
