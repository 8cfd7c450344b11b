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
        (
            ["model.name=fcvsr", "model.options={band_masks: bogus}"],
            r"cannot build fcvsr/small: band mask mode must be one of \('eq12', 'difference'\), got 'bogus'",
        ),
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
    from fedvsr.fl.partition import PARTITIONS
    from fedvsr.fl.schedule import CLOCKS, SCHEDULES
    from fedvsr.metrics import CHANNELS

    assert config.DEGRADATIONS == tuple(DEGRADATIONS)
    assert config.LR_SCHEDULES == SCHEDULES and config.LR_CLOCKS == CLOCKS
    assert config.AUGMENTS == ("auto", *AUGMENTS)
    assert config.EVAL_CHANNELS == CHANNELS
    assert config.PARTITIONS == PARTITIONS
    # a strategy's keys are declared by its parameter dataclass (fl.hifr_mode: FedVSRParams with fl.hifr's modes)
    assert config.allowed_values("fl.hifr_mode") == "one of '2d', '3d'"
    assert config.allowed_values("fl.alpha_decay") == "one of 'none', 'linear', 'power'"


def test_the_documented_config_key_table_is_the_config():
    """docs/reference/config.md holds config_table(); rewrite it with `python docs/hooks/generate.py` when a key
    changes (`mkdocs build --strict` fails on it too)."""
    from pathlib import Path

    from fedvsr.config import config_table

    page = (Path(__file__).resolve().parents[1] / "docs" / "reference" / "config.md").read_text(encoding="utf-8")
    assert config_table() in page


def test_the_training_seed_keeps_the_data_and_the_data_seed_changes_it(tmp_path):
    """`seed` varies training only (replicates); `data.seed` picks the built-in videos, the held-out videos
    and the partition."""
    from fedvsr.data.sources import experiment_data, synthetic_root
    from fedvsr.fl.partition import partition_videos

    def data(*extra):
        cfg = load_config(
            None,
            [
                f"data.root={tmp_path}",
                "data.videos=12",
                "data.frames=2",
                "data.height=32",
                "data.width=32",
                "data.patch=8",
                "fl.clients=4",
                "fl.partition=random",
                *extra,
            ],
        )
        d = experiment_data(cfg)
        labels = [d.videos[i].label for i in d.pool]
        return synthetic_root(cfg.data, cfg.data.seed), d.held, partition_videos(labels, 4, "random", cfg.data.seed)

    base = data()
    assert data("seed=5") == base
    other = data("data.seed=5")
    assert other[0] != base[0]
    assert other[1:] != base[1:]


