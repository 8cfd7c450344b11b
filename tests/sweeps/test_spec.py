"""Sweep specs: the shipped spaces, validation before Ray starts, grid expansion, Optuna proposals."""

from __future__ import annotations

import optuna
import pytest
import yaml

from fedvsr.sweeps.spec import SpecError, build_spec, list_specs, load_spec

TINY = {"model.preset": "tiny", "fl.rounds": 3}


def spec(params: dict, search: str = "grid", **top) -> object:
    return build_spec("t", {"search": search, "fixed": {**TINY, **top.pop("fixed", {})}, "params": params, **top})


def test_every_shipped_spec_loads_and_is_listed():
    names = [n for n, _ in list_specs()]
    assert {
        "fedvsr-lambda-bounded",
        "fedvsr-lambda-unbounded",
        "fedprox-mu",
        "fedvsr-alpha-decay",
        "strategy-model-preset",
        "fedvsr-tpe",
    } <= set(names)
    for name in names:
        s = load_spec(name)
        assert s.trials >= 1 and s.description


def test_bounded_lambda_grid_sums_to_one():
    s = load_spec("fedvsr-lambda-bounded")
    points = s.grid_points()
    assert [p["fl.lambda_hifr"] for p in points] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert [p["fl.lambda_vsr"] for p in points] == [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]  # exact decimals
    assert s.fixed["fl.rounds"] == 20 and s.fixed["fl.strategy"] == "fedvsr"


def test_unbounded_lambda_grid_is_ten_by_ten():
    s = load_spec("fedvsr-lambda-unbounded")
    points = s.grid_points()
    assert len(points) == 100 == s.trials
    assert {(p["fl.lambda_vsr"], p["fl.lambda_hifr"]) for p in points} == {
        (a / 10, b / 10) for a in range(1, 11) for b in range(1, 11)
    }


def test_fedprox_mu_candidates():
    assert [p["fl.mu"] for p in load_spec("fedprox-mu").grid_points()] == [0.001, 0.01, 0.1, 1.0]


def test_conditional_keys_expand_only_where_they_apply():
    s = load_spec("strategy-model-preset")
    points = s.grid_points()
    assert len(points) == 4 * 2 * 2
    assert all(("fl.mu" in p) == (p["fl.strategy"] == "fedprox") for p in points)
    assert all(p["fl.mu"] == 0.001 for p in points if "fl.mu" in p)


def test_joint_parameter_draws_only_listed_pairs():
    s = spec(
        {
            "fl.strategy": {"grid": ["fedavg", "fedprox"]},
            "pair": {"keys": ["fl.clients", "fl.clients_per_round"], "choice": [[8, 2], [6, 3]]},
        }
    )
    assert s.grid_points() == [
        {"fl.strategy": "fedavg", "fl.clients": 8, "fl.clients_per_round": 2},
        {"fl.strategy": "fedavg", "fl.clients": 6, "fl.clients_per_round": 3},
        {"fl.strategy": "fedprox", "fl.clients": 8, "fl.clients_per_round": 2},
        {"fl.strategy": "fedprox", "fl.clients": 6, "fl.clients_per_round": 3},
    ]
    assert s.trial_overrides({"pair": "[8, 2]", "fl.clients": 8, "fl.clients_per_round": 2}) == {
        "fl.clients": 8,
        "fl.clients_per_round": 2,
    }


