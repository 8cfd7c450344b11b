"""fl.partition = by-degradation: each client's LR videos from its own device (bicubic, blur, H.264, HEVC in turn),
the evaluation videos from every kind; the videos split as random splits them (issue 22, item 7)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from fedvsr.config import ConfigError, load_config
from fedvsr.data.cache import cache_key, cache_root
from fedvsr.data.datasets import eval_clips, load_pair_for
from fedvsr.data.degrade import degrade_video
from fedvsr.data.sources import experiment_data
from fedvsr.data.synthetic import build_synthetic_dataset
from fedvsr.data.video import VideoEntry, read_video
from fedvsr.fl.partition import client_degradations, evaluation_degradations, partition_videos, with_degradations
from tests.conftest import run_tiny, tiny_experiment


def test_a_video_with_its_own_degradation_is_degraded_by_it(tmp_path):
    """load_pair_for uses the entry's degradation and parameters instead of data.degradation, and the LR cache keys
    on them: two devices' LR videos of one HR video are two entries."""
    [entry] = build_synthetic_dataset(tmp_path / "v", 1, 2, 32, 32, 0)
    cfg = load_config(None, [f"data.lr_cache={tmp_path / 'lr'}"])
    hr = read_video(entry.path)
    plain = load_pair_for(cfg, entry)
    np.testing.assert_array_equal(plain.lr, degrade_video(hr, "bicubic", 4))
    blurred = VideoEntry(entry.path, entry.label, entry.name, degradation="blur", degradation_params=(("sigma", 1.2),))
    np.testing.assert_array_equal(load_pair_for(cfg, blurred).lr, degrade_video(hr, "blur", 4, sigma=1.2))
    root = cache_root(cfg.data.lr_cache)
    keys = {cache_key(entry.path, "bicubic", 4, {}), cache_key(entry.path, "blur", 4, {"sigma": 1.2})}
    assert {p.stem for p in root.glob("*.npy") if not p.name.endswith(".hr.npy")} == keys
    assert cache_key(entry.path, "blur", 4, {"sigma": 1.2}) != cache_key(entry.path, "blur", 4, {"sigma": 1.3})


def test_config_refuses_a_data_degradation_with_by_degradation():
    message = (
        r"data.degradation = 'h264' is not used with fl.partition = 'by-degradation', which gives every client "
        r"its own device's degradation .*allowed: data.degradation = 'bicubic' \(the default\), or another "
        r"fl.partition"
    )
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["fl.partition=by-degradation", "data.degradation=h264"])
    assert load_config(None, ["fl.partition=by-degradation"]).fl.partition == "by-degradation"
    with pytest.raises(
        ConfigError,
        match=r"fl.partition = 'by-device' is not allowed; expected one of .*"
        r"'by-degradation'",
    ):
        load_config(None, ["fl.partition=by-device"])


@pytest.mark.slow
def test_tiny_run_gives_each_client_its_device(ray_local, synth_root, tmp_path):
    """A 2-round Ray run: partition.parquet names each client's device (random's split), the workers degraded each
    client's videos by its device (the LR cache holds them under those keys, and a blur entry is the exact blur),
    and the bicubic baseline is that of the evaluation videos degraded by every kind in turn."""
    extra = ("fl.partition=by-degradation", "data.seed=3")
    out, summary = run_tiny(tmp_path, "by-degradation", synth_root, *extra)
    cfg = load_config(None, tiny_experiment(synth_root, *extra))
    data = experiment_data(cfg)
    labels = [data.videos[i].label for i in data.pool]
    parts = partition_videos(labels, 4, "random", 3)
    devices = client_degradations(4, 3)
    assert [d.name for d in devices] == ["bicubic", "blur", "h264", "hevc"]

    table = pq.read_table(out / "partition.parquet").to_pydict()
    assert table["video_index"] == [i for part in parts for i in part]
    assert table["degradation"] == [devices[c].name for c in table["client"]]
    assert [json.loads(p) for p in table["degradation_params"]] == [dict(devices[c].params) for c in table["client"]]

    # each client's videos were degraded by its device: the LR cache holds every one under its device's key
    root = cache_root("")
    for c, part in enumerate(parts):
        for j in part:
            e = data.videos[data.pool[j]]
            assert (root / f"{cache_key(e.path, devices[c].name, 4, dict(devices[c].params))}.npy").is_file()
    blur_video = data.videos[data.pool[parts[1][0]]]
    cached = np.load(root / f"{cache_key(blur_video.path, 'blur', 4, dict(devices[1].params))}.npy")
    np.testing.assert_array_equal(
        cached, degrade_video(read_video(blur_video.path), "blur", 4, **dict(devices[1].params))
    )

    # the evaluation videos: bicubic and blur(1.5) (the two held out), read back through the cache the run filled
    held = with_degradations(data.videos, [[] for _ in range(4)], data.held, devices)
    assert [(held[i].degradation, held[i].degradation_params) for i in data.held] == [
        (d.name, d.params) for d in evaluation_degradations(2)
    ]
    from fedvsr.evaluation import evaluate_bicubic
    from fedvsr.models import build_model

    model = build_model(cfg.model.name, cfg.model.preset)
    clips = eval_clips([load_pair_for(cfg, held[i]) for i in data.held], model.num_frames, cfg.eval.clips)
    assert summary["bicubic_psnr"] == evaluate_bicubic(model, clips, cfg)["psnr"]
    rounds = pq.read_table(out / "rounds.parquet").to_pydict()
    assert rounds["round"] == [1, 2] and all(np.isfinite(rounds["psnr"]))
