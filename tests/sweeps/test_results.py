"""Result rows of runs and sweeps, ranking for `fedvsr best`, and the winner's YAML."""

from __future__ import annotations

import json

import pytest
import yaml
from scipy import stats as st

from fedvsr.config import ConfigError, key_applies, load_config
from fedvsr.report import asha_rungs
from fedvsr.sweeps.points import best_yaml, rank_points, top_table, winner_warnings
from fedvsr.sweeps.results import collect_rows, rank, run_row, to_table, winner_yaml
from tests.folders import fake_group, fake_run, fake_sweep


def test_run_row_numbers(tmp_path):
    row = run_row(fake_run(tmp_path / "a", [28.0, 29.5, 29.1]))
    assert row["status"] == "finished" and row["rounds"] == row["rounds_run"] == 3
    assert row["final_psnr"] == 29.1 and row["best_psnr"] == 29.5 and row["best_round"] == 2
    assert row["final_ssim"] == pytest.approx(0.5 + 0.291) and row["best_ssim"] == pytest.approx(0.795)
    assert row["final_loss"] == pytest.approx(0.1 / 3) and row["seconds"] == 6.0
    assert row["fl.lr"] == 0.002 and row["fl.strategy"] == "fedavg" and row["model.name"] == "efvsr"
    assert row["bicubic_psnr"] == 27.5
    half = run_row(fake_run(tmp_path / "b", [28.0], rounds=3, finished=False))
    assert half["status"] == "incomplete" and half["rounds_run"] == 1


def test_rank_finished_first_then_filters(tmp_path):
    fake_run(tmp_path / "runs" / "a", [28.0, 29.0], lr=0.001)
    fake_run(tmp_path / "runs" / "b", [28.0, 29.4], lr=0.002, strategy="fedprox")
    fake_run(tmp_path / "runs" / "c", [30.0], rounds=2, lr=0.004, status="stopped")
    fake_run(tmp_path / "runs" / "d", [28.0, 28.5], lr=0.003)
    (tmp_path / "runs" / "d" / "error.txt").write_text("RuntimeError: boom")
    (tmp_path / "runs" / "d" / "summary.json").unlink()
    rows = collect_rows([tmp_path])
    assert sorted(r["trial"] for r in rows) == ["a", "b", "c", "d"]
    assert {r["trial"]: r["status"] for r in rows}["d"] == "error"
    ranked, column, mode = rank(rows, "psnr")
    assert [r["trial"] for r in ranked] == ["b", "a"] and (column, mode) == ("final_psnr", "max")
    ranked, _, _ = rank(rows, "psnr", include_stopped=True)
    assert [r["trial"] for r in ranked] == ["c", "b", "a"]
    ranked, _, _ = rank(rows, "psnr", where=[("fl.strategy", "fedavg")])
    assert [r["trial"] for r in ranked] == ["a"]
    ranked, _, _ = rank(rows, "psnr", where=[("fl.lr", 0.002)])
    assert [r["trial"] for r in ranked] == ["b"]
    ranked, column, mode = rank(rows, "loss")
    assert (column, mode) == ("final_loss", "min") and [r["trial"] for r in ranked] == ["a", "b"]  # a tie: stable
    with pytest.raises(ValueError, match="no column 'lpips'"):
        rank(rows, "lpips")


def test_winner_yaml_is_a_config_simulate_accepts(tmp_path):
    row = run_row(fake_run(tmp_path / "a", [28.0, 29.5], lr=0.003))
    text = winner_yaml(row, "final_psnr", "max", 4)
    assert text.startswith("# fedvsr best: trial a (") and "final_psnr = 29.5000 (max over 4 runs, 2 rounds)" in text
    path = tmp_path / "best.yaml"
    path.write_text(text)
    cfg = load_config(path)
    assert cfg.fl.lr == 0.003 and cfg.fl.rounds == 2
    assert yaml.safe_load(text) == cfg.to_dict()


def test_table_of_mixed_columns(tmp_path):
    table = to_table([{"trial": "a", "x": 1, "y": 0.5, "z": "s"}, {"trial": "b", "x": "two", "y": 2, "z": None}])
    assert table.column("x").to_pylist() == ["1", "two"]  # a choice of numbers and strings: strings
    assert table.column("y").to_pylist() == [0.5, 2.0]
    assert table.column("status").to_pylist() == [None, None]


