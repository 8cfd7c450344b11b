"""FedVSR (Mollaahmadi Dehaghi et al., "FedVSR: Towards Model-Agnostic Federated Learning in Video
Super-Resolution", arXiv:2503.13745) and its ablations.

Client side (eq. 11): the local loss is ``lambda_vsr * L_VSR + lambda_hifr * L_HiFr`` with the
DWT high-frequency loss of :mod:`fedvsr.fl.hifr` (both weights free, not tied to sum to 1).
Server side (section 4.2, Algorithm 1): client i reports its average training loss L_i and gets
the weight ``(1/L_i)^a_t`` normalised over the round, with the decay of ``a_t`` chosen by
``alpha_decay`` (see :func:`fedvsr.fl.loss_aware.decay_exponent`). ``mixing = "hellinger"`` blends
those weights with uniform ones as the authors' code does (off by default; not in the paper).

Ablations (the paper's Table 2) are the same class with parts switched off:
``fedavg-dwt`` (F-L_HiFr: DWT loss, FedAvg's sample weights), ``fedvsr-gla`` (greedy loss-aware
aggregation, no decay, no DWT loss), ``fedvsr-ala`` (loss-aware aggregation with decay, no DWT loss).
"""

from __future__ import annotations

from dataclasses import dataclass

from fedvsr.fields import check_fields, key
from fedvsr.fl.hifr import HIFR_MODES, hifr_loss
from fedvsr.fl.loss_aware import (
    ALPHA_DECAYS,
    decay_exponent,
    hellinger_coefficient,
    log_inverse_loss_weight,
)
from fedvsr.fl.strategy import ClientContext, LocalResult, Strategy, local_params

MIXINGS = ("none", "hellinger")


@dataclass(frozen=True)
class FedVSRParams:
    """FedVSR's hyperparameters, the config keys ``fl.lambda_vsr`` ... ``fl.mixing``; ``loss_aware`` is no key:
    the registry's ``fedavg-dwt`` entry switches it off."""

    lambda_vsr: float = key(1.0, "FedVSR: weight of the model's own loss L_VSR", min=0.0, max=1e6)
    lambda_hifr: float = key(1.0, "FedVSR: weight of the DWT high-frequency loss L_HiFr", min=0.0, max=1e6)
    hifr_mode: str = key("2d", "FedVSR: DWT of L_HiFr per frame (2d) or over (T, H, W) (3d)", choices=HIFR_MODES)
    hifr_eps: float = key(
        1e-3,
        "FedVSR: Charbonnier epsilon of L_HiFr (the authors' code: about 3.2e-5)",
        min=0.0,
        min_exclusive=True,
        max=1.0,
    )
    #: weigh clients by (1/L_i)^a_t; False: FedAvg's sample weights (not a key: fedavg-dwt fixes it)
    loss_aware: bool = True
    alpha: float = key(1.0, "FedVSR: exponent strength of the loss-aware weights (1/L_i)^a_t", min=0.0, max=100.0)
    alpha_decay: str = key(
        "linear", "FedVSR: none (greedy), linear a_t = alpha(1-t/T), power alpha^(1-t/T)", choices=ALPHA_DECAYS
    )
    mixing: str = key(
        "none", "FedVSR: 'hellinger' blends loss-aware and uniform weights (authors' code)", choices=MIXINGS
    )

    def __post_init__(self) -> None:
        check_fields(self, "fl.")


class FedVSR(Strategy):
    """DWT high-frequency loss on the client; loss-aware weights with decay on the server."""

    name = "fedvsr"

    def __init__(self, params: FedVSRParams | None = None, name: str = "fedvsr") -> None:
        self.params = params or FedVSRParams()
        self.name = name

    def local_objective(self, ctx: ClientContext, model_loss, sr, target):
        p = self.params
        loss = model_loss if p.lambda_vsr == 1.0 else p.lambda_vsr * model_loss  # no extra op at the default
        if p.lambda_hifr > 0 and sr is not None:
            loss = loss + p.lambda_hifr * hifr_loss(sr, target, p.hifr_mode, p.hifr_eps)
        return loss

    def exponent(self, round: int, total_rounds: int) -> float:
        p = self.params
        return decay_exponent(p.alpha, p.alpha_decay, round, total_rounds)

    def client_log_weight(self, ctx: ClientContext, result: LocalResult) -> float:
        if not self.params.loss_aware:
            return super().client_log_weight(ctx, result)
        # log (1/L_i)^a_t: the platform normalises in log space, so no alpha or loss overflows
        return log_inverse_loss_weight(result.loss, self.exponent(ctx.round, ctx.total_rounds))

    def end_local(self, ctx, result, log_weight, partial):
        super().end_local(ctx, result, log_weight, partial)
        if self.params.mixing == "hellinger":
            partial.add("uniform", local_params(ctx.model, ctx.global_params), 1.0)
        return None

    def server_update(self, global_params, aggregate, server_state, round, total_clients, client_weights):
        weighted = aggregate.mean("model")
        if self.params.mixing != "hellinger":
            return weighted, server_state
        # the mixed weights (1 - m) / n + m * p_i applied to the clients' models, from the two accumulators
        m = hellinger_coefficient(client_weights)
        uniform = aggregate.mean("uniform")
        return {k: (1 - m) * uniform[k] + m * weighted[k] for k in weighted}, server_state
