"""Seeded per-round client sampling (FedVSR Algorithm 1 line 3: 4 of 40 clients a round)."""

import numpy as np
import pytest

from fedvsr.fl.sampling import client_seed, sample_clients


def test_same_seed_and_round_same_clients():
    a = sample_clients(7, 3, 40, 4)
    assert a == sample_clients(7, 3, 40, 4)
    assert len(a) == 4 and len(set(a)) == 4 and a == sorted(a)
    assert all(isinstance(c, int) and 0 <= c < 40 for c in a)


def test_recipe_is_default_rng_of_seed_and_round():
    expected = sorted(np.random.default_rng([7, 3]).choice(40, size=4, replace=False).tolist())
    assert sample_clients(7, 3, 40, 4) == expected


def test_rounds_independent_of_history_so_resume_matches():
    full_run = [sample_clients(11, t, 40, 4) for t in range(1, 101)]
    resumed = [sample_clients(11, t, 40, 4) for t in range(60, 101)]  # restart at round 60
    assert resumed == full_run[59:]
    backwards = [sample_clients(11, t, 40, 4) for t in range(100, 0, -1)]
    assert backwards[::-1] == full_run
    assert len({tuple(s) for s in full_run}) > 90  # rounds differ
    assert {c for s in full_run for c in s} == set(range(40))  # everyone gets picked eventually
    assert sample_clients(12, 1, 40, 4) != full_run[0] or sample_clients(12, 2, 40, 4) != full_run[1]


def test_all_clients_when_per_round_equals_clients():
    assert sample_clients(0, 1, 5, 5) == [0, 1, 2, 3, 4]


def test_sampling_errors():
    with pytest.raises(ValueError, match="clients_per_round must be in 1..clients=4, got 5"):
        sample_clients(0, 1, 4, 5)
    with pytest.raises(ValueError, match="clients_per_round must be in 1..clients=4, got 0"):
        sample_clients(0, 1, 4, 0)
    with pytest.raises(ValueError, match=r"round must be an integer >= 1 \(1-based\), got 0"):
        sample_clients(0, 0, 4, 2)
    with pytest.raises(ValueError, match="seed must be an integer >= 0, got -1"):
        sample_clients(-1, 1, 4, 2)


def test_client_seed():
    s = client_seed(5, 2, 17)
    assert s == client_seed(5, 2, 17)
    assert isinstance(s, int) and 0 <= s < 2**63
    state = int(np.random.SeedSequence([5, 2, 17]).generate_state(1, dtype=np.uint64)[0])
    assert s == state & (2**63 - 1)
    others = {client_seed(5, 2, 18), client_seed(5, 3, 17), client_seed(6, 2, 17)}
    assert s not in others and len(others) == 3
    with pytest.raises(ValueError, match="client must be an integer >= 0, got -3"):
        client_seed(5, 2, -3)


def test_dropout_and_speeds_are_the_documented_salted_draws():
    from fedvsr.fl.sampling import DROPOUT_SALT, SPEED_SALT, client_speeds, drops_out

    assert (DROPOUT_SALT, SPEED_SALT) == (0xD0, 0x5EED)  # the draws of every recorded run depend on them
    draws = [np.random.default_rng([client_seed(3, 2, c), 0xD0]).random() for c in range(40)]
    assert [drops_out(3, 2, c, 0.3) for c in range(40)] == [d < 0.3 for d in draws]
    assert 5 < sum(drops_out(3, 2, c, 0.3) for c in range(40)) < 20
    assert not any(drops_out(3, 2, c, 0.0) for c in range(40))
    z = np.random.default_rng([3, 0x5EED]).standard_normal(6)
    assert client_speeds(3, 6, 0.5).tolist() == np.exp(0.5 * z).tolist()
    assert client_speeds(3, 6, 0.0).tolist() == [1.0] * 6


def test_deadline_rules_cut_or_drop_a_late_client():
    from fedvsr.fl.participation import ClientPlan, Limits, deadline_limits, missed_deadline

    assert ClientPlan.of(4.0, 0.75, attempt=2) == ClientPlan(2, 0.75, 3.0)
    assert ClientPlan.of(0.0, 0.75) == ClientPlan(1, 0.75, 0.0)
    assert deadline_limits(3.0, "steps", "cut", 5) == Limits(max_steps=3)
    assert deadline_limits(5.5, "steps", "cut", 5) == Limits()
    assert deadline_limits(0.5, "steps", "cut", 5) == Limits(refused="the deadline came before the first local step")
    assert deadline_limits(3.0, "steps", "drop", 5) == Limits(
        refused="missed the deadline: needs 5 local steps, its deadline allows 3"
    )
    assert deadline_limits(2.5, "seconds", "drop", 5) == Limits(time_budget=2.5)
    assert deadline_limits(0.0, "seconds", "drop", 5) == Limits()
    assert missed_deadline(True, "drop", 2.5, 3, 5) == "missed the deadline: 2.5 s allowed, 3 of 5 local steps done"
    assert missed_deadline(True, "cut", 2.5, 3, 5) == missed_deadline(False, "drop", 2.5, 5, 5) == ""
