"""Strategies through the Ray-free runtime: FedProx, SCAFFOLD, FedVSR, NaN clients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from fedvsr.config import ConfigError, load_config
from fedvsr.fl import (
    FedAvg,
    FedProx,
    FedProxParams,
    FedVSR,
    FedVSRParams,
    Scaffold,
    build_strategy,
)
from fedvsr.fl.client import LocalTraining, seed_torch
from fedvsr.fl.fedprox import proximal_term
from fedvsr.fl.fedvsr import hellinger_coefficient
from fedvsr.fl.hifr import hifr_loss
from fedvsr.fl.local import RoundSpec, local_round
from fedvsr.fl.strategy import ClientContext, float_state


def sgd(step_loss):
    return LocalTraining(optimizer="sgd", step_loss=step_loss)


class Point(nn.Module):
    """A parameter vector w; client i's loss is 0.5 * sum h_i (w - o_i)^2 (a quadratic with its own optimum)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(dim, dtype=torch.float32))


def quadratic_clients(curv: torch.Tensor, optima: torch.Tensor, steps: int):
    def step_loss(model, batch):
        i = batch
        return 0.5 * (curv[i] * (model.w - optima[i]) ** 2).sum(), None, None

    def client_data(i):
        return 1, lambda epoch: [i] * steps

    return step_loss, client_data


def run_rounds(strategy, curv, optima, rounds, steps, lr, participants=None):
    n = len(curv)
    model = Point(curv.shape[1])
    params = float_state(model)
    server = strategy.init_server_state(params)
    states: dict = {}
    step_loss, client_data = quadratic_clients(curv, optima, steps)
    for t in range(1, rounds + 1):
        clients = participants(t) if participants else list(range(n))
        params, server, results = local_round(
            strategy, model, params, server, states, clients, client_data, RoundSpec(t, rounds, n, lr), sgd(step_loss)
        )
        assert all(r.ok for r in results)
    return params["w"], server, states


def test_scaffold_beats_fedavg_under_client_drift():
    # 4 clients whose quadratics have different curvatures and optima: local steps drift towards each
    # client's optimum, and FedAvg's fixed point is not the global optimum sum(h_i o_i) / sum(h_i).
    torch.manual_seed(0)
    curv = torch.tensor([[1.0, 0.2], [0.2, 1.0], [2.0, 0.5], [0.5, 2.0]])
    optima = torch.tensor([[4.0, -2.0], [-3.0, 1.0], [1.0, 3.0], [-1.0, -4.0]])
    w_star = (curv * optima).sum(0) / curv.sum(0)
    fedavg, _, _ = run_rounds(FedAvg(), curv, optima, rounds=40, steps=10, lr=0.1)
    scaffold, server, states = run_rounds(Scaffold(), curv, optima, rounds=40, steps=10, lr=0.1)
    err_avg = float((fedavg - w_star).norm())
    err_scaffold = float((scaffold - w_star).norm())
    assert err_avg > 0.3  # FedAvg is stuck at a biased point
    assert err_scaffold < 1e-3 < err_avg
    # at convergence c_i is client i's gradient at w* and c their mean (zero at the optimum)
    for i in range(4):
        assert torch.allclose(states[i]["c_i.w"], curv[i] * (w_star - optima[i]), atol=1e-3)
    assert torch.allclose(server["c.w"], torch.zeros(2), atol=1e-3)


def test_scaffold_first_round_control_variates_by_hand():
    # one step of SGD from x = 0 on client i: y_i = x - lr * h_i (x - o_i) = lr * h_i * o_i
    # option II: c_i+ = c_i - c + (x - y_i) / (K lr) = -h_i o_i ; server c = (1/N) sum_{i in S} delta c_i
    curv = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    optima = torch.tensor([[1.0], [1.0], [-1.0], [2.0]])
    w, server, states = run_rounds(Scaffold(), curv, optima, rounds=1, steps=1, lr=0.1, participants=lambda t: [0, 1])
    assert states[0]["c_i.w"].item() == pytest.approx(-1.0, abs=1e-6)
    assert states[1]["c_i.w"].item() == pytest.approx(-2.0, abs=1e-6)
    assert 2 not in states and 3 not in states
    assert server["c.w"].item() == pytest.approx((-1.0 - 2.0) / 4, abs=1e-6)  # N = 4 clients, not |S| = 2
    assert w.item() == pytest.approx((0.1 * 1 + 0.2 * 1) / 2, abs=1e-6)  # mean of y_i = lr h_i o_i


