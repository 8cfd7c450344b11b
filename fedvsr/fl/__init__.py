"""Federated logic with no Ray in it: strategies, client-side loss terms, aggregation math,
client partitioning and sampling."""

from __future__ import annotations

from fedvsr.fl.fedavg import FedAvg, FedAvgParams
from fedvsr.fl.fedprox import FedProx, FedProxParams
from fedvsr.fl.fedvsr import FedVSR, FedVSRParams
from fedvsr.fl.scaffold import Scaffold, ScaffoldParams
from fedvsr.fl.strategy import ClientContext, LocalResult, Strategy


def build_strategy(fl_cfg) -> Strategy:
    """The strategy named by ``fl.strategy`` with its hyperparameters from the ``fl`` config section.

    The FedVSR ablations of the paper's Table 2 are FedVSR with parts switched off:
    ``fedavg-dwt`` keeps the DWT loss and uses FedAvg's sample weights; ``fedvsr-gla`` (greedy) and
    ``fedvsr-ala`` (adaptive) drop the DWT loss and keep loss-aware aggregation, without decay
    (``alpha_decay = none``) and with ``fl.alpha_decay`` respectively.
    """
    name = fl_cfg.strategy
    if name == "fedavg":
        return FedAvg(FedAvgParams())
    if name == "fedprox":
        return FedProx(FedProxParams(mu=fl_cfg.mu))
    if name == "scaffold":
        return Scaffold(ScaffoldParams(server_lr=fl_cfg.server_lr))
    vsr = {
        "lambda_vsr": fl_cfg.lambda_vsr, "lambda_hifr": fl_cfg.lambda_hifr, "hifr_mode": fl_cfg.hifr_mode,
        "hifr_eps": fl_cfg.hifr_eps, "alpha": fl_cfg.alpha, "alpha_decay": fl_cfg.alpha_decay, "mixing": fl_cfg.mixing,
    }
    if name == "fedvsr":
        return FedVSR(FedVSRParams(**vsr), name)
    if name == "fedavg-dwt":
        return FedVSR(FedVSRParams(**{**vsr, "loss_aware": False}), name)
    if name == "fedvsr-gla":
        return FedVSR(FedVSRParams(**{**vsr, "lambda_hifr": 0.0, "alpha_decay": "none"}), name)
    if name == "fedvsr-ala":
        return FedVSR(FedVSRParams(**{**vsr, "lambda_hifr": 0.0}), name)
    raise ValueError(f"unknown strategy {name!r}")


__all__ = [
    "ClientContext", "FedAvg", "FedAvgParams", "FedProx", "FedProxParams", "FedVSR", "FedVSRParams",
    "LocalResult", "Scaffold", "ScaffoldParams", "Strategy", "build_strategy",
]
