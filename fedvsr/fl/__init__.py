"""Federated logic with no Ray in it: strategies, client-side loss terms, aggregation math,
client partitioning and sampling."""

from __future__ import annotations

from fedvsr.fl.fedavg import FedAvg, FedAvgParams
from fedvsr.fl.fedprox import FedProx, FedProxParams
from fedvsr.fl.fedvsr import FedVSR, FedVSRParams
from fedvsr.fl.registry import StrategyEntry, get_strategy, register_strategy, strategy_names
from fedvsr.fl.scaffold import Scaffold, ScaffoldParams
from fedvsr.fl.strategy import ClientContext, LocalResult, Strategy


def build_strategy(fl_cfg) -> Strategy:
    """The strategy named by ``fl.strategy`` with the parameters the ``fl`` config section holds
    (``fl_cfg.params``, already validated; see :mod:`fedvsr.fl.registry`)."""
    return get_strategy(fl_cfg.strategy).build(fl_cfg.params)


__all__ = [
    "ClientContext",
    "FedAvg",
    "FedAvgParams",
    "FedProx",
    "FedProxParams",
    "FedVSR",
    "FedVSRParams",
    "LocalResult",
    "Scaffold",
    "ScaffoldParams",
    "Strategy",
    "StrategyEntry",
    "build_strategy",
    "get_strategy",
    "register_strategy",
    "strategy_names",
]
