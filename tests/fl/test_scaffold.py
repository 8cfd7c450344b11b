"""SCAFFOLD's K (option II) counts each parameter's optimizer steps, not the client's mini-batches.

A model may step a network more than once per mini-batch (VSRGAN's generator with ``accumulate=False``:
one step per patch-wise pass) and its networks apart (generator, then discriminator). Option II,
``c_i+ = c_i - c + (x - y_i) / (K * eta_l)``, needs K = the steps that moved the parameters in question.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedvsr.fl import Scaffold
from fedvsr.fl.local import RoundSpec, local_round
from fedvsr.fl.strategy import float_state
from fedvsr.models.base import VSRModel
from fedvsr.models.registry import build_model


class TwoNets(VSRModel):
    """A 'generator' g stepped twice per mini-batch (losses 3g, then 5g) and a 'discriminator' d stepped once
    (loss 2d), each network's gradients cleared before the other's step, as VSRGAN does."""

    def __init__(self) -> None:
        super().__init__()
        self.g = nn.Parameter(torch.zeros(1, dtype=torch.float64))
        self.d = nn.Parameter(torch.zeros(1, dtype=torch.float64))

    def optimizer_groups(self):
        return {"generator": [self.g], "discriminator": [self.d]}

    def training_step(self, batch, optimizers, hooks):
        for slope in (3.0, 5.0):  # two generator steps
            hooks.apply(hooks.objective(slope * self.g.sum(), None, None), optimizers["generator"])
        optimizers["generator"].zero_grad(set_to_none=True)
        hooks.apply(hooks.objective(2.0 * self.d.sum(), None, None), optimizers["discriminator"])
        optimizers["discriminator"].zero_grad(set_to_none=True)
        return torch.tensor(1.0)


def one_client(steps: int):
    return lambda cid: (1, lambda epoch: [None] * steps)


def test_control_variates_count_each_networks_steps_by_hand():
    strat, model = Scaffold(), TwoNets()
    x = float_state(model)
    server, states = strat.init_server_state(x), {}
    # round 1 (c = c_i = 0): 2 mini-batches, so g takes 4 SGD steps (gradients 3, 5, 3, 5) and d takes 2 (2, 2)
    # c_i+ = mean raw gradient = 16 / 4 = 4 for g (16 / 2 = 8 when K counted mini-batches), 4 / 2 = 2 for d;
    # option II agrees: x - y_g = 0.1 * 16 = 1.6 and 1.6 / (4 * 0.1) = 4
    x, server, _ = local_round(strat, model, x, server, states, [0], one_client(2), RoundSpec(1, 2, 2, 0.1))
    assert states[0]["c_i.g"].item() == pytest.approx(4.0, rel=1e-12)
    assert states[0]["c_i.d"].item() == pytest.approx(2.0, rel=1e-12)
    assert x["g"].item() == pytest.approx(-1.6, rel=1e-7) and x["d"].item() == pytest.approx(-0.4, rel=1e-7)
    # server: c = 0 + (1/N) * delta c_i with N = 2 clients
    assert server["c.g"].item() == pytest.approx(2.0, rel=1e-12)
    assert server["c.d"].item() == pytest.approx(1.0, rel=1e-12)
    # round 2: corrections c - c_i = -2 (g), -1 (d); g moves 0.1 * (16 - 4 * 2) = 0.8, d 0.1 * (4 - 2 * 1) = 0.2
    # option II: c_i - c + (x - y) / (K eta) = 4 - 2 + 0.8 / 0.4 = 4 (g) and 2 - 1 + 0.2 / 0.2 = 2 (d)
    local_round(strat, model, x, server, states, [0], one_client(2), RoundSpec(2, 2, 2, 0.1))
    assert model.g.item() == pytest.approx(-1.6 - 0.8, rel=1e-7)
    assert model.d.item() == pytest.approx(-0.4 - 0.2, rel=1e-7)
    assert states[0]["c_i.g"].item() == pytest.approx(4.0, rel=1e-12)
    assert states[0]["c_i.d"].item() == pytest.approx(2.0, rel=1e-12)


class GeneratorOnly(TwoNets):
    """TwoNets whose discriminator never steps (VSRGAN with adversarial_weight = 0)."""

    def training_step(self, batch, optimizers, hooks):
        hooks.apply(hooks.objective(3.0 * self.g.sum(), None, None), optimizers["generator"])
        optimizers["generator"].zero_grad(set_to_none=True)
        return torch.tensor(1.0)


def test_a_network_that_never_steps_keeps_its_control_variate():
    strat, model = Scaffold(), GeneratorOnly()
    x = float_state(model)
    server = strat.init_server_state(x)
    states = {
        0: {"c_i.g": torch.tensor([1.5], dtype=torch.float64), "c_i.d": torch.tensor([-0.5], dtype=torch.float64)}
    }
    _, server, _ = local_round(strat, model, x, server, states, [0], one_client(3), RoundSpec(1, 1, 1, 0.1))
    assert states[0]["c_i.g"].item() == pytest.approx(3.0)  # three steps of gradient 3
    assert states[0]["c_i.d"].item() == pytest.approx(-0.5)  # no step: unchanged, delta c = 0
    assert server["c.d"].item() == 0.0 and server["c.g"].item() == pytest.approx(1.5)  # 0 + (3 - 1.5) / 1


def test_vsrgan_without_accumulation_gets_option_two_control_variates():
    # the real model: 2 patch passes per mini-batch (4x4 grid, whole 8x8 clip), one generator step each,
    # then one discriminator step; 2 mini-batches of SGD from c = c_i = 0, in float64
    torch.manual_seed(0)
    model = build_model("vsrgan", "tiny-residual", {"patch_sizes": [4, 8], "accumulate": False}).double()
    batches = [
        (torch.rand(1, 3, 3, 8, 8, dtype=torch.float64), torch.rand(1, 3, 3, 32, 32, dtype=torch.float64))
        for _ in range(2)
    ]
    strat, eta = Scaffold(), 1e-3
    x = float_state(model)
    server, states = strat.init_server_state(x), {}
    local_round(strat, model, x, server, states, [0], lambda cid: (1, lambda epoch: batches), RoundSpec(1, 1, 1, eta))
    y = dict(model.named_parameters())
    for net, k in (("generator", 4), ("discriminator", 2)):
        names = [n for n in y if n.startswith(net + ".")]
        got = torch.cat([states[0][f"c_i.{n}"].flatten() for n in names])
        option2 = torch.cat([((x[n] - y[n].detach()) / (k * eta)).flatten() for n in names])
        assert got.abs().max() > 0
        assert torch.allclose(got, option2, rtol=1e-6, atol=1e-9), net