@pytest.mark.parametrize(
    ("params", "extra", "message"),
    [
        ({"fl.bogus": {"grid": [1]}}, {}, "unknown key 'fl.bogus'"),
        (
            {"fl.lr": {"uniform": [-1.0, 0.1]}},
            {"search": "optuna", "trials": 2},
            r"fl.lr = -1.0 is not allowed; expected a number > 0.0",
        ),
        ({"fl.lr": {"uniform": [0.1, 0.01]}}, {"search": "optuna", "trials": 2}, "expected finite low < high"),
        ({"fl.lr": {"loguniform": [0.0, 0.1]}}, {"search": "optuna", "trials": 2}, "low must be > 0"),
        ({"fl.lr": {"uniform": [0.001, 0.1]}}, {}, "search = 'grid' needs listed values"),
        (
            {"fl.mu": {"grid": [0.1], "when": {"fl.strategy": "fedprox"}}},
            {},
            "when names 'fl.strategy', which is neither a fixed key nor a parameter listed earlier",
        ),
        (
            {"fl.strategy": {"grid": ["fedavg"]}, "fl.mu": {"grid": [0.1], "when": {"fl.strategy": "fedprox"}}},
            {},
            r"when fl.strategy in \['fedprox'\] can never hold",
        ),
        ({"fl.strategy": {"grid": ["fedavg", "nope"]}}, {}, "fl.strategy = 'nope' is not allowed"),
        (
            {
                "fl.lambda_hifr": {"grid": [0.5, 2.0]},
                "fl.lambda_vsr": {"affine": "fl.lambda_hifr", "scale": -1, "offset": 1},
            },
            {},
            r"fl.lambda_vsr = -1.0 is not allowed; expected a number >= 0.0",
        ),
        (
            {"p": {"keys": ["fl.clients", "fl.clients_per_round"], "choice": [[8, 2, 1]]}},
            {},
            r"must be a list of 2 values",
        ),
        (
            {"fl.clients_per_round": {"grid": [2, 40]}},
            {},
            r"grid point fl.clients_per_round=40 is not a valid "
            "experiment: fl.clients_per_round = 40 is larger than fl.clients = 8",
        ),
        ({"fl.lr": {"grid": [0.1]}}, {"metric": "lpips"}, "metric = 'lpips' is not allowed"),
        ({"fl.lr": {"grid": [0.1]}}, {"schedule": "asha"}, "unknown top-level key"),
        ({"fl.lr": {"grid": [0.1]}}, {"asha": {"grace_period": 9}}, r"asha.grace_period = 9 .* \[1, 3\]"),
        ({"fl.lr": {"choice": [0.1]}}, {"search": "optuna"}, "needs trials"),
        ({"fl.lr": {"grid": [0.1], "spread": 2}}, {}, "unknown field"),
        ({"fl": {"grid": [0.1]}}, {}, "'fl' is a section, not a key"),
    ],
)
def test_bad_specs_are_rejected_before_ray(params, extra, message):
    with pytest.raises(SpecError, match=message):
        spec(params, **extra)


def test_set_cannot_override_a_swept_key(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"search": "grid", "fixed": TINY, "params": {"fl.lr": {"grid": [0.1, 0.2]}}}))
    with pytest.raises(SpecError, match="--set fl.lr=... names a key the spec sweeps"):
        load_spec(path, ["fl.lr=0.3"])
    assert load_spec(path, ["fl.rounds=2"]).fixed["fl.rounds"] == 2


def test_unknown_spec_name_lists_the_shipped_ones():
    with pytest.raises(SpecError, match="unknown sweep spec 'nope'.*fedprox-mu"):
        load_spec("nope")


def _proposals(s, n: int) -> list[dict]:
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=s.seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        extra = s.suggest(trial)
        out.append({**trial.params, **extra})
        study.tell(trial, 1.0)
    return out


def test_optuna_proposals_follow_the_conditions_and_the_seed():
    s = load_spec("fedvsr-tpe")
    a, b = _proposals(s, 12), _proposals(s, 12)
    assert a == b  # same seed, same proposals
    assert _proposals(load_spec("fedvsr-tpe", seed=1), 12) != a
    for p in a:
        assert ("fl.mu" in p) == (p["fl.strategy"] == "fedprox")
        assert ("fl.lambda_hifr" in p) == ("fl.alpha_decay" in p) == (p["fl.strategy"] == "fedvsr")
        assert 0.0005 <= p["fl.lr"] <= 0.005
        s.experiment_config(s.trial_overrides(p))  # every proposal is a valid experiment
    assert {p["fl.strategy"] for p in a} == {"fedavg", "fedprox", "fedvsr"}


