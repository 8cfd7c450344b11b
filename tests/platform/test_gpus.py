"""The arithmetic of platform.gpus_per_worker = auto (fedvsr.platform.gpus); the run with Ray's fake GPUs and an
injected CUDA out-of-memory error is in test_scheduling.py."""

import pytest

from fedvsr.config import ConfigError, load_config
from fedvsr.platform.gpus import Packing, fewer, pack, probe_hook, workers_per_gpu

MIB = 2**20


def test_workers_per_gpu_keep_the_margin_free():
    assert workers_per_gpu(5000 * MIB, 16000 * MIB) == 2  # 13600 MiB usable / 5000
    assert workers_per_gpu(1700 * MIB, 16000 * MIB) == 8  # exactly 8 fit in 13600
    assert workers_per_gpu(1500 * MIB, 16000 * MIB) == 8  # 9.07 fit: capped at MAX_PER_GPU
    assert workers_per_gpu(100 * MIB, 80000 * MIB) == 8
    assert workers_per_gpu(20000 * MIB, 16000 * MIB) == 1  # does not fit even alone: one is tried, its error recorded


def test_packing_is_bounded_by_platform_workers_and_the_gpus():
    assert pack(5000 * MIB, 16000 * MIB, 1.0, 4) == Packing(5000 * MIB, 16000 * MIB, 2, 1.0, 2)
    assert pack(5000 * MIB, 16000 * MIB, 4.0, 4).workers == 4  # 8 would fit on 4 GPUs: platform.workers bounds it
    cfg = pack(3000 * MIB, 16000 * MIB, 2.0, 16).config(load_config(None, ["platform.gpus_per_worker=auto"]))
    assert (cfg.platform.gpus_per_worker, cfg.platform.workers) == (0.25, 8)
    assert [fewer(k) for k in (8, 4, 3, 2, 1)] == [4, 2, 1, 1, 1]


def test_auto_is_the_one_word_gpus_per_worker_takes():
    assert load_config(None, ["platform.gpus_per_worker=auto"]).platform.gpus_per_worker == "auto"
    with pytest.raises(ConfigError) as err:
        load_config(None, ["platform.gpus_per_worker=fast"])
    assert str(err.value) == (
        "platform.gpus_per_worker = 'fast' is not allowed; expected a number >= 0.0 and <= 8.0 or auto"
    )
    assert probe_hook("kill:1:2:m;gpu-probe:5000:16000") == (5000 * MIB, 16000 * MIB)
    assert probe_hook("kill:1:2:m") is None


def test_replicates_resolve_auto_once_for_all_of_them(tmp_path, monkeypatch):
    import json

    from fedvsr.platform import replicates

    monkeypatch.setattr(replicates.ray, "cluster_resources", lambda: {"CPU": 8.0, "GPU": 1.0})
    monkeypatch.setenv("FEDVSR_FAULT", "gpu-probe:3000:16000")  # 4 fit: 2 replicates of 2 workers, a quarter each
    cfg = load_config(None, ["platform.gpus_per_worker=auto", "platform.workers=4"])
    packed = replicates._pack_replicates(cfg, 2, tmp_path / "reps")
    assert (packed.platform.gpus_per_worker, packed.platform.workers) == (0.25, 2)
    saved = json.loads((tmp_path / "reps" / "gpu_packing.json").read_text())
    assert (saved["workers_per_gpu"], saved["workers"], saved["copies"]) == (4, 2, 2)
    assert saved["message"].endswith("4 workers per GPU, 2 workers for each of 2 replicates")
    monkeypatch.setattr(replicates.ray, "cluster_resources", lambda: {"CPU": 8.0})
    with pytest.raises(ConfigError, match="^platform.gpus_per_worker = auto but this Ray has no GPU; allowed here"):
        replicates._pack_replicates(cfg, 2, tmp_path / "none")
