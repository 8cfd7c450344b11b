"""FedAvg (McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized
Data", arXiv:1602.05629): clients run local SGD from the global model; the server replaces the
global model by the sample-weighted average of the client models (the FedVSR paper's eq. 4-6)."""

from __future__ import annotations

from dataclasses import dataclass

from fedvsr.fl.strategy import Strategy


@dataclass(frozen=True)
class FedAvgParams:
    """FedAvg has no hyperparameters of its own."""


class FedAvg(Strategy):
    """Local training on the model's own loss; sample-weighted average of the client models."""

    name = "fedavg"

    def __init__(self, params: FedAvgParams | None = None) -> None:
        self.params = params or FedAvgParams()
