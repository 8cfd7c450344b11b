"""A sweep whose points run replicates: Tune (ASHA, Optuna) sees the mean over a point's replicates."""

from __future__ import annotations

import re

import pyarrow.parquet as pq
import pytest

from fedvsr.sweeps.points import rank_points, top_table
from fedvsr.sweeps.runner import run_sweep
from fedvsr.sweeps.spec import build_spec
from tests.conftest import tiny_fixed

pytestmark = pytest.mark.slow


def test_asha_decides_on_the_mean_of_each_points_replicates(ray_local, synth_root, tmp_path):
    fixed = {**tiny_fixed(synth_root, 2), "seed": 10}
    asha = {"grace_period": 1, "reduction_factor": 2}
    spec = build_spec(
        "reps",
        {
            "search": "grid",
            "scheduler": "asha",
            "asha": asha,
            "replicates": 2,
            "fixed": fixed,
            "params": {"fl.lr": {"grid": [0.5, 0.002, 0.004]}},
        },
    )
    lines: list[str] = []
    rows = run_sweep(spec, tmp_path / "sweep", concurrent=1, echo=lines.append)
    assert len(lines) and "2 replicates per point" in lines[0]
    trials = sorted((tmp_path / "sweep" / "runs").iterdir())
    assert len(trials) == 3
    seen = 0
    for trial in trials:
        reps = [pq.read_table(trial / f"rep-{r}" / "rounds.parquet").to_pylist() for r in range(2)]
        configs = [(trial / f"rep-{r}" / "config.yaml").read_text() for r in range(2)]
        assert "seed: 10" in configs[0] and "seed: 11" in configs[1]  # the same seeds for every point
        assert len(reps[0]) == len(reps[1])  # stepped together: stopped at the same round
        agg = pq.read_table(trial / "rounds.parquet").to_pylist()
        assert [a["psnr_mean"] for a in agg] == pytest.approx(
            [(a["psnr"] + b["psnr"]) / 2 for a, b in zip(*reps, strict=True)]
        )
        # what Tune was told last (the progress line) is that mean, to the digits printed
        line = next(x for x in lines if trial.name.split("-")[0] in x.split()[2] and "psnr" in x)
        shown = float(re.search(r"psnr (\d+\.\d+)", line).group(1))
        assert shown == pytest.approx(agg[-1]["psnr_mean"], abs=0.005)
        seen += 1
    assert seen == 3

    # `fedvsr best` ranks the points by their mean over the replicates and marks the tie set
    ranking = rank_points(rows, "psnr", include_stopped=True)
    assert len(ranking.points) == 3 and all(p.n == 2 for p in ranking.points)
    means = [p.interval.mean for p in ranking.points]
    assert means == sorted(means, reverse=True)
    finals = {p.label: sum(r["final_psnr"] for r in p.rows) / 2 for p in ranking.points}
    assert means == pytest.approx([finals[p.label] for p in ranking.points])
    assert ranking.points[0].tie is True and all(p.tie is not None for p in ranking.points)
    diverged = next(p for p in ranking.points if p.rows[0]["fl.lr"] == 0.5)
    assert diverged is ranking.points[-1]
    text = top_table(ranking, 3)
    assert "= " in text.splitlines()[1]  # the legend of tie marks
