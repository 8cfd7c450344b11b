"""Replicates: seeds, the aggregate per round, and runs bit-identical to the same seed run alone."""

from __future__ import annotations

import json
import math
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fedvsr.config import ConfigError, load_config
from fedvsr.platform.replicates import (
    REPLICATES_FILE,
    aggregate_rounds,
    fits_in_parallel,
    replicate_configs,
    run_replicates,
    write_aggregate,
)
from fedvsr.stats import mean_interval
from tests.conftest import run_tiny, tiny_experiment


def test_replicates_vary_the_training_seed_and_keep_the_data_seed():
    cfg = load_config(None, ["seed=3", "data.seed=7"])
    assert [(c.seed, c.data.seed) for c in replicate_configs(cfg, 3)] == [(3, 7), (4, 7), (5, 7)]
    assert [(c.seed, c.data.seed) for c in replicate_configs(cfg, 2, vary_data=True)] == [(3, 7), (4, 8)]
    assert cfg.seed == 3  # the base config is not changed
    with pytest.raises(ConfigError, match="--replicates = 0"):
        replicate_configs(cfg, 0)


def test_aggregate_rounds_gives_mean_std_and_t_interval_of_the_rounds_all_have():
    reps = [
        [
            {"round": 1, "psnr": 25.0, "ssim": 0.70, "train_loss": 0.02, "seconds": 1.0},
            {"round": 2, "psnr": 25.5, "ssim": 0.72, "train_loss": 0.01, "seconds": 1.0},
        ],
        [
            {"round": 1, "psnr": 25.2, "ssim": 0.71, "train_loss": 0.03, "seconds": 2.0},
            {"round": 2, "psnr": 25.3, "ssim": 0.73, "train_loss": 0.01, "seconds": 2.0},
        ],
        [{"round": 1, "psnr": 25.4, "ssim": 0.69, "train_loss": math.nan, "seconds": 3.0}],
    ]  # one round only
    agg = aggregate_rounds(reps)
    assert [r["round"] for r in agg] == [1]  # round 2 is not in every replicate yet
    row = agg[0]
    iv = mean_interval([25.0, 25.2, 25.4])
    assert row["n"] == 3 and row["psnr_mean"] == pytest.approx(25.2) and row["psnr_std"] == pytest.approx(0.2)
    assert (row["psnr_low"], row["psnr_high"]) == pytest.approx((iv.low, iv.high))
    assert row["psnr_high"] - row["psnr_mean"] == pytest.approx(4.302652729749464 * 0.2 / math.sqrt(3))
    assert math.isnan(row["train_loss_mean"])  # a round that aggregated no client has no loss
    assert row["seconds"] == 6.0


def test_write_aggregate_summarises_finished_replicates(tmp_path):
    meta = {"replicates": 2, "seeds": [0, 1], "data_seeds": [0, 0], "vary_data": False, "config": {}}
    (tmp_path / REPLICATES_FILE).write_text(json.dumps(meta))
    for r, (final, best) in enumerate([(25.6, 25.7), (25.4, 25.5)]):
        d = tmp_path / f"rep-{r}"
        d.mkdir()
        pq.write_table(
            pa.Table.from_pylist([{"round": 1, "psnr": final, "ssim": 0.7, "train_loss": 0.01, "seconds": 1.0}]),
            d / "rounds.parquet",
        )
        assert write_aggregate(tmp_path) == {} or r == 1  # the summary waits for every replicate
        (d / "summary.json").write_text(
            json.dumps(
                {
                    "final_psnr": final,
                    "final_ssim": 0.7,
                    "best_psnr": best,
                    "bicubic_psnr": 25.0,
                    "initial_psnr": 24.0,
                    "model": "efvsr",
                    "best_round": 1,
                }
            )
        )
    s = write_aggregate(tmp_path)
    assert s["replicates"] == 2 and s["final_psnr"] == pytest.approx(25.5)
    assert s["gain_db"] == pytest.approx(0.5) and s["best_psnr"] == pytest.approx(25.6)
    # t(1, 0.975) = 12.706204736174698, s = 0.1414..., half = 12.7062 * 0.1414 / sqrt(2) = 1.27062
    assert s["final_psnr_high"] - s["final_psnr"] == pytest.approx(1.2706204736174698)
    assert [p["seed"] for p in s["per_replicate"]] == [0, 1]
    assert json.loads((tmp_path / "summary.json").read_text())["final_psnr"] == pytest.approx(25.5)


