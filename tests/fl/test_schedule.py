"""Learning-rate schedules (formulas, config keys) and where local training applies them; gradient clipping."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fedvsr.config import ConfigError, load_config
from fedvsr.fl import FedAvg
from fedvsr.fl.client import LocalTraining, train_local
from fedvsr.fl.schedule import LRSchedule
from fedvsr.fl.strategy import ClientContext, float_state


def test_cosine_multistep_and_warmup_formulas():
    cos = LRSchedule(lr=1e-3, kind="cosine", lr_min=1e-5)
    assert cos.at(0, 10) == pytest.approx(1e-3)
    assert cos.at(5, 10) == pytest.approx((1e-3 + 1e-5) / 2)  # half way: the mean of the two ends
    assert cos.at(9, 10) == pytest.approx(1e-5 + (1e-3 - 1e-5) * (1 + math.cos(math.pi * 0.9)) / 2)
    # torch's CosineAnnealingLR gives the same rates with T_max = n
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10, eta_min=1e-5)
    for i in range(10):
        assert cos.at(i, 10) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9)
        opt.step()
        sched.step()
    # FCVSR: 2e-4, halved at 2K, 8K and 12K of 30K
    fcvsr = LRSchedule(lr=2e-4, kind="multistep", milestones=(2000, 8000, 12000), gamma=0.5)
    assert [fcvsr.at(i, 30000) for i in (0, 1999, 2000, 7999, 8000, 12000, 29999)] == pytest.approx(
        [2e-4, 2e-4, 1e-4, 1e-4, 5e-5, 2.5e-5, 2.5e-5]
    )
    warm = LRSchedule(lr=1e-3, kind="constant", warmup=4)
    assert [warm.at(i, 20) for i in range(6)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'linear'"):
        LRSchedule(lr=1e-3, kind="linear")


def test_round_clock_and_local_clock():
    cfg = load_config(None, ["fl.rounds=5", "fl.lr_schedule=cosine", "fl.lr=1e-3"])
    s = LRSchedule.from_config(cfg.fl)
    # round clock: one rate per round, the round's position t - 1 of fl.rounds
    assert [s.round_rate(t, 5) for t in range(1, 6)] == pytest.approx(
        [1e-3 * (1 + math.cos(math.pi * (t - 1) / 5)) / 2 for t in range(1, 6)]
    )
    assert s.step_rate(3, 5, step=7, steps=10) == s.round_rate(3, 5)
    local = LRSchedule(lr=1e-3, kind="cosine", clock="local")
    assert local.step_rate(3, 5, step=2, steps=4) == pytest.approx(5e-4)  # half way through the round's steps
    assert local.step_rate(4, 5, step=2, steps=4) == pytest.approx(5e-4)  # restarts every round
    assert local.round_rate(4, 5) == pytest.approx(1e-3)


class Linear(nn.Module):
    """loss = g . w: every gradient is g, so a plain SGD step moves w by exactly -rate * g."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(dim, dtype=torch.float64))


def _train(schedule, steps, g, clip=0.0, round=1, rounds=4):
    model = Linear(g.numel())
    ctx = ClientContext(0, round, rounds, 1, model, float_state(model), {}, None, lr=schedule.lr if schedule else 1.0)

    def step_loss(m, batch):
        return (g * m.w).sum(), None, None

    result = train_local(
        ctx, FedAvg(), lambda epoch: [None] * steps, LocalTraining(1, "sgd", step_loss, schedule, steps, clip)
    )
    assert result.ok and result.steps == steps
    return model.w.detach()


def test_local_training_takes_each_step_at_the_scheduled_rate():
    g = torch.tensor([1.0, -2.0], dtype=torch.float64)
    cos = LRSchedule(lr=0.1, kind="cosine", clock="local")
    rates = [0.1 * (1 + math.cos(math.pi * i / 4)) / 2 for i in range(4)]  # 0.1, 0.0854, 0.05, 0.0146
    assert torch.allclose(_train(cos, 4, g), -sum(rates) * g)  # sum = 0.25
    warm_round = LRSchedule(lr=0.1, kind="constant", warmup=4, clock="round")
    assert torch.allclose(_train(warm_round, 3, g, round=2), -3 * 0.05 * g)  # round 2 of warm-up: 2/4 of 0.1


def test_clip_grad_norm_bounds_each_step():
    g = torch.tensor([3.0, 4.0], dtype=torch.float64)  # norm 5
    const = LRSchedule(lr=1.0)
    assert torch.allclose(_train(const, 2, g), -2 * g)
    assert torch.allclose(_train(const, 2, g, clip=1.0), -2 * g / 5)  # each step has norm 1, same direction
    assert torch.allclose(_train(const, 2, g, clip=10.0), -2 * g)  # a norm below the bound is untouched


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["fl.lr_schedule=multistep"], r"fl.lr_schedule = 'multistep' needs fl.lr_milestones"),
        (
            ["fl.lr_schedule=multistep", "fl.lr_milestones=[5, 3]"],
            r"fl.lr_milestones = \[5, 3\] is not allowed; expected increasing integers >= 1",
        ),
        (
            ["fl.lr_schedule=multistep", "fl.lr_milestones=[5, 20]"],
            r"fl.lr_milestones = \[5, 20\]: 20 is never reached with fl.lr_clock = 'round' and fl.rounds = 20",
        ),
        (["fl.lr_milestones=[5]"], r"fl.lr_milestones = \[5\] is only used by fl.lr_schedule = 'multistep'"),
        (["fl.lr_milestones=[a]"], r"fl.lr_milestones = \['a'\] is not allowed; expected a list of integers"),
        (["fl.lr_schedule=cosine", "fl.lr_min=0.01"], r"fl.lr_min = 0.01 must be below fl.lr = 0.002"),
        (["fl.lr_warmup=20"], r"fl.lr_warmup = 20 rounds is not shorter than fl.rounds = 20"),
        (["fl.lr_schedule=step"], r"fl.lr_schedule = 'step' is not allowed; expected one of 'constant', 'cosine'"),
        (["fl.lr_clock=epoch"], r"fl.lr_clock = 'epoch' is not allowed; expected one of 'round', 'local'"),
        (["fl.clip_grad_norm=-1"], r"fl.clip_grad_norm = -1 is not allowed; expected a number >= 0.0"),
        (["fl.lr_gamma=0"], r"fl.lr_gamma = 0 is not allowed; expected a number > 0.0"),
    ],
)
def test_bad_schedule_keys(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_schedule_keys_that_are_valid():
    cfg = load_config(
        None, ["fl.lr_schedule=multistep", "fl.lr_milestones=[100, 300]", "fl.lr_clock=local", "fl.lr_warmup=50"]
    )
    assert cfg.fl.lr_milestones == [100, 300]  # the local clock's horizon is only known per round
    assert load_config(None, ["fl.lr_schedule=multistep", "fl.lr_milestones=10"]).fl.lr_milestones == [10]