def test_collect_rows_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no sweep"):
        collect_rows([tmp_path])
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        collect_rows([tmp_path / "nope"])


def test_asha_rungs():
    assert asha_rungs(2, 3, 20) == [2, 6, 18]
    assert asha_rungs(1, 2, 3) == [1, 2]
    assert asha_rungs(5, 3, 5) == []


# ------------------------------------------------------------------------------- applicability, --where


@pytest.mark.parametrize(
    ("flat", "key", "applies"),
    [
        ({"fl.strategy": "fedprox"}, "fl.mu", True),
        ({"fl.strategy": "fedvsr"}, "fl.mu", False),
        ({"fl.strategy": "scaffold"}, "fl.server_lr", True),
        ({"fl.strategy": "fedavg"}, "fl.server_lr", False),
        ({"fl.strategy": "fedavg-dwt"}, "fl.lambda_hifr", True),
        ({"fl.strategy": "fedvsr-gla"}, "fl.lambda_hifr", False),  # gla and ala drop L_HiFr
        ({"fl.strategy": "fedvsr-ala"}, "fl.hifr_eps", False),
        ({"fl.strategy": "fedvsr-ala"}, "fl.lambda_vsr", True),  # still scales the loss
        ({"fl.strategy": "fedavg"}, "fl.lambda_vsr", False),
        ({"fl.strategy": "fedavg-dwt"}, "fl.alpha", False),  # sample weights, no loss-aware exponent
        ({"fl.strategy": "fedvsr-gla"}, "fl.alpha", True),
        ({"fl.strategy": "fedvsr-gla"}, "fl.alpha_decay", False),  # forced to none
        ({"fl.strategy": "fedvsr-ala"}, "fl.alpha_decay", True),
        ({"fl.strategy": "fedavg-dwt"}, "fl.mixing", True),  # hellinger still blends the sample weights
        ({"fl.strategy": "fedprox"}, "fl.mixing", False),
        ({"data.degradation": "h264"}, "data.crf", True),
        ({"data.degradation": "hevc"}, "data.crf", False),
        ({"data.degradation": "hevc"}, "data.qp", True),
        ({"data.degradation": "bicubic"}, "data.sigma", False),
        ({"data.degradation": "fca2-mix"}, "data.sigma", True),
        ({"data.degradation": "fca2-mix"}, "data.mix_crf_max", True),
        ({"data.degradation": "h264"}, "data.mix_compressed", False),
        ({"data.degradation": "vsrgan"}, "data.vsrgan_noise", True),
        ({"data.degradation": "blur"}, "data.vsrgan_ops", False),
        ({"fl.lr_schedule": "cosine"}, "fl.lr_min", True),
        ({"fl.lr_schedule": "multistep"}, "fl.lr_min", False),
        ({"fl.lr_schedule": "multistep"}, "fl.lr_gamma", True),
        ({"fl.lr_schedule": "constant"}, "fl.lr_milestones", False),
        ({"fl.lr_schedule": "constant", "fl.lr_warmup": 0}, "fl.lr_clock", False),
        ({"fl.lr_schedule": "constant", "fl.lr_warmup": 2}, "fl.lr_clock", True),
        ({"fl.partition": "dirichlet"}, "fl.dirichlet_beta", True),
        ({"fl.partition": "by-class"}, "fl.dirichlet_beta", False),
        ({"fl.deadline": 0.0}, "fl.deadline_action", False),
        ({"fl.deadline": 3.0}, "fl.deadline_unit", True),
        ({"fl.deadline": 0.0}, "fl.stragglers", False),
        ({"data.source": "reds"}, "data.videos", False),
        ({"eval.source": "holdout"}, "eval.root", False),
        ({"fl.strategy": "fedvsr"}, "fl.lr", True),  # no condition
        ({}, "fl.mu", True),  # the condition's key is unknown: kept
    ],
)
def test_key_applies(flat, key, applies):
    assert key_applies(flat, key) is applies


