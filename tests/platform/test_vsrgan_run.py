"""VSRGAN in a federated run: both tiny generators with their discriminator, under FedAvg and FedVSR."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from fedvsr.config import load_config
from fedvsr.models import build_model
from fedvsr.platform.checkpoint import load_arrays
from fedvsr.platform.run import run_experiment
from tests.conftest import tiny_experiment

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("strategy", ["fedavg", "fedvsr"])
@pytest.mark.parametrize("preset", ["tiny", "tiny-residual"])
def test_vsrgan_tiny_trains_two_federated_rounds(ray_local, synth_root, tmp_path, preset, strategy):
    cfg = load_config(
        None,
        tiny_experiment(
            synth_root,
            "model.name=vsrgan",
            f"model.preset={preset}",
            f"fl.strategy={strategy}",
            "data.samples_per_video=2",
            "platform.workers=1",
            "eval.clips=1",
        ),
    )
    summary = run_experiment(cfg, tmp_path / "run")
    rounds = pq.read_table(tmp_path / "run" / "rounds.parquet").to_pydict()
    assert rounds["round"] == [1, 2] and rounds["aggregated"] == [2, 2]
    assert all(np.isfinite(rounds["psnr"])) and all(0 < s <= 1 for s in rounds["ssim"])
    # the reported loss is the generator's MSE content loss: of the order of a squared pixel error
    assert all(0 < loss < 0.1 for loss in rounds["train_loss"])
    clients = pq.read_table(tmp_path / "run" / "clients.parquet").to_pydict()
    assert set(clients["status"]) == {"ok"}
    # both networks are federated: the final global model holds a trained generator and discriminator
    final = load_arrays(tmp_path / "run" / "model.safetensors")
    torch.manual_seed(cfg.seed)
    initial = build_model("vsrgan", preset).state_dict()
    for net in ("generator.", "discriminator."):
        keys = [k for k in initial if k.startswith(net)]
        assert keys and all(k in final for k in keys)
        assert any(not np.array_equal(final[k], initial[k].numpy()) for k in keys), net
    assert summary["params"] == sum(v.numel() for k, v in initial.items() if k.startswith("generator."))