def test_searcher_marks_trials_stopped_early_as_pruned():
    from fedvsr.sweeps.runner import _optuna_search

    s = spec({"fl.lr": {"loguniform": [1e-4, 1e-2]}}, search="optuna", trials=3)
    search = _optuna_search(s)
    for tid in ("a", "b", "c"):
        search.suggest(tid)
    for rnd in (1, 2, 3):
        search.on_trial_result("a", {"psnr": 28.0 + rnd, "training_iteration": rnd, "round": rnd, "rounds": 3})
    search.on_trial_complete("a", {"psnr": 31.0, "round": 3, "rounds": 3})
    search.on_trial_result("b", {"psnr": 20.0, "training_iteration": 1, "round": 1, "rounds": 3})
    search.on_trial_complete("b", {"psnr": 20.0, "round": 1, "rounds": 3})  # stopped by ASHA after round 1
    search.on_trial_complete("c", None, error=True)
    states = {t.number: (t.state, t.value) for t in search._ot_study.trials}
    assert states[0] == (optuna.trial.TrialState.COMPLETE, 31.0)
    assert states[1] == (optuna.trial.TrialState.PRUNED, 20.0)  # Optuna keeps the last intermediate value
    assert search._ot_study.trials[1].intermediate_values == {1: 20.0}
    assert states[2][0] == optuna.trial.TrialState.FAIL


def test_trials_with_a_grid_are_refused_but_the_grid_size_round_trips(tmp_path):
    """A grid runs each point once: `trials` (or --trials) in a grid spec was silently ignored; only the grid's own
    size is accepted, which is what sweep.yaml records (so a saved spec loads again)."""
    with pytest.raises(SpecError) as info:
        spec({"fl.lr": {"grid": [0.1, 0.2]}}, trials=0)
    assert str(info.value) == (
        "sweep spec 't': trials = 0 is not allowed with search = 'grid', which runs each of "
        "its 2 points once; remove trials, or use search: optuna"
    )
    grid = spec({"fl.lr": {"grid": [0.1, 0.2]}})
    assert grid.trials == 2 and build_spec("again", grid.to_dict()).to_dict() == grid.to_dict()
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"search": "grid", "fixed": TINY, "params": {"fl.lr": {"grid": [0.1, 0.2]}}}))
    with pytest.raises(
        SpecError,
        match=r"--trials = 2: sweep spec 'g' is a grid \(search: grid\), which runs each "
        r"of its points once; drop --trials",
    ):
        load_spec(path, trials=2)


def test_a_joint_parameter_named_after_a_key_is_refused():
    """The name check once asked whether None was a valid value of the key, so a key like fl.lr passed as a name."""
    with pytest.raises(SpecError, match="a joint parameter's name must not be a config key"):
        spec({"fl.lr": {"keys": ["fl.lr", "fl.mu"], "grid": [[0.1, 0.1]]}})


def test_searcher_seed_and_replicates_are_bounded():
    with pytest.raises(
        SpecError,
        match=r"seed = 4294967296 is not allowed; expected an integer >= 0 and <= "
        r"4294967295 \(the searcher's seed: Optuna's sampler takes 32 bits\)",
    ):
        spec({"fl.lr": {"grid": [0.1]}}, seed=2**32)
    with pytest.raises(
        SpecError,
        match=r"seed = 9223372036854775806 with replicates = 3 gives replicate seeds above "
        r"9223372036854775807 \(2\^63 - 1\); allowed: seed <= 9223372036854775805",
    ):
        build_spec(
            "test",
            {
                "search": "grid",
                "replicates": 3,
                "fixed": {**TINY, "seed": 2**63 - 2},
                "params": {"fl.lr": {"grid": [0.1]}},
            },
        )
