"""FCA2's two-phase recipe federated end to end (tiny preset): phase 1 pretrains the autoencoder GT -> GT at
scale 1 for 2 rounds; phase 2 loads its model.safetensors, keeps the autoencoder frozen and trains cleaning
and backbone for 2 rounds."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from fedvsr.config import load_config
from fedvsr.platform.checkpoint import load_arrays
from fedvsr.platform.run import run_experiment
from tests.conftest import tiny_experiment

pytestmark = pytest.mark.slow

SMALL = (
    "model.name=fca2",
    "data.frames=7",
    "data.samples_per_video=2",
    "platform.workers=1",
    "eval.clips=1",
    "data.height=32",
    "data.width=32",
    "data.patch=8",
)


def test_fca2_pretrain_then_frozen_federated(ray_local, synth_root, tmp_path):
    # phase 1: the autoencoder alone, GT -> GT (data.scale = 1: LR = HR)
    cfg1 = load_config(None, tiny_experiment(synth_root, *SMALL, "model.options.mode=pretrain", "data.scale=1"))
    run_experiment(cfg1, tmp_path / "pretrain")
    rounds = pq.read_table(tmp_path / "pretrain" / "rounds.parquet").to_pydict()
    assert rounds["round"] == [1, 2] and rounds["aggregated"] == [2, 2]
    assert all(np.isfinite(rounds["psnr"])) and all(0 < loss < 1 for loss in rounds["train_loss"])
    pre = load_arrays(tmp_path / "pretrain" / "model.safetensors")
    ae_keys = [k for k in pre if k.startswith("autoencoder.")]
    assert ae_keys and all(k.startswith("autoencoder.") or k == "iteration" for k in pre)
    # the iteration counter is federated: 2 rounds of local steps moved it
    assert pre["iteration"] > 0

    # phase 2: the pretrained autoencoder frozen, cleaning + BasicVSR trained at x4
    cfg2 = load_config(
        None, tiny_experiment(synth_root, *SMALL, f"model.options.autoencoder_checkpoint={tmp_path / 'pretrain'}")
    )
    assert cfg2.model.options.get("mode", "frozen") == "frozen"
    summary = run_experiment(cfg2, tmp_path / "frozen")
    rounds = pq.read_table(tmp_path / "frozen" / "rounds.parquet").to_pydict()
    assert rounds["round"] == [1, 2] and all(np.isfinite(rounds["psnr"]))
    final = load_arrays(tmp_path / "frozen" / "model.safetensors")
    for k in ae_keys:  # never updated by any client
        np.testing.assert_array_equal(final[k], pre[k], err_msg=k)
    assert any(k.startswith("backbone.") for k in final) and any(k.startswith("cleaning.") for k in final)
    assert summary["params"] > len(ae_keys)