def test_keys_that_do_not_apply_are_empty_so_where_matches_only_their_runs(tmp_path):
    fake_run(tmp_path / "prox", [28.0, 28.4], strategy="fedprox")
    fake_run(tmp_path / "vsr", [28.0, 28.6], strategy="fedvsr")
    rows = {r["trial"]: r for r in collect_rows([tmp_path])}
    assert rows["prox"]["fl.mu"] == 0.001 and rows["vsr"]["fl.mu"] is None
    assert rows["vsr"]["fl.lambda_hifr"] == 1.0 and rows["prox"]["fl.lambda_hifr"] is None
    assert rows["vsr"]["data.crf"] is None  # bicubic degradation: no CRF
    ranked, _, _ = rank(list(rows.values()), where=[("fl.mu", 0.001)])
    assert [r["trial"] for r in ranked] == ["prox"]  # the FedVSR run's default mu no longer matches


def test_unknown_where_key_is_refused_with_the_known_columns(tmp_path):
    rows = [run_row(fake_run(tmp_path / "a", [28.0]))]
    with pytest.raises(ConfigError, match=r"^--where fl\.mue: no such column among 1 runs; known columns: ") as err:
        rank(rows, where=[("fl.mue", 0.1)])
    assert "fl.mu, " in str(err.value) and "final_psnr" in str(err.value)


def test_gain_over_bicubic_and_the_below_bicubic_warning(tmp_path):
    row = run_row(fake_run(tmp_path / "a", [27.0, 27.3], bicubic=27.5))
    assert row["gain_db"] == pytest.approx(-0.2)
    ranking = rank_points([row])
    assert winner_warnings(ranking) == [
        "fedvsr best: warning: the winner a is below bicubic: final PSNR -0.2000 dB against bicubic's on the "
        "same clips (mean over 1 run); the model made the video worse than upscaling it does"
    ]
    above = rank_points([run_row(fake_run(tmp_path / "b", [28.0], bicubic=27.5))])
    assert above.points[0].gain.mean == pytest.approx(0.5) and winner_warnings(above) == []


# -------------------------------------------------------------------------------------- points, ties

# final PSNR of three points under the training seeds 0, 1, 2 (data seed 0): A leads, B within A's noise
# (paired p 0.063 > 0.05), C clearly below (paired p 0.0028, Holm x2 = 0.0055)
FINALS = {"A": [25.60, 25.62, 25.61], "B": [25.55, 25.60, 25.58], "C": [25.40, 25.45, 25.41]}


def _lambda_sweep(path, name="toy"):
    """A sweep of three lambda points, each a trial with 3 replicates (final PSNR = FINALS, bicubic 25.0)."""
    trials = {
        f"{i}-{p.lower()}": {
            "curves": [[25.2, v] for v in FINALS[p]],
            "strategy": "fedvsr",
            "bicubic": 25.0,
            "overrides": (f"fl.lambda_hifr={lam}",),
        }
        for i, (p, lam) in enumerate([("B", 0.3), ("A", 0.4), ("C", 0.5)])
    }
    return fake_sweep(
        path,
        trials,
        name=name,
        params={"fl.lambda_hifr": {"grid": [0.3, 0.4, 0.5]}},
        fixed={"fl.rounds": 2, "fl.strategy": "fedvsr"},
    )


def test_points_are_ranked_by_mean_with_their_tie_set(tmp_path):
    rows = collect_rows([_lambda_sweep(tmp_path / "lambdas")])
    assert len(rows) == 9 and {r["replicate"] for r in rows} == {0, 1, 2}
    ranking = rank_points(rows)
    assert [p.label for p in ranking.points] == ["lambdas/1-a", "lambdas/0-b", "lambdas/2-c"]
    a, b, c = ranking.points
    assert a.n == 3 and a.interval.mean == pytest.approx(25.61)
    assert a.interval.half == pytest.approx(st.t.ppf(0.975, 2) * 0.01 / 3**0.5)  # s = 0.01
    assert a.gain.mean == pytest.approx(0.61)
    p_b = st.ttest_rel(FINALS["A"], FINALS["B"]).pvalue
    p_c = st.ttest_rel(FINALS["A"], FINALS["C"]).pvalue
    assert b.ranked.versus_top.paired and b.ranked.p_adjusted == pytest.approx(p_b)  # Holm: p_b is the larger
    assert c.ranked.p_adjusted == pytest.approx(2 * p_c)
    assert (a.tie, b.tie, c.tie) == (True, True, False)


