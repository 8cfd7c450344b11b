"""One federated experiment end to end on Ray: outputs, determinism, strategy equivalences, resume."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from fedvsr.config import ConfigError, load_config
from fedvsr.data.datasets import eval_clips, load_pair
from fedvsr.data.sources import scan_folder, split_holdout
from fedvsr.data.synthetic import build_synthetic_dataset
from fedvsr.metrics import bicubic_upsample, score
from fedvsr.platform.checkpoint import load_arrays
from fedvsr.platform.run import run_experiment
from tests.conftest import run_tiny, tiny_experiment

pytestmark = pytest.mark.slow
METRICS = ["psnr", "ssim", "train_loss"]


run = run_tiny


def columns(out):
    table = pq.read_table(out / "rounds.parquet").to_pydict()
    return {k: table[k] for k in METRICS}


def test_two_round_experiment_writes_every_output(fedavg_run):
    out, summary = fedavg_run
    for name in [
        "config.yaml",
        "rounds.parquet",
        "clients.parquet",
        "summary.json",
        "model.safetensors",
        "partition.parquet",
        "checkpoint/round-00002/manifest.json",
    ]:
        assert (out / name).exists(), name
    assert not (out / "psnr.png").exists()  # the runtime never draws: the fedvsr command does (tests/test_cli.py)
    rounds = pq.read_table(out / "rounds.parquet").to_pydict()
    assert rounds["round"] == [1, 2]
    assert all(np.isfinite(rounds["psnr"])) and all(0 < s <= 1 for s in rounds["ssim"])
    clients = pq.read_table(out / "clients.parquet").to_pydict()
    assert len(clients["client"]) == 4  # 2 rounds x 2 clients
    assert set(clients["worker"]) == {0, 1}  # both workers trained a client
    assert set(clients["status"]) == {"ok"}
    for r in (1, 2):  # normalised weights of a round sum to 1; equal sizes -> 0.5 each
        weights = [w for w, rr in zip(clients["weight"], clients["round"], strict=True) if rr == r]
        assert weights == pytest.approx([0.5, 0.5])
    assert clients["samples"] == [8, 8, 8, 8]  # 2 videos x 4 clips
    partition = pq.read_table(out / "partition.parquet").to_pydict()
    assert sorted(set(partition["client"])) == [0, 1, 2, 3] and len(partition["video"]) == 8
    saved = json.loads((out / "summary.json").read_text())
    assert saved == summary
    assert summary["final_psnr"] == rounds["psnr"][-1]
    assert summary["rounds"] == 2 and summary["bicubic_psnr"] > 10
    # an untrained tiny EFVSR is exactly bicubic upsampling (its last conv starts at zero)
    assert summary["initial_psnr"] == pytest.approx(summary["bicubic_psnr"], abs=0.02)
    weights = load_arrays(out / "model.safetensors")
    assert "tail.weight" in weights and np.isfinite(weights["tail.weight"]).all()


@pytest.fixture(scope="module")
def seed1_run(ray_local, synth_root, tmp_path_factory):
    return run(tmp_path_factory.mktemp("seed1"), "seed-1", synth_root, "seed=1")


def test_same_seed_same_numbers_whatever_the_number_of_workers(fedavg_run, seed1_run, synth_root, tmp_path):
    out, _ = fedavg_run
    one, _ = run(tmp_path, "one-worker", synth_root, "platform.workers=1")
    assert columns(one) == columns(out)
    assert columns(seed1_run[0]) != columns(out)


def test_fedvsr_without_hifr_and_decay_exponent_zero_is_fedavg(fedavg_run, synth_root, tmp_path):
    vsr, _ = run(tmp_path, "fedvsr", synth_root, "fl.strategy=fedvsr", "fl.lambda_hifr=0", "fl.alpha=0")
    assert columns(vsr) == columns(fedavg_run[0])


def test_interrupted_run_resumes_to_the_same_numbers(fedavg_run, synth_root, tmp_path):
    def stop_after_first(row):
        if row["round"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "resumed", synth_root, on_round=stop_after_first)
    out = tmp_path / "resumed"
    assert pq.read_table(out / "rounds.parquet").to_pydict()["round"] == [1]
    with pytest.raises(ConfigError, match="already holds a run; pass --resume"):
        run(tmp_path, "resumed", synth_root)
    seen = []
    run_experiment(load_config(), out, resume=True, on_round=seen.append)
    assert [r["round"] for r in seen] == [2]
    assert columns(out) == columns(fedavg_run[0])


def test_a_killed_worker_is_restarted_and_the_run_finishes_unchanged(fedavg_run, synth_root, tmp_path):
    pids = []

    def kill_worker_after_first_round(row):
        if row["round"] == 1:
            os.kill(pids[0], signal.SIGKILL)

    out, _ = run(
        tmp_path,
        "killed",
        synth_root,
        on_start=lambda info: pids.extend(info["worker_pids"]),
        on_round=kill_worker_after_first_round,
    )
    assert len(pids) == 2
    assert columns(out) == columns(fedavg_run[0])


def test_fedprox_with_mu_zero_is_fedavg_and_a_live_coordinator_configured_again_gives_fresh_numbers(
    fedavg_run, seed1_run, synth_root, tmp_path
):
    """Two experiments on one coordinator and one worker pool (``configure`` twice, no new process) give the
    numbers of each experiment run on fresh actors; the first, FedProx with mu = 0, those of FedAvg."""
    import ray

    from fedvsr.platform.coordinator import Coordinator

    coordinator = ray.remote(Coordinator).options(num_cpus=0).remote()
    pids = []
    try:
        for name, extra in (("first", ("fl.strategy=fedprox", "fl.mu=0")), ("second", ("seed=1",))):
            cfg = load_config(None, tiny_experiment(synth_root, *extra))
            (tmp_path / name).mkdir()
            ray.get(coordinator.configure.remote(cfg, str(tmp_path / name)))
            pids.append(ray.get(coordinator.info.remote())["worker_pids"])
            for t in range(1, cfg.fl.rounds + 1):
                for ref in coordinator.run_round.options(num_returns="streaming").remote(t):
                    ray.get(ref)
            ray.get(coordinator.finish.remote())
    finally:
        ray.kill(coordinator)
    assert pids[0] == pids[1] and len(pids[0]) == 2
    assert columns(tmp_path / "first") == columns(fedavg_run[0])
    assert columns(tmp_path / "second") == columns(seed1_run[0])


def test_scaffold_keeps_client_states_in_the_store(ray_local, synth_root, tmp_path):
    out, summary = run(tmp_path, "scaffold", synth_root, "fl.strategy=scaffold", "fl.optimizer=sgd", "fl.lr=0.05")
    clients = pq.read_table(out / "clients.parquet").to_pydict()
    files = sorted(p.name for p in (out / "client_state").iterdir())
    pairs = zip(clients["client"], clients["round"], strict=True)
    expected = sorted(f"client_{c:05d}.r{r:05d}.safetensors" for c, r in pairs)
    assert files == expected
    server = load_arrays(out / "checkpoint" / "round-00002" / "server_state.safetensors")
    assert set(server) == {f"c.{k}" for k in load_arrays(out / "model.safetensors")}
    assert any(np.abs(v).sum() > 0 for v in server.values())
    assert np.isfinite(summary["final_psnr"])


def video_folder(tmp_path):
    """10 small synthetic videos copied into a data.source=folder layout; returns (folder, its scan)."""
    folder = tmp_path / "videos"
    for e in build_synthetic_dataset(tmp_path / "src", 10, 5, 64, 64, seed=0):
        (folder / e.label).mkdir(parents=True, exist_ok=True)
        (folder / e.label / Path(e.path).name).write_bytes(Path(e.path).read_bytes())
    return folder, scan_folder(folder)


def test_a_corrupt_video_is_left_out_at_the_scan_and_every_client_trains(ray_local, synth_root, tmp_path):
    folder, scanned = video_folder(tmp_path)
    client_idx, _ = split_holdout(scanned, 2, 0)
    victim = scanned[client_idx[0]]
    with open(victim.path, "wb") as f:
        f.write(b"\x00not a video" * 50)
    out, summary = run(
        tmp_path, "corrupt", synth_root, "data.source=folder", f"data.root={folder}", "fl.clients_per_round=4"
    )
    clients = pq.read_table(out / "clients.parquet").to_pydict()
    assert set(clients["status"]) == {"ok"}
    rounds = pq.read_table(out / "rounds.parquet").to_pydict()
    assert rounds["aggregated"] == [4, 4] and rounds["dropped"] == [0, 0]
    assert np.isfinite(summary["final_psnr"]) and summary["clients_dropped"] == 0
    partition = pq.read_table(out / "partition.parquet").to_pydict()
    assert len(partition["video"]) == 7 and Path(victim.path).stem not in {Path(v).name for v in partition["video"]}
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert [(e["kind"], e["path"], e["problem"]) for e in events] == [("video_skipped", victim.path, "unreadable")]
    assert events[0]["message"].startswith(f"{victim.path}: PyAV cannot decode it")


def test_fcvsr_tiny_trains_two_federated_rounds(ray_local, synth_root, tmp_path):
    # FCVSR takes 7 frames and is trained with its own recipe (Charbonnier + frequency-aware contrastive loss)
    out, summary = run(
        tmp_path,
        "fcvsr",
        synth_root,
        "model.name=fcvsr",
        "data.frames=7",
        "fl.strategy=fedvsr",
        "data.root=" + str(tmp_path / "seven"),
    )
    rounds = pq.read_table(out / "rounds.parquet").to_pydict()
    assert rounds["round"] == [1, 2] and rounds["aggregated"] == [2, 2]
    assert all(np.isfinite(rounds["train_loss"])) and all(np.isfinite(rounds["psnr"]))
    # the contrastive term counts per pixel like the Charbonnier one (summed per sub-band it is in the
    # hundreds, and a mean similarity left it near 2): the loss stays of the order of a pixel error
    assert max(rounds["train_loss"]) < 0.5
    assert summary["params"] == 32834


def test_recipe_knobs_reach_the_run(ray_local, synth_root, tmp_path):
    """Cosine rate over rounds, gradient clipping, flip-rot augmentation, an evaluation folder apart from
    the training videos, PSNR / SSIM on Y and RGB: each lands where the config says."""
    eval_dir = tmp_path / "vid"
    for e in build_synthetic_dataset(tmp_path / "eval-src", 3, 5, 64, 64, seed=9):
        (eval_dir / e.label).mkdir(parents=True, exist_ok=True)
        (eval_dir / e.label / Path(e.path).name).write_bytes(Path(e.path).read_bytes())
    out, summary = run(
        tmp_path,
        "knobs",
        synth_root,
        "fl.lr_schedule=cosine",
        "fl.lr=0.004",
        "fl.clip_grad_norm=0.1",
        "eval.source=folder",
        f"eval.root={eval_dir}",
        "eval.holdout=0",
        "eval.channels=y+rgb",
        "data.videos=8",
    )
    rounds = pq.read_table(out / "rounds.parquet").to_pydict()
    assert rounds["lr"] == pytest.approx([0.004, 0.002])  # cosine over 2 rounds: (1 + cos(pi t / 2)) / 2
    clients = pq.read_table(out / "clients.parquet").to_pydict()
    assert clients["lr"] == pytest.approx([0.004, 0.004, 0.002, 0.002])
    assert all(np.isfinite(rounds["psnr_rgb"])) and all(0 < s < 1 for s in rounds["ssim_rgb"])
    assert summary["final_psnr_rgb"] == rounds["psnr_rgb"][-1] and summary["eval_channels"] == "y+rgb"
    # every one of the 8 training videos went to a client: none held out
    assert len(pq.read_table(out / "partition.parquet").to_pydict()["video"]) == 8
    # the bicubic baseline is that of the evaluation folder's videos (3 videos, 2 clips)
    pairs = [load_pair(e, "bicubic", 4) for e in scan_folder(eval_dir)]
    clips = eval_clips(pairs, 3, 2)
    ref = score([(bicubic_upsample(lr[1:2], 4), hr[1:2]) for lr, hr in clips], 4, "y+rgb")
    assert summary["bicubic_psnr"] == pytest.approx(ref["psnr"], abs=1e-9)
    assert summary["bicubic_psnr_rgb"] == pytest.approx(ref["psnr_rgb"], abs=1e-9)


def test_a_corrupt_evaluation_video_is_left_out_at_the_scan(ray_local, synth_root, tmp_path):
    folder, scanned = video_folder(tmp_path)
    _, held = split_holdout(scanned, 2, 0)
    victim = scanned[held[0]]
    with open(victim.path, "wb") as f:
        f.write(b"\x00not a video" * 50)
    out, summary = run(tmp_path, "corrupt-eval", synth_root, "data.source=folder", f"data.root={folder}", "fl.rounds=1")
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert [(e["kind"], e["path"]) for e in events] == [("video_skipped", victim.path)]
    # the run is evaluated on the two videos held out of the 9 readable ones: bicubic equals their clips' score
    usable = [e for e in scanned if e.path != victim.path]
    _, held = split_holdout(usable, 2, 0)
    cfg = load_config(None, tiny_experiment(synth_root, "data.source=folder", f"data.root={folder}"))
    from fedvsr.evaluation import evaluate_bicubic
    from fedvsr.models import build_model

    model = build_model(cfg.model.name, cfg.model.preset)
    clips = eval_clips([load_pair(usable[i], "bicubic", 4) for i in held], model.num_frames, cfg.eval.clips)
    assert summary["bicubic_psnr"] == evaluate_bicubic(model, clips, cfg)["psnr"]
    assert np.isfinite(summary["final_psnr"]) and summary["rounds"] == 1