def test_scaffold_control_variate_is_option_two_for_sgd():
    # option II: c_i+ = c_i - c + (x - y_i) / (K lr), checked against the final weights of 3 SGD steps in round 2
    curv = torch.tensor([[1.0, 0.5], [2.0, 0.1]])
    optima = torch.tensor([[1.0, -1.0], [-2.0, 3.0]])
    strat = Scaffold()
    model = Point(2)
    x = float_state(model)
    server = strat.init_server_state(x)
    states: dict = {}
    step_loss, client_data = quadratic_clients(curv, optima, 3)
    x, server, _ = local_round(
        strat, model, x, server, states, [0, 1], client_data, RoundSpec(1, 2, 2, 0.1), sgd(step_loss)
    )
    c_i_before, c_before = states[0]["c_i.w"].clone(), server["c.w"].clone()
    local_round(strat, model, x, server, states, [0], client_data, RoundSpec(2, 2, 2, 0.1), sgd(step_loss))
    y0 = model.w.detach()  # the model still holds client 0's local result
    option2 = c_i_before - c_before + (x["w"] - y0) / (3 * 0.1)
    assert torch.allclose(states[0]["c_i.w"], option2, atol=1e-5)


def test_fedprox_term_by_hand_and_mu_zero_is_fedavg():
    model = Point(3)
    with torch.no_grad():
        model.w.copy_(torch.tensor([1.0, 2.0, -2.0]))
    g = {"w": torch.tensor([0.0, 1.0, 0.0])}
    ctx = ClientContext(0, 1, 1, 1, model, g, {}, None, 0.1)
    FedProx(FedProxParams(mu=0.5)).begin_local(ctx)
    # (mu/2) * ((1-0)^2 + (2-1)^2 + (-2-0)^2) = 0.25 * 6
    assert proximal_term(ctx, 0.5).item() == pytest.approx(1.5)
    curv = torch.tensor([[1.0, 0.2], [0.2, 1.0]])
    optima = torch.tensor([[4.0, -2.0], [-3.0, 1.0]])
    a, _, _ = run_rounds(FedAvg(), curv, optima, rounds=3, steps=5, lr=0.1)
    b, _, _ = run_rounds(FedProx(FedProxParams(mu=0.0)), curv, optima, rounds=3, steps=5, lr=0.1)
    c, _, _ = run_rounds(FedProx(FedProxParams(mu=1.0)), curv, optima, rounds=3, steps=5, lr=0.1)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    with pytest.raises(ValueError, match=r"fl.mu = -1 is not allowed"):
        FedProxParams(mu=-1)


def test_fedvsr_objective_is_lambda_weighted_sum():
    torch.manual_seed(0)
    sr, hr = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    base = torch.tensor(0.25)
    strat = FedVSR(FedVSRParams(lambda_vsr=0.5, lambda_hifr=2.0))
    got = strat.local_objective(None, base, sr, hr)
    assert got.item() == pytest.approx(0.5 * 0.25 + 2.0 * hifr_loss(sr, hr).item(), rel=1e-6)
    off = FedVSR(FedVSRParams(lambda_hifr=0.0))
    assert off.local_objective(None, base, sr, hr) is base


