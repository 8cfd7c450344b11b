"""config.py: building from YAML + overrides, and every kind of rejected value."""

from __future__ import annotations

import pytest

from fedvsr.config import ConfigError, ExperimentConfig, load_config, parse_override


def test_defaults_are_valid_and_round_trip_through_yaml(tmp_path):
    cfg = load_config()
    assert cfg == ExperimentConfig()
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg


def test_yaml_file_then_overrides_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 3\nfl:\n  rounds: 7\n  lr: 0.01\nmodel: {name: efvsr, preset: tiny}\n")
    cfg = load_config(path, ["fl.lr=2e-4", "fl.rounds=9", "model.options={channels: 8}"])
    assert cfg.seed == 3
    assert cfg.fl.rounds == 9
    assert cfg.fl.lr == pytest.approx(2e-4)  # YAML reads "2e-4" as a string; the float field coerces it
    assert cfg.model.preset == "tiny"
    assert cfg.model.options == {"channels": 8}


def test_parse_override_types():
    assert parse_override("fl.rounds=5") == ("fl.rounds", 5)
    assert parse_override("platform.address=") == ("platform.address", "")
    assert parse_override("model.name=efvsr") == ("model.name", "efvsr")
    with pytest.raises(ConfigError, match="not of the form key=value"):
        parse_override("fl.rounds")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["fl.lrr=1"], "unknown key 'fl.lrr'; allowed keys in 'fl': alpha, alpha_decay, batch_size, clients,"),
        (["foo=1"], "unknown key 'foo'; allowed keys: data, eval, fl, model, platform, seed"),
        (["fl.lr=-0.1"], r"fl.lr = -0.1 is not allowed; expected a number > 0.0"),
        (["fl.lr=0"], r"fl.lr = 0 is not allowed; expected a number > 0.0"),
        (["fl.lr=fast"], r"fl.lr = 'fast' is not allowed; expected a number > 0.0"),
        (["fl.clients=2.5"], r"fl.clients = 2.5 is not allowed; expected an integer >= 1"),
        (["fl.clients=true"], r"fl.clients = True is not allowed; expected an integer >= 1"),
        (["fl.clients_per_round=9"], r"fl.clients_per_round = 9 is larger than fl.clients = 8"),
        (["fl.strategy=fedsgd"], r"fl.strategy = 'fedsgd' is not allowed; expected one of 'fedavg'"),
        (["data.scale=5"], r"data.scale = 5 is not allowed; expected one of 1, 2, 3, 4"),
        (["data.source=lmdb"], r"data.source = 'lmdb' is not allowed; expected one of 'synthetic', 'folder'"),
        (["platform.workers=0"], r"platform.workers = 0 is not allowed; expected an integer >= 1"),
        (["platform.gpus_per_worker=-1"], r"platform.gpus_per_worker = -1 is not allowed"),
        (["model.name=vrt"], r"model.name = 'vrt': unknown model 'vrt'; registered models: "),
        (["model.preset=huge"], r"model.preset = 'huge' is not a preset of 'efvsr'; allowed: tiny, small"),
        (["fl=3"], r"fl = 3 is not allowed; expected a mapping of fl.\* keys"),
        (["data.clip_frames=5"], r"data.clip_frames = 5 does not match the 3 input frames of efvsr/small"),
        (["fl.clients=30"], r"data.videos = 28 leaves 24 videos after eval.holdout = 4, fewer than fl.clients"),
        (["data.height=102"], r"data.height = 102 must be a multiple of data.scale = 4"),
        (["data.patch=64"], r"data.height = 128 .* allowed: data.height >= 256"),
        (["data.source=folder"], r"data.root = '' must name the dataset folder"),
        (["model.options={channels: -3}"], r"model.options = \{'channels': -3\} cannot build efvsr/small"),
        (["model.options={colour: 3}"], r"cannot build efvsr/small: .*unexpected keyword argument 'colour'"),
        (["model.name=fcvsr", "model.options={band_masks: bogus}"],
         r"cannot build fcvsr/small: band mask mode must be one of \('eq12', 'difference'\), got 'bogus'"),
        (["fl.rounds={a: 1}"], r"fl.rounds = \{'a': 1\} is not allowed; expected an integer >= 1"),
        (["data.crf=52"], r"data.crf = 52 is not allowed; expected an integer >= 0 and <= 51"),
        (["data.qp=-1"], r"data.qp = -1 is not allowed; expected an integer >= 0 and <= 51"),
        (["data.augment=rotate"], r"data.augment = 'rotate' is not allowed; expected one of 'auto', 'none'"),
        (["eval.holdout=0"], r"eval.holdout = 0 leaves no evaluation video with eval.source = 'holdout'"),
        (["eval.source=folder"], r"eval.root = '' must name the folder of evaluation videos"),
        (["eval.channels=yuv"], r"eval.channels = 'yuv' is not allowed; expected one of 'y', 'rgb', 'y\+rgb'"),
    ],
)
def test_bad_values_name_key_value_and_what_is_allowed(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("fl: [1, 2\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping at the top level"):
        load_config(listing)


def test_config_choices_follow_the_implementations():
    from fedvsr import config
    from fedvsr.data.datasets import AUGMENTS
    from fedvsr.data.degrade import DEGRADATIONS
    from fedvsr.fl.hifr import HIFR_MODES
    from fedvsr.fl.loss_aware import ALPHA_DECAYS
    from fedvsr.fl.partition import PARTITIONS
    from fedvsr.fl.schedule import CLOCKS, SCHEDULES
    from fedvsr.metrics import CHANNELS

    assert config.DEGRADATIONS == tuple(DEGRADATIONS)
    assert config.LR_SCHEDULES == SCHEDULES and config.LR_CLOCKS == CLOCKS
    assert config.AUGMENTS == ("auto", *AUGMENTS)
    assert config.EVAL_CHANNELS == CHANNELS
    assert config.PARTITIONS == PARTITIONS
    assert config.ALPHA_DECAYS == ALPHA_DECAYS
    assert config.HIFR_MODES == HIFR_MODES


def test_readme_configuration_table_is_the_config():
    """The README's table is generated by config_table(); regenerate it when a key changes."""
    from pathlib import Path

    from fedvsr.config import config_table

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert config_table() in readme


def test_the_training_seed_keeps_the_data_and_the_data_seed_changes_it(tmp_path):
    """`seed` varies training only (replicates); `data.seed` picks the built-in videos, the held-out videos
    and the partition."""
    from fedvsr.data.sources import experiment_data, synthetic_root
    from fedvsr.fl.partition import partition_videos

    def data(*extra):
        cfg = load_config(None, [f"data.root={tmp_path}", "data.videos=12", "data.frames=2", "data.height=32",
                                 "data.width=32", "data.patch=8", "fl.clients=4", "fl.partition=random", *extra])
        d = experiment_data(cfg)
        labels = [d.videos[i].label for i in d.pool]
        return synthetic_root(cfg.data, cfg.data.seed), d.held, partition_videos(labels, 4, "random", cfg.data.seed)

    base = data()
    assert data("seed=5") == base
    other = data("data.seed=5")
    assert other[0] != base[0]
    assert other[1:] != base[1:]