# ------------------------------------------------------------------- bounds, files, the machine, the output folder


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "seed=18446744073709551617",
            "seed = 18446744073709551617 is not allowed; expected an integer >= 0 and <= 9223372036854775807",
        ),
        ("fl.rounds=1.0e+12", "fl.rounds = 1000000000000.0 is not allowed; expected an integer >= 1 and <= 100000"),
        ("fl.batch_size=100000000", "fl.batch_size = 100000000 is not allowed; expected an integer >= 1 and <= 4096"),
        ("fl.lr=1e300", "fl.lr = '1e300' is not allowed; expected a number > 0.0 and <= 10.0"),
        ("data.height=65536", "data.height = 65536 is not allowed; expected an integer >= 16 and <= 8192"),
    ],
)
def test_absurd_values_name_the_allowed_range(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert str(info.value) == message


def test_the_largest_allowed_values_load():
    cfg = load_config(
        None,
        [
            "seed=9223372036854775807",
            "data.seed=9223372036854775807",
            "fl.rounds=100000",
            "fl.batch_size=4096",
            "fl.lr=10",
            "platform.oversubscribe=true",
        ],
    )
    assert (cfg.seed, cfg.fl.rounds, cfg.fl.lr, cfg.platform.oversubscribe) == (2**63 - 1, 100000, 10.0, True)


def test_config_files_that_cannot_be_read_name_the_file(tmp_path):
    from fedvsr.config import read_yaml_file

    (tmp_path / "b.yaml").write_bytes(b"fl:\n  lr: \xff\xfe\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "b.yaml")
    assert str(info.value) == (
        f"config file {str(tmp_path / 'b.yaml')!r} is not UTF-8 text (byte 10: invalid start "
        f"byte); expected a YAML file"
    )
    with pytest.raises(ConfigError, match="is a folder, not a YAML file"):
        load_config(tmp_path)
    (tmp_path / "bom.yaml").write_bytes("\ufefffl: {rounds: 3}\n".encode())  # a Windows editor's byte-order mark
    assert load_config(tmp_path / "bom.yaml").fl.rounds == 3
    (tmp_path / "bad.yaml").write_text("fl: [1, 2\n")
    with pytest.raises(ConfigError) as info:
        read_yaml_file(tmp_path / "bad.yaml", "sweep spec file")
    assert str(info.value).startswith(
        f"sweep spec file {str(tmp_path / 'bad.yaml')!r} is not valid YAML: while parsing a flow sequence; "
    )
    assert "\n" not in str(info.value)


def _tiny_machine_config(tmp_path, *extra):
    return load_config(None, [f"data.root={tmp_path}", *extra])


@pytest.fixture
def local(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def test_more_worker_cpus_than_the_machine_are_refused_unless_oversubscribed(tmp_path, local):
    from fedvsr.preflight import Machine, check_fits_machine, cpu_overcommit

    big = 2**50
    with pytest.raises(ConfigError) as info:
        check_fits_machine(_tiny_machine_config(tmp_path, "platform.workers=3"), Machine(cpus=2, memory=big))
    assert str(info.value) == (
        "platform.workers = 3 x platform.cpus_per_worker = 1 needs 3 CPUs but this machine "
        "has 2; allowed here: platform.workers <= 2, or platform.oversubscribe = true to share "
        "the cores (each worker then runs slower), or platform.address of a cluster"
    )
    halves = _tiny_machine_config(tmp_path, "platform.workers=5", "platform.cpus_per_worker=0.5")
    with pytest.raises(
        ConfigError,
        match=r"needs 2.5 CPUs but this machine has 2; allowed here: platform.workers "
        r"<= 4",
    ):
        check_fits_machine(halves, Machine(cpus=2, memory=big))
    over = _tiny_machine_config(tmp_path, "platform.workers=3", "platform.oversubscribe=true")
    check_fits_machine(over, Machine(cpus=2, memory=big))
    assert cpu_overcommit(over, Machine(cpus=2, memory=big)) == (3.0, 2)
    cluster = _tiny_machine_config(tmp_path, "platform.workers=3", "platform.address=10.0.0.1:6379")
    check_fits_machine(cluster, Machine(cpus=2, memory=big))  # a cluster's CPUs are not this machine's
    assert cpu_overcommit(cluster, Machine(cpus=2, memory=big)) is None


def test_the_model_and_the_built_in_videos_must_fit_the_memory(tmp_path, local):
    """efvsr/small has 160,707 parameters (tests/test_cli.py works them out); 2 workers x 4 copies + 3 for the
    coordinator, 4 bytes each: 160,707 x 44 = 7,071,108 bytes. A video is 16 x 128 x 128 x 3 = 786,432 bytes;
    rendering one takes 64 x 786,432 = 50,331,648."""
    from fedvsr.preflight import Machine, check_fits_machine

    cfg = _tiny_machine_config(tmp_path)
    with pytest.raises(
        ConfigError,
        match=r"gives efvsr/small 160,707 parameters \(627.8 KiB as float32\); 2 workers "
        r"holding at least 4 copies each .* need 6.7 MiB, more than this machine's "
        r"6.7 MiB of memory",
    ):
        check_fits_machine(cfg, Machine(cpus=2, memory=7_071_107))
    with pytest.raises(ConfigError) as info:  # the model fits; rendering a video does not
        check_fits_machine(cfg, Machine(cpus=2, memory=50_331_647))
    assert str(info.value) == (
        "the built-in videos are data.frames x data.height x data.width x 3 bytes = 16 x 128 x "
        "128 x 3 = 768.0 KiB each, and rendering one takes up to 64 times that (48.0 MiB, "
        "float64 scenes), more than this machine's 48.0 MiB of memory; allowed here: "
        "data.frames x data.height x data.width <= 262,143"
    )
    check_fits_machine(cfg, Machine(cpus=2, memory=50_331_648, disk_free=2**40))
    # 1000 videos less 4 held out over 8 clients: 124.5 x 786,432 x (1 + 1/16) = 104,030,208 bytes per client
    many = _tiny_machine_config(tmp_path, "data.videos=1000")
    with pytest.raises(
        ConfigError,
        match=r"give each client 99.2 MiB of decoded frames \(HR and LR\), which a worker "
        r"holds while it trains the client: more than this machine's 95.4 MiB of "
        r"memory; allowed here: data.videos <= 956,",
    ):
        check_fits_machine(many, Machine(cpus=2, memory=100_000_000, disk_free=2**40))


def test_the_built_in_videos_must_fit_the_free_disk_unless_built(tmp_path, local):
    """28 videos of 786,432 bytes are 22,020,096 bytes of frames."""
    from fedvsr.data.sources import synthetic_root
    from fedvsr.preflight import Machine, check_fits_machine

    cfg = _tiny_machine_config(tmp_path)
    with pytest.raises(ConfigError) as info:
        check_fits_machine(cfg, Machine(cpus=2, memory=2**40, disk_free=22_020_095))
    assert str(info.value) == (
        f"data.videos = 28 built-in videos of 768.0 KiB (data.frames x data.height x "
        f"data.width x 3 bytes = 16 x 128 x 128 x 3) are 21.0 MiB of frames to store under "
        f"{str(tmp_path)!r} (lossless files, and decoded copies in the cache), more than the "
        f"21.0 MiB free there; allowed here: data.videos <= 27, or data.root on a larger disk"
    )
    check_fits_machine(cfg, Machine(cpus=2, memory=2**40, disk_free=22_020_096))
    root = synthetic_root(cfg.data, cfg.data.seed)
    root.mkdir()
    (root / "manifest.json").write_text("{}")  # built already: nothing more to store
    check_fits_machine(cfg, Machine(cpus=2, memory=2**40, disk_free=0))


def test_output_folder_checks_leave_nothing_behind(tmp_path):
    from fedvsr.preflight import check_output_folder

    check_output_folder(tmp_path / "a" / "b" / "run", ours=("config.yaml",))  # created, probed, removed
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "empty").mkdir()
    check_output_folder(tmp_path / "empty", ours=("config.yaml",))
    assert list((tmp_path / "empty").iterdir()) == []
    full = tmp_path / "full"
    full.mkdir()
    for name in "abcdef":
        (full / f"{name}.txt").write_text(name)
    with pytest.raises(ConfigError) as info:
        check_output_folder(full, ours=("config.yaml",))
    assert str(info.value) == (
        f"--out {str(full)!r} holds other files (a.txt, b.txt, c.txt, d.txt, e.txt, ... (6 "
        f"entries)) and no fedvsr run; choose a new or empty folder"
    )
    check_output_folder(full)  # without `ours` (a sweep trial's folder): only that it is a writable folder
    (full / "config.yaml").write_text("seed: 0\n")
    with pytest.raises(ConfigError, match="already holds a run; pass --resume to continue it"):
        check_output_folder(full, ours=("config.yaml",))
    check_output_folder(full, resume=True, ours=("config.yaml",))
    assert sorted(p.name for p in full.iterdir()) == [
        "a.txt",
        "b.txt",
        "c.txt",
        "config.yaml",
        "d.txt",
        "e.txt",
        "f.txt",
    ]


@pytest.mark.parametrize(("model", "strategy"), [("efvsr", "fedvsr"), ("fcvsr", "fedavg-dwt")])
def test_3d_hifr_refused_for_centre_output_models(model, strategy):
    # a centre-output model returns one frame (b, c, H, W); 3D L_HiFr needs (b, t, c, H, W)
    with pytest.raises(
        ConfigError,
        match=(
            rf"fl.hifr_mode = '3d' needs a restored clip, but {model} restores only the centre frame "
            rf"\(fl.strategy = '{strategy}' uses L_HiFr\); allowed: fl.hifr_mode = '2d' with {model}, or '3d' with a "
            r"model that restores every frame \(basicvsr, basicvsr\+\+, fca2, vsrgan\)"
        ),
    ):
        load_config(None, [f"model.name={model}", f"fl.strategy={strategy}", "fl.hifr_mode=3d"])


def test_3d_hifr_allowed_where_it_runs():
    # clip-output models give L_HiFr a time axis
    cfg = load_config(None, ["model.name=basicvsr", "model.preset=tiny", "fl.strategy=fedvsr", "fl.hifr_mode=3d"])
    assert cfg.fl.params.hifr_mode == "3d"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["fl.strategy=fedvsr-gla", "fl.lambda_hifr=0.5"],
            "fl.lambda_hifr = 0.5 has no effect with fl.strategy = 'fedvsr-gla' (F-GLA: greedy loss-aware aggregation "
            "without decay, no DWT loss; it reads fl.lambda_vsr, fl.alpha, fl.mixing); remove it, or choose a strategy "
            "that reads it: fedvsr, fedavg-dwt",
        ),
        (
            ["fl.strategy=fedavg", "fl.mu=0.1"],
            "fl.mu = 0.1 has no effect with fl.strategy = 'fedavg' (FedAvg: sample-weighted average of the client "
            "models; it reads no fl.* key of its own); remove it, or choose a strategy that reads it: fedprox",
        ),
        (
            ["fl.strategy=fedvsr-gla", "fl.alpha_decay=power"],
            "fl.alpha_decay = 'power' has no effect with fl.strategy = 'fedvsr-gla'",
        ),
        (
            ["fl.strategy=fedavg-dwt", "fl.alpha=2"],
            "fl.alpha = 2.0 has no effect with fl.strategy = 'fedavg-dwt' "
            "(F-L_HiFr: the DWT loss with FedAvg's sample weights; it reads fl.lambda_vsr, fl.lambda_hifr, "
            "fl.hifr_mode, fl.hifr_eps, fl.mixing)",
        ),
        (
            ["fl.strategy=fedprox", "fl.server_lr=0.5"],
            "fl.server_lr = 0.5 has no effect with fl.strategy = 'fedprox' "
            "(FedProx: FedAvg plus the proximal term (mu/2)||w - w_global||^2; it reads fl.mu); remove it, or choose a "
            "strategy that reads it: scaffold",
        ),
    ],
)
def test_a_key_the_strategy_does_not_read_is_refused_naming_the_strategy(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert str(err.value).startswith(message)


def test_a_strategy_key_at_its_default_loads_under_any_strategy(tmp_path):
    # config.yaml of earlier runs holds every strategy's keys at their defaults: it still loads, to the same config
    old = tmp_path / "config.yaml"
    old.write_text(
        "fl:\n  strategy: fedvsr-gla\n  mu: 0.001\n  server_lr: 1.0\n  lambda_hifr: 1.0\n  alpha_decay: "
        "linear\n  lambda_vsr: 0.5\n"
    )
    cfg = load_config(old)
    assert (cfg.fl.params.lambda_vsr, cfg.fl.params.lambda_hifr, cfg.fl.params.alpha_decay) == (0.5, 0.0, "none")
    assert load_config(old).to_dict()["fl"]["lambda_hifr"] == 1.0  # written as before: the key's default
    # one that ran with a value the ablation ignored says what to change
    old.write_text("fl:\n  strategy: fedvsr-ala\n  lambda_hifr: 0.3\n")
    with pytest.raises(ConfigError, match=r"^fl.lambda_hifr = 0.3 has no effect with fl.strategy = 'fedvsr-ala' "):
        load_config(old)


def test_strategy_keys_are_declared_once_and_listed_once():
    from fedvsr.config import config_field, config_table
    from fedvsr.fl import FedProxParams, FedVSRParams

    rows = [line.split(" | ")[0] for line in config_table().splitlines()]
    assert rows.count("| `fl.mu`") == rows.count("| `fl.lambda_hifr`") == 1
    assert config_field("fl.mu") is FedProxParams.__dataclass_fields__["mu"]
    assert config_field("fl.lambda_hifr") is FedVSRParams.__dataclass_fields__["lambda_hifr"]
    with pytest.raises(ConfigError, match=r"unknown key 'fl.loss_aware'; allowed keys in 'fl': alpha,"):
        load_config(None, ["fl.strategy=fedvsr", "fl.loss_aware=false"])  # a switch of the registry, not a key
    with pytest.raises(ConfigError, match=r"unknown key 'fl.params'"):
        load_config(None, ["fl.params={mu: 1}"])