def test_fedvsr_aggregation_uses_inverse_loss_weights():
    # two clients, one local step each; losses L_i are what run_client reports; weights (1/L_i)^a_t
    curv = torch.tensor([[1.0], [1.0]])
    optima = torch.tensor([[1.0], [3.0]])
    strat = FedVSR(FedVSRParams(lambda_hifr=0.0, alpha=2.0, alpha_decay="none"))
    w, _, _ = run_rounds(strat, curv, optima, rounds=1, steps=1, lr=0.5)
    # L_0 = 0.5 * 1^2 = 0.5, L_1 = 0.5 * 3^2 = 4.5; y_0 = 0.5, y_1 = 1.5; I = (1/L)^2 = 4, 1/20.25
    i0, i1 = 4.0, 1 / 20.25
    assert w.item() == pytest.approx((i0 * 0.5 + i1 * 1.5) / (i0 + i1), rel=1e-6)
    uniform = FedVSR(FedVSRParams(lambda_hifr=0.0, alpha=0.0))
    w0, _, _ = run_rounds(uniform, curv, optima, rounds=1, steps=1, lr=0.5)
    assert w0.item() == pytest.approx(1.0, rel=1e-6)


def test_hellinger_mixing_blends_uniform_and_loss_aware_models():
    curv = torch.tensor([[1.0], [1.0]])
    optima = torch.tensor([[1.0], [3.0]])
    strat = FedVSR(FedVSRParams(lambda_hifr=0.0, alpha=1.0, alpha_decay="none", mixing="hellinger"))
    w, _, _ = run_rounds(strat, curv, optima, rounds=1, steps=1, lr=0.5)
    weights = [1 / 0.5, 1 / 4.5]
    p = np.array(weights) / sum(weights)
    h = math.sqrt(0.5 * ((math.sqrt(0.5) - math.sqrt(p[0])) ** 2 + (math.sqrt(0.5) - math.sqrt(p[1])) ** 2))
    m = (h - 0.05) / 0.95
    assert hellinger_coefficient(weights) == pytest.approx(m)
    mixed = (1 - m) * 0.5 + m * p  # per-client weights
    assert w.item() == pytest.approx(mixed[0] * 0.5 + mixed[1] * 1.5, rel=1e-6)


def test_nan_client_is_left_out_and_global_stays_finite():
    curv = torch.tensor([[1.0], [1.0], [1.0]])
    optima = torch.tensor([[1.0], [float("nan")], [3.0]])
    # two SGD steps of lr 0.5 from 0 with h = 1: y = 0.75 o, so y_0 = 0.75 and y_2 = 2.25;
    # losses per step 0.5 o^2 and 0.125 o^2: L_0 = 0.3125, L_2 = 2.8125; FedVSR at t=1 of T=5: a = 0.8
    i0, i2 = (1 / 0.3125) ** 0.8, (1 / 2.8125) ** 0.8
    expected = {"fedavg": 1.5, "scaffold": 1.5, "fedvsr": (i0 * 0.75 + i2 * 2.25) / (i0 + i2)}
    for strat in (FedAvg(), FedVSR(), Scaffold()):
        model = Point(1)
        params = float_state(model)
        step_loss, client_data = quadratic_clients(curv, optima, 2)
        new, _, results = local_round(
            strat,
            model,
            params,
            strat.init_server_state(params),
            {},
            [0, 1, 2],
            client_data,
            RoundSpec(1, 5, 3, 0.5),
            sgd(step_loss),
        )
        assert [r.ok for r in results] == [True, False, True]
        assert "non-finite training loss" in results[1].reason
        assert torch.isfinite(new["w"]).all()
        assert new["w"].item() == pytest.approx(expected[strat.name], rel=1e-6)  # the two finite clients only


@pytest.mark.parametrize(
    ("name", "overrides", "lambda_hifr", "loss_aware", "decay"),
    [
        ("fedvsr", ["fl.lambda_hifr=0.3", "fl.alpha_decay=power"], 0.3, True, "power"),
        ("fedavg-dwt", ["fl.lambda_hifr=0.3"], 0.3, False, "linear"),
        ("fedvsr-gla", [], 0.0, True, "none"),
        ("fedvsr-ala", ["fl.alpha_decay=power"], 0.0, True, "power"),
    ],
)
def test_ablations_switch_the_right_parts_off(name, overrides, lambda_hifr, loss_aware, decay):
    cfg = load_config(None, [f"fl.strategy={name}", *overrides])
    s = build_strategy(cfg.fl)
    assert s.name == name and isinstance(s, FedVSR)
    assert (s.params.lambda_hifr, s.params.loss_aware, s.params.alpha_decay) == (lambda_hifr, loss_aware, decay)
    assert s.params == cfg.fl.params  # the config holds the strategy's own dataclass, fixed fields applied