def test_replicates_run_in_parallel_only_when_the_resources_hold_them_all():
    cfg = load_config(None, ["platform.workers=2"])
    assert fits_in_parallel(cfg, 3, {"CPU": 6.0})
    assert not fits_in_parallel(cfg, 3, {"CPU": 2.0})


@pytest.fixture(scope="module")
def seed_5_alone(ray_local, synth_root, tmp_path_factory):
    """`fedvsr simulate --set seed=5` alone (one worker): what replicate 1 of seed 4 must reproduce."""
    alone, _ = run_tiny(tmp_path_factory.mktemp("replicates"), "alone", synth_root, "seed=5", "platform.workers=1")
    return alone


@pytest.mark.slow
@pytest.mark.parametrize("parallel", [False, True])
def test_each_replicate_is_bit_identical_to_its_seed_run_alone(seed_5_alone, synth_root, tmp_path, parallel):
    """Replicates sharing the workers (stepped one after another within each round) or each with its own
    workers (rounds at the same time) give the bits of `fedvsr simulate --set seed=s` alone."""
    cfg = load_config(None, tiny_experiment(synth_root, "seed=4", "platform.workers=1"))
    rounds = []
    summary = run_replicates(
        cfg, tmp_path / "group", 2, parallel=parallel, on_round=lambda agg, rows: rounds.append((agg, rows))
    )
    assert [agg["round"] for agg, _ in rounds] == [1, 2]
    alone = seed_5_alone
    rep = pq.read_table(tmp_path / "group" / "rep-1" / "rounds.parquet").to_pylist()
    ref = pq.read_table(alone / "rounds.parquet").to_pylist()
    assert [r["psnr"] for r in rep] == [r["psnr"] for r in ref]
    assert [r["train_loss"] for r in rep] == [r["train_loss"] for r in ref]
    model = (tmp_path / "group" / "rep-1" / "model.safetensors").read_bytes()
    assert model == (alone / "model.safetensors").read_bytes()
    agg = pq.read_table(tmp_path / "group" / "rounds.parquet").to_pylist()
    finals = [
        pq.read_table(tmp_path / "group" / f"rep-{r}" / "rounds.parquet").to_pylist()[-1]["psnr"] for r in range(2)
    ]
    assert agg[-1]["psnr_mean"] == pytest.approx(sum(finals) / 2)
    assert summary["final_psnr"] == pytest.approx(sum(finals) / 2) and summary["seeds"] == [4, 5]
    assert json.loads((tmp_path / "group" / "rep-0" / "summary.json").read_text())["final_psnr"] == finals[0]


@pytest.mark.slow
def test_resumed_replicates_keep_the_finished_ones_and_run_the_missing(ray_local, synth_root, tmp_path):
    cfg = load_config(None, tiny_experiment(synth_root, "platform.workers=1"))
    first = run_replicates(cfg, tmp_path / "group", 2)
    kept = (tmp_path / "group" / "rep-0" / "rounds.parquet").read_bytes()
    shutil.rmtree(tmp_path / "group" / "rep-1")  # as if interrupted before replicate 1 started
    again = run_replicates(None, tmp_path / "group", resume=True)
    assert (tmp_path / "group" / "rep-0" / "rounds.parquet").read_bytes() == kept
    assert again["final_psnr"] == first["final_psnr"] and again["per_replicate"] == first["per_replicate"]
    with pytest.raises(ConfigError, match="already holds a run"):
        run_replicates(cfg, tmp_path / "group", 2)