def test_best_yaml_names_replicates_and_ties(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ranking = rank_points(collect_rows([_lambda_sweep(tmp_path / "lambdas")]))
    text = best_yaml(ranking)
    head = [line for line in text.splitlines() if line.startswith("#")]
    assert head[0] == (
        "# fedvsr best: lambdas/1-a: final_psnr = 25.6100 +- 0.0248 (highest mean of 3 points, 9 runs; 2 rounds)"
    )
    assert head[1] == "# from sweep folder lambdas (spec 'toy'), trial 1-a"
    assert head[2].startswith(
        "# rests on n = 3 replicates: (data.seed, seed) = (0, 0), (0, 1), (0, 2); mean and "
        "95% t interval over them; the config below is that of lambdas/runs/1-a/rep-0"
    )
    assert head[3] == "# gain over bicubic: +0.6100 +- 0.0248 dB"
    # B: mean 25.57667, s^2 = (0.02667^2 + 0.02333^2 + 0.00333^2) / 2 = 0.000633, half = 4.3027 * 0.02517 / sqrt(3)
    assert head[4] == (
        "# not distinguishable from it at 95% (Holm-corrected paired t-tests): lambdas/0-b (25.5767 +- 0.0625)"
    )
    cfg = yaml.safe_load(text)
    assert cfg["fl"]["lambda_hifr"] == 0.4 and cfg["seed"] == 0


def test_top_table_marks_ties(tmp_path):
    ranking = rank_points(collect_rows([_lambda_sweep(tmp_path / "lambdas")]))
    lines = top_table(ranking, 3).splitlines()
    assert lines[0] == ("top 3 of 3 points (9 runs) by mean final_psnr (max), +- the 95% t interval over n replicates")
    assert lines[2].split() == ["#", "final_psnr", "n", "gain_db", "status", "rounds", "folder", "fl.lambda_hifr"]
    assert lines[3].split() == [
        "1",
        "=",
        "25.6100",
        "+-",
        "0.0248",
        "3",
        "+0.6100",
        "+-",
        "0.0248",
        "finished",
        "2",
        "lambdas/1-a",
        "0.4",
    ]
    assert lines[4].split()[:3] == ["2", "=", "25.5767"]
    assert lines[5].split()[:2] == ["3", "25.4200"]  # no mark: below #1 at 95%


def test_single_runs_say_no_interval_and_runner_up_untold(tmp_path):
    fake_run(tmp_path / "x", [28.0, 28.5], lr=0.001)
    fake_run(tmp_path / "y", [28.0, 28.4], lr=0.002)
    ranking = rank_points(collect_rows([tmp_path]))
    head = [line for line in best_yaml(ranking).splitlines() if line.startswith("#")]
    assert "rests on n = 1 replicate: (data.seed, seed) = (0, 0); the config" in head[2]
    assert head[-1] == (
        "# n = 1: no interval can be given from a single run, and the runner-up y (28.4000) cannot "
        "be told apart from it without replicates: rerun the top points with replicates (fedvsr "
        "simulate --replicates 3, or replicates: 3 in the sweep spec)"
    )
    assert ranking.points[1].tie is None and "?" in top_table(ranking, 2).splitlines()[-1].split()


def test_hand_run_seeds_form_one_point_and_a_repeated_seed_does_not(tmp_path):
    for seed, final in enumerate([28.0, 28.2, 28.4]):
        fake_run(tmp_path / f"sim-s{seed}", [27.0, final], seed=seed)
    fake_run(tmp_path / "sim-s0-again", [27.0, 28.1], seed=0)  # the same seed pair again: a repeat
    fake_run(tmp_path / "other", [27.0, 28.1], seed=0, lr=0.004)
    ranking = rank_points(collect_rows([tmp_path]))
    by = {p.label: p for p in ranking.points}
    assert set(by) == {"sim-s0 (+2)", "sim-s0-again", "other"}
    assert by["sim-s0 (+2)"].n == 3 and by["sim-s0 (+2)"].interval.mean == pytest.approx(28.2)
    # one point against two single runs: Welch cannot test n = 1; the top's own interval exists
    assert ranking.points[0].label == "sim-s0 (+2)" and ranking.points[1].tie is None


def test_two_sweeps_of_one_spec_are_labelled_by_their_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for where in ("a", "b"):
        fake_sweep(tmp_path / where / "sweep", {"0-x": {"psnrs": [28.0, 28.0 + len(where)], "lr": 0.001}})
    rows = collect_rows([tmp_path / "a" / "sweep", tmp_path / "b" / "sweep"])
    assert [r["sweep"] for r in rows] == ["toy", "toy"]  # one spec
    ranking = rank_points(rows)
    assert sorted(p.label for p in ranking.points) == ["a/sweep/0-x", "b/sweep/0-x"]
    assert len(ranking.points) == 2  # same config and seeds, different sweeps: not one point


def test_stopped_group_ranks_only_with_include_stopped(tmp_path):
    path = fake_sweep(
        tmp_path / "s",
        {
            "0-a": {"curves": [[28.0, 28.2], [28.0, 28.3]], "lr": 0.001},
            "1-b": {"curves": [[29.0], [29.1]], "rounds": 2, "lr": 0.002, "status": "stopped"},
        },
    )
    rows = collect_rows([path])
    assert [r["status"] for r in rows] == ["finished", "finished", "stopped", "stopped"]
    assert [p.label for p in rank_points(rows).points] == ["s/0-a"]
    ranking = rank_points(rows, include_stopped=True)
    assert [p.label for p in ranking.points] == ["s/1-b", "s/0-a"]
    assert ranking.points[0].rounds_run == 1 and ranking.points[0].interval.mean == pytest.approx(29.05)


def test_best_cli_prints_the_warning_and_refuses_unknown_keys(tmp_path, capsys):
    from fedvsr.cli import main

    fake_run(tmp_path / "a", [27.0, 27.3], bicubic=27.5)
    assert main(["best", str(tmp_path), "--where", "fl.lrr=0.1"]) == 2
    err = capsys.readouterr().err
    assert "fedvsr: config error: --where fl.lrr: no such column among 1 runs; known columns:" in err
    assert main(["best", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "the winner a is below bicubic" in err and load_config(None).fl.lr == yaml.safe_load(out)["fl"]["lr"]
    assert main(["best", str(tmp_path), "--json", "--top", "1"]) == 0
    (point,) = json.loads(capsys.readouterr().out)
    assert point["label"] == "a" and point["n"] == 1 and point["low"] is None and point["final_psnr"] == 27.3
    assert point["gain_db"]["mean"] == pytest.approx(-0.2)


def test_a_group_speaks_for_its_replicates_and_a_failed_one_keeps_its_error(tmp_path):
    path = fake_sweep(tmp_path / "s", {"0-a": {"curves": [[28.0, 28.2], [28.0, 28.3]], "lr": 0.001}})
    (path / "runs" / "0-a" / "node.json").write_text(json.dumps({"node_ip": "10.0.0.7", "node_id": "n7"}))
    failed = path / "runs" / "1-b"
    failed.mkdir()
    (failed / "replicates.json").write_text(json.dumps({"replicates": 2, "seeds": [0, 1], "data_seeds": [0, 0]}))
    (failed / "error.txt").write_text("RuntimeError: out of memory\ntraceback ...")
    rows = collect_rows([path])
    assert [(r["trial"], r["replicate"], r["status"]) for r in rows] == [
        ("0-a", 0, "finished"),
        ("0-a", 1, "finished"),
        ("1-b", None, "error"),
    ]
    assert rows[0]["node_ip"] == "10.0.0.7" and rows[0]["group"].endswith("runs/0-a")
    assert rows[2]["error"].startswith("RuntimeError: out of memory")
    table = to_table(rows)
    assert table.column("replicate").to_pylist() == [0, 1, None]
    ranking = rank_points(rows)
    assert [p.label for p in ranking.points] == ["s/0-a"] and ranking.points[0].n == 2
    alone = rank_points(collect_rows([path / "runs" / "0-a" / "rep-1", path / "runs" / "0-a" / "rep-0"]))
    # runs given alone, one config under two seeds: a point of hand-run runs, labelled by its first run's group
    assert [(p.label, p.n) for p in alone.points] == [("0-a/rep-0 (+1)", 2)]


def test_a_single_run_beside_replicates_is_untested_not_beaten(tmp_path):
    fake_group(tmp_path / "g", [[27.0, 28.0], [27.0, 28.2], [27.0, 28.4]], lr=0.001)
    fake_run(tmp_path / "one", [27.0, 28.1], lr=0.002, seed=5)
    ranking = rank_points(collect_rows([tmp_path]))
    head = [line for line in best_yaml(ranking).splitlines() if line.startswith("#")]
    assert head[-2:] == [
        "# not tested (a single run, no interval): one",
        "# rerun it with 3 replicates: fedvsr simulate --config best.yaml --replicates 3",
    ]
    assert not any("distinguishable" in line for line in head)