def test_the_registry_builds_every_strategy_from_its_entry():
    from fedvsr.fl.registry import get_strategy, readers, strategy_names

    assert strategy_names() == ("fedavg", "fedprox", "scaffold", "fedvsr", "fedavg-dwt", "fedvsr-gla", "fedvsr-ala")
    assert [type(get_strategy(n).build()).__name__ for n in strategy_names()] == [
        "FedAvg",
        "FedProx",
        "Scaffold",
        "FedVSR",
        "FedVSR",
        "FedVSR",
        "FedVSR",
    ]
    assert get_strategy("fedvsr-ala").keys() == ("lambda_vsr", "alpha", "alpha_decay", "mixing")
    assert readers("alpha_decay") == ["fedvsr", "fedvsr-ala"]
    with pytest.raises(ValueError, match="strategy 'fedvsr-gla' does not read lambda_hifr"):
        get_strategy("fedvsr-gla").make_params({"lambda_hifr": 0.5})
    with pytest.raises(TypeError, match="strategy 'fedprox' takes FedProxParams, not FedVSRParams"):
        get_strategy("fedprox").build(FedVSRParams())


def test_recipe_defaults_and_hifr_eps_reach_the_strategies():
    # FedVSR paper: mu above 1e-3 hurts VSR training, so 1e-3 is the default; eps of L_HiFr is a key
    assert build_strategy(load_config(None, ["fl.strategy=fedprox"]).fl).params.mu == 0.001
    s = build_strategy(load_config(None, ["fl.strategy=fedavg-dwt", "fl.hifr_eps=3.2e-5"]).fl)
    assert s.params.hifr_eps == 3.2e-5
    assert build_strategy(load_config(None, ["fl.strategy=fedvsr"]).fl).params.hifr_eps == 1e-3
    with pytest.raises(ConfigError, match=r"fl.hifr_eps = 0 is not allowed; expected a number > 0.0"):
        load_config(None, ["fl.hifr_eps=0"])


def test_loss_aware_weights_of_extreme_alpha_stay_finite():
    # (1/L)^a at a = 30, L = 0.02 is 1e51, beyond float32 (it used to become inf and the round was
    # rejected); at a = 400 and L = 1e-3 it is 1e1200, beyond float64. Weights are formed in log
    # space: the round aggregates (1/L_0)^a : (1/L_1)^a of the two clients' models.
    curv = torch.tensor([[1.0], [1.0]])
    for alpha, optima in ((30.0, (0.2, 0.3)), (400.0, (0.0447, 0.05))):
        strat = FedVSR(FedVSRParams(lambda_hifr=0.0, alpha=alpha, alpha_decay="none"))
        opt = torch.tensor([[optima[0]], [optima[1]]])
        w, _, _ = run_rounds(strat, curv, opt, rounds=1, steps=1, lr=0.5)
        # one SGD step of lr 0.5 from 0 on 0.5 (w - o)^2: y = o / 2, loss L = o^2 / 2
        losses = [o * o / 2 for o in optima]
        log_i = [-alpha * math.log(v) for v in losses]
        p0 = 1 / (1 + math.exp(log_i[1] - log_i[0]))
        assert torch.isfinite(w).all()
        assert w.item() == pytest.approx(p0 * optima[0] / 2 + (1 - p0) * optima[1] / 2, rel=1e-5)


def test_seed_torch_on_cpu_draws_what_torch_manual_seed_draws():
    """The worker seeds a CPU client with the CPU generator alone (no CUDA seed queued with its stack): the
    same numbers as ``torch.manual_seed`` (dropout masks, augmentations and initialisations stay bit-identical)."""
    torch.manual_seed(1234)
    want = (torch.rand(5), torch.randn(2, 3), torch.randint(0, 9, (4,)))
    torch.manual_seed(99)  # any other state in between
    seed_torch(1234, torch.device("cpu"))
    got = (torch.rand(5), torch.randn(2, 3), torch.randint(0, 9, (4,)))
    assert all(torch.equal(a, b) for a, b in zip(want, got, strict=True))
