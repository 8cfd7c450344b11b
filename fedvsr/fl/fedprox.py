"""FedProx (Li et al., "Federated Optimization in Heterogeneous Networks", arXiv:1812.06127).

Every local step minimises ``L_VSR(w) + (mu/2) * ||w - w_global||^2`` from the first round on;
the server side is FedAvg's. With ``mu = 0`` the term is skipped and FedProx is FedAvg exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedvsr.fields import check_fields, key
from fedvsr.fl.strategy import ClientContext, Strategy


@dataclass(frozen=True)
class FedProxParams:
    """FedProx's hyperparameter, the config key ``fl.mu``."""

    mu: float = key(
        0.001,
        "FedProx: weight of the proximal term (mu/2) * squared distance to the global "
        "weights (FedVSR paper: any mu above 1e-3 hurts VSR training; FedProx's grid ends at 1)",
        min=0.0,
        max=1000.0,
    )

    def __post_init__(self) -> None:
        check_fields(self, "fl.")


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
