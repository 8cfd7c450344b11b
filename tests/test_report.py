"""`fedvsr report` on hand-written sweeps with replicates: bands, error bars, digits, the trials a key applies to,
and the winner with its tie set in words."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402

from fedvsr.report import _round_axes, draw_band, param_points, plot_runs, sweep_report, winner_sentence  # noqa: E402
from fedvsr.stats import decimals_for, mean_interval  # noqa: E402
from fedvsr.sweeps.points import rank_points, round_series  # noqa: E402
from fedvsr.sweeps.results import collect_rows  # noqa: E402
from tests.folders import fake_sweep  # noqa: E402
from tests.sweeps.test_results import FINALS, _lambda_sweep  # noqa: E402


def test_report_names_the_winner_and_its_ties_in_words(tmp_path):
    sweep = _lambda_sweep(tmp_path / "lambdas")
    files = sweep_report(sweep)
    assert [f.name for f in files] == [
        "final_psnr_vs_fl.lambda_hifr.png",
        "psnr_per_round_top.png",
        "trials_per_round.png",
        "report.md",
    ]
    md = (sweep / "report" / "report.md").read_text()
    assert (
        "λ_HiFr = 0.4 has the highest mean, 25.61 ± 0.02 dB (n=3); 0.3 is not distinguishable from it at 95% "
        "(Holm-corrected paired t-tests): a tie between these 2 points, no single winner."
    ) in md
    assert "wins" not in md
    assert "| 1 | = | 25.61 ± 0.02 | 3 | +0.61 ± 0.02 | 25.61 | 0.7561 | 0.4 | lambdas/1-a |" in md
    assert "| 3 |  | 25.42 ± 0.07 | 3 | +0.42 ± 0.07 | 25.42 | 0.7542 | 0.5 | lambdas/2-c |" in md
    assert "- search: grid, 3 trials (3 finished), 9 runs" in md


def test_single_runs_say_no_interval(tmp_path):
    sweep = fake_sweep(
        tmp_path / "s",
        {"0-a": {"psnrs": [28.0, 28.31], "lr": 0.001}, "1-b": {"psnrs": [28.0, 28.35], "lr": 0.002}},
        params={"fl.lr": {"grid": [0.001, 0.002]}},
        fixed={"fl.rounds": 2},
    )
    sweep_report(sweep)
    md = (sweep / "report" / "report.md").read_text()
    assert (
        "fl.lr = 0.002 has the highest single run, 28.35 dB (n=1); no interval: rerun with replicates "
        "(`replicates: 3` in the spec) to tell it from the runner-up, fl.lr = 0.001 (28.31 dB)."
    ) in md


def test_enough_digits_to_tell_close_points_apart(tmp_path):
    # two points 0.004 dB apart with intervals 0.003 wide: 2 decimals would print both as 27.66
    sweep = fake_sweep(
        tmp_path / "s",
        {
            "0-a": {"curves": [[27.0, 27.6600], [27.0, 27.6612], [27.0, 27.6624]], "lr": 0.001},
            "1-b": {"curves": [[27.0, 27.6640], [27.0, 27.6652], [27.0, 27.6664]], "lr": 0.002},
        },
        params={"fl.lr": {"grid": [0.001, 0.002]}},
        fixed={"fl.rounds": 2},
    )
    sweep_report(sweep)
    md = (sweep / "report" / "report.md").read_text()
    # half-width t(0.975, 2) * 0.0012 / sqrt(3) = 0.00298: a significant digit needs 3 decimals
    assert "fl.lr = 0.002 wins with 27.665 ± 0.003 dB (n=3)" in md
    assert "| 27.661 ± 0.003 |" in md
    assert decimals_for([mean_interval([27.66, 27.67])]) == 2  # wide: 2 are enough


def test_parameter_plots_show_only_the_trials_a_key_applies_to(tmp_path):
    sweep = fake_sweep(
        tmp_path / "s",
        {
            "0-avg": {"psnrs": [28.0, 28.2], "strategy": "fedavg"},
            "1-prox": {"psnrs": [28.0, 28.1], "strategy": "fedprox", "overrides": ("fl.mu=0.1",)},
            "2-prox": {"psnrs": [28.0, 28.3], "strategy": "fedprox", "overrides": ("fl.mu=0.01",)},
        },
        params={
            "fl.strategy": {"grid": ["fedavg", "fedprox"]},
            "fl.mu": {"grid": [0.01, 0.1], "when": {"fl.strategy": "fedprox"}},
        },
        fixed={"fl.rounds": 2},
    )
    points = rank_points(collect_rows([sweep])).points
    assert len(points) == 3
    assert sorted(p.rows[0]["fl.mu"] for p in param_points(points, "fl.mu")) == [0.01, 0.1]  # not FedAvg's default
    assert len(param_points(points, "fl.strategy")) == 3
    assert (sweep / "report").exists() is False
    files = sweep_report(sweep)
    assert {f.name for f in files} >= {"final_psnr_vs_fl.mu.png", "final_psnr_vs_fl.strategy.png"}


def test_bands_are_shaded_where_there_are_replicates_and_rounds_are_integers(tmp_path):
    rows = collect_rows([_lambda_sweep(tmp_path / "lambdas")])
    top = rank_points(rows).points[0]
    series = round_series(top.rows)
    assert [t for t, _ in series] == [0, 1, 2]
    assert series[-1][1].mean == pytest.approx(sum(FINALS["A"]) / 3) and series[-1][1].n == 3
    fig, ax = plt.subplots()
    draw_band(ax, series, "C0", "three replicates")
    draw_band(ax, round_series(top.rows[:1]), "C1", "one run")
    _round_axes(ax, "t")
    fig.canvas.draw()
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 1  # one run: a line, no band
    assert all(float(t).is_integer() for t in ax.get_xticks())
    plt.close(fig)


def test_winner_sentence_without_finished_points():
    from fedvsr.sweeps.points import Ranking

    assert winner_sentence(Ranking([], "final_psnr", "max", 0), [], 2) == "No finished trial: no winner."


def test_winner_sentence_with_an_untested_single_run(tmp_path):
    sweep = fake_sweep(
        tmp_path / "s",
        {
            "0-a": {"curves": [[28.0, 28.0], [28.0, 28.2], [28.0, 28.4]], "lr": 0.001},
            "1-b": {"psnrs": [28.0, 28.1], "lr": 0.002},
        },
        params={"fl.lr": {"grid": [0.001, 0.002]}},
        fixed={"fl.rounds": 2},
    )
    ranking = rank_points(collect_rows([sweep]))
    # mean 28.2, s = 0.2, half = 4.3027 * 0.2 / sqrt(3) = 0.4968
    assert winner_sentence(ranking, ["fl.lr"], 2) == (
        "fl.lr = 0.001 has the highest mean, 28.20 ± 0.50 dB (n=3); 0.002 could not be tested (a single run)."
    )


def test_run_plots_are_drawn_from_the_results_of_every_finished_run(tmp_path, monkeypatch):
    """psnr.png of each replicate of a group (not of the group's own aggregate), from summary.json and
    rounds.parquet: the initial model at round 0, then the rounds; drawn again only when the summary is newer."""
    import pyarrow.parquet as pq

    from fedvsr import report
    from fedvsr.config import load_config
    from fedvsr.platform.results import run_summary, write_json_atomic
    from tests.folders import fake_group

    group = fake_group(tmp_path / "g", [[27.1, 27.4], [27.2, 27.3]])
    cfg = load_config(None, [])
    for r, strategy in ((0, "fedavg"), (1, "central")):
        run = group / f"rep-{r}"
        rows = pq.read_table(run / "rounds.parquet").to_pylist()
        summary = run_summary(cfg, strategy, 10, rows, {"psnr": 27.5, "ssim": 0.8}, {"psnr": 27.0, "ssim": 0.7})
        write_json_atomic(run / "summary.json", {**summary, **({"workers": 2} if strategy == "central" else {})})
    seen, real = [], report.plot_psnr
    monkeypatch.setattr(
        report,
        "plot_psnr",
        lambda rounds, bicubic, path, title: (
            seen.append((rounds, bicubic, path.parent.name, title)) or real(rounds, bicubic, path, title)
        ),
    )
    assert plot_runs(group) == [group / "rep-0" / "psnr.png", group / "rep-1" / "psnr.png"]
    assert seen == [
        (
            [{"round": 0, "psnr": 27.0}, {"round": 1, "psnr": 27.1}, {"round": 2, "psnr": 27.4}],
            27.5,
            "rep-0",
            "efvsr/small - fedavg",
        ),
        (
            [{"round": 0, "psnr": 27.0}, {"round": 1, "psnr": 27.2}, {"round": 2, "psnr": 27.3}],
            27.5,
            "rep-1",
            "efvsr/small - central, 2 workers",
        ),
    ]
    assert (group / "rep-0" / "psnr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_runs(group) == [] and not (group / "psnr.png").exists()  # up to date; the group is no single run
