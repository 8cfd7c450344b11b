"""`fedvsr train-central`: the pooled-data upper bound on Ray Train, its outputs, its sharding, its errors."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from fedvsr.cli import main
from fedvsr.config import ConfigError, load_config
from fedvsr.data.sources import experiment_videos
from fedvsr.fl.aggregate import to_numpy
from fedvsr.fl.strategy import float_state
from fedvsr.models import build_model
from fedvsr.platform.central import (
    CentralTrainingError,
    central_config,
    float_weights,
    run_central,
    shard_sizes,
    train_pooled,
)
from fedvsr.platform.checkpoint import load_arrays
from fedvsr.platform.worker import ClientWorker
from fedvsr.report import plot_runs
from fedvsr.sweeps.results import collect_rows
from tests.conftest import tiny_experiment

pytestmark = pytest.mark.slow
COLUMNS = ["round", "psnr", "ssim", "train_loss", "samples", "steps"]


def tiny(root, *extra):
    return load_config(None, tiny_experiment(root, *extra))


@pytest.fixture(scope="module")
def central_run(ray_local, synth_root, tmp_path_factory):
    """2 Ray Train workers of 1 CPU each (the controller takes none: they fit the test's 2-CPU Ray), 2 epochs."""
    out = tmp_path_factory.mktemp("central") / "run"
    started, printed = [], []
    summary = run_central(tiny(synth_root), out, workers=2, on_start=started.append, on_epoch=printed.append)
    return out, summary, started, printed


def test_two_epochs_on_two_workers_write_every_output(central_run):
    out, summary, started, printed = central_run
    for name in ["config.yaml", "rounds.parquet", "summary.json", "model.safetensors"]:
        assert (out / name).is_file(), name
    assert not (out / "psnr.png").exists()  # the runtime never draws; fedvsr train-central draws it from these
    assert plot_runs(out) == [out / "psnr.png"]
    rows = pq.read_table(out / "rounds.parquet").to_pylist()
    assert [r["round"] for r in rows] == [1, 2]
    # the pool: 10 videos - 2 held out = 8, x 4 clips = 32 per epoch, in global batches of 4
    assert [(r["samples"], r["steps"], r["workers"]) for r in rows] == [(32, 8, 2)] * 2
    assert all(np.isfinite([r["psnr"], r["ssim"], r["train_loss"]]).all() for r in rows)
    assert all(20 < r["psnr"] < 60 and 0 < r["ssim"] <= 1 and 0 < r["train_loss"] < 1 for r in rows)
    assert [{k: r[k] for k in COLUMNS} for r in printed] == [{k: r[k] for k in COLUMNS} for r in rows]
    assert json.loads((out / "summary.json").read_text()) == summary
    assert summary["strategy"] == "central" and summary["rounds"] == 2 and summary["workers"] == 2
    assert summary["final_psnr"] == rows[-1]["psnr"] and summary["best_psnr"] == max(r["psnr"] for r in rows)
    assert started[0]["bicubic"]["psnr"] == summary["bicubic_psnr"] and started[0]["params"] == summary["params"]
    # an untrained tiny EFVSR is bicubic upsampling (its last conv starts at zero)
    assert summary["initial_psnr"] == pytest.approx(summary["bicubic_psnr"], abs=0.02)
    assert yaml.safe_load((out / "config.yaml").read_text())["platform"]["workers"] == 2
    weights = load_arrays(out / "model.safetensors")
    assert "tail.weight" in weights and np.isfinite(weights["tail.weight"]).all()
    assert np.abs(weights["tail.weight"]).max() > 0  # trained: the zero-initialised last conv moved
    # `fedvsr best` / `fedvsr report --compare` read it as a run folder
    (row,) = collect_rows([out])
    assert (row["status"], row["rounds_run"], row["final_psnr"]) == ("finished", 2, summary["final_psnr"])
    assert row["kind"] == "central"


def test_bicubic_and_initial_model_equal_the_federated_runs(central_run, synth_root):
    """Same eval clips, same seeded initial model: the federated worker's own evaluation gives the same numbers."""
    _, summary, _, _ = central_run
    cfg = tiny(synth_root)
    videos, pool, held = experiment_videos(cfg)
    worker = ClientWorker.local(cfg, 0, videos, [pool], held)
    bicubic = worker.evaluate_bicubic()
    assert (bicubic["psnr"], bicubic["ssim"]) == (summary["bicubic_psnr"], summary["bicubic_ssim"])
    torch.manual_seed(cfg.seed)  # as the coordinator builds the global model
    initial = worker.evaluate(to_numpy(float_state(build_model(cfg.model.name, cfg.model.preset))))
    assert (initial["psnr"], initial["ssim"]) == (summary["initial_psnr"], summary["initial_ssim"])


def test_two_workers_take_the_same_steps_as_one_process(central_run, synth_root):
    """Each rank's share of a global batch, its gradients weighted by its share and summed: the steps of one
    process on the whole batch (here the same training in this process, without Ray), up to the rounding."""
    out, _, _, _ = central_run
    cfg = tiny(synth_root)
    events = list(train_pooled(cfg, *experiment_videos(cfg)))
    assert [kind for kind, _, _ in events] == ["start", "epoch", "epoch"]
    one = [row for kind, row, _ in events if kind == "epoch"]
    two = pq.read_table(out / "rounds.parquet").to_pylist()
    for a, b in zip(one, two, strict=True):
        assert (a["workers"], b["workers"]) == (1, 2)
        assert (a["round"], a["samples"], a["steps"]) == (b["round"], b["samples"], b["steps"])
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["psnr"] == pytest.approx(b["psnr"], abs=1e-4)
        assert a["ssim"] == pytest.approx(b["ssim"], abs=2e-5)  # 8e-6 seen: float sums in another order
    w1, w2 = float_weights(events[-1][2]), load_arrays(out / "model.safetensors")
    assert w1.keys() == w2.keys()
    # Adam divides each step by sqrt(v): where a weight's gradients are near zero, rounding-level differences in
    # them move it by up to ~1e-4 (seen: 4e-5 on the natural built-in data, one weight of 9216 at 1.02e-4 while
    # the machine was loaded); most weights agree to 1e-5 (a CPU with other kernels left 5% of one conv's weights
    # above 1e-5). A step taken on other samples or with another weighting moves every weight by ~lr = 1e-3.
    diffs = {k: np.abs(w1[k] - w2[k]) for k in w1}
    every = np.concatenate([d.ravel() for d in diffs.values()])
    for k, d in diffs.items():
        assert d.max() < 5e-4, k
        assert np.mean(d > 1e-5) < 0.2, k
    assert np.mean(every > 1e-4) < 1e-3 and np.mean(every > 1e-5) < 0.05
    # and the training moved the weights by far more than that
    assert np.abs(w1["tail.weight"]).max() > 1e-3


def test_shard_sizes_split_a_global_batch():
    assert [shard_sizes(4, r, 2) for r in range(2)] == [2, 2]
    assert [shard_sizes(5, r, 2) for r in range(2)] == [3, 2]  # a last, odd batch: weights 3/5 and 2/5
    assert [shard_sizes(2, r, 3) for r in range(3)] == [1, 1, 0]  # rank 2 computes a stand-in of weight 0
    assert shard_sizes(8, 0, 1) == 8


# ----------------------------------------------------------------------------------------- errors


def test_bad_worker_counts_and_a_gpu_on_a_cpu_machine_stop_before_ray(synth_root):
    cfg = tiny(synth_root)
    with pytest.raises(ConfigError, match=r"--workers = 0: train-central needs an integer number of workers >= 1"):
        central_config(cfg, workers=0)
    assert central_config(cfg, workers=3).platform.workers == 3
    assert central_config(cfg).platform.workers == 2  # the config's platform.workers
    if torch.cuda.device_count() == 0:
        with pytest.raises(ConfigError, match=r"--gpu \(platform.gpus_per_worker = 1\) but this machine has no CUDA"):
            central_config(cfg, use_gpu=True)


def test_more_workers_than_the_ray_has_cpus_is_a_clear_error(ray_local, synth_root, tmp_path):
    with pytest.raises(ConfigError, match=r"needs 3 CPUs \(3 workers x 1\), but this Ray has 2"):
        run_central(tiny(synth_root), tmp_path / "big", workers=3)


def test_a_folder_holding_a_run_is_refused(central_run, synth_root):
    out, _, _, _ = central_run
    with pytest.raises(ConfigError, match="already holds a run"):
        run_central(tiny(synth_root), out)


def test_a_failed_worker_is_one_message_naming_the_run_folder(ray_local, synth_root, tmp_path, monkeypatch):
    """What `fit` raises when a worker fails (Ray Train's WorkerGroupError) becomes a CentralTrainingError."""
    import ray.train.torch
    from ray.train import WorkerGroupError

    class FailingTrainer:
        def __init__(self, *args, **kwargs):
            pass

        def fit(self):
            err = ValueError("video 'x': HR shape (5, 64, 64, 3) is not LR shape")
            raise WorkerGroupError("Training failed", {0: err, 1: err})

    monkeypatch.setattr(ray.train.torch, "TorchTrainer", FailingTrainer)
    out = tmp_path / "failed"
    with pytest.raises(CentralTrainingError) as info:
        run_central(tiny(synth_root), out, workers=2)
    assert str(info.value) == (
        f"central training of {out} failed: workers 0, 1: ValueError: video 'x': HR shape "
        "(5, 64, 64, 3) is not LR shape"
    )


def test_cli_prints_config_errors(synth_root, capsys):
    assert main(["train-central", "--workers", "0", *sum((["--set", s] for s in tiny_experiment(synth_root)), [])]) == 2
    assert "fedvsr: config error: --workers = 0" in capsys.readouterr().err
