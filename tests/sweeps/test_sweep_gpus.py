"""``platform.gpus_per_worker = auto`` in a sweep (fedvsr.sweeps.gpus): one probe for every trial, and the specs
one probe cannot measure refused before Ray starts. The sweep on Ray's fake GPUs is in
tests/platform/test_scheduling.py (``fake_gpu_runs``)."""

import pytest

from fedvsr.config import ConfigError, load_config
from fedvsr.platform.central import central_config
from fedvsr.sweeps.gpus import check_auto, resolve_sweep
from fedvsr.sweeps.runner import pack, run_sweep
from fedvsr.sweeps.spec import build_spec
from fedvsr.sweeps.trial import trial_plan
from tests.sweeps.test_sweep_ray import tiny_fixed

MIB = 2**20
GPU = {"CPU": 4.0, "GPU": 1.0}


def auto_spec(root, params, **extra):
    fixed = {**tiny_fixed(root, 1), "platform.workers": 4, "platform.gpus_per_worker": "auto"}
    fixed = {k: v for k, v in fixed.items() if k not in params}  # a key is fixed or swept
    return build_spec("gpu", {"search": "grid", "scheduler": "none", "fixed": fixed, "params": params, **extra})


def test_one_probe_sets_every_trials_gpu_share_and_workers(tmp_path):
    spec = auto_spec(tmp_path, {"fl.lr": {"grid": [0.001, 0.002]}})
    probes = []

    def measure():
        probes.append(1)
        return 5000 * MIB, 16000 * MIB

    resolved, packing = resolve_sweep(spec, trial_plan(spec, {}).cfg, GPU, measure)
    assert probes == [1] and (packing.per_gpu, packing.workers) == (2, 2)  # 13600 MiB usable / 5000: 2 fit
    for lr in (0.001, 0.002):
        cfg = trial_plan(resolved, {"params": {"fl.lr": lr}}).cfg
        assert (cfg.fl.lr, cfg.platform.gpus_per_worker, cfg.platform.workers) == (lr, 0.5, 2)
    # --concurrent auto then fills the GPU's 2 slots of half a GPU: 2 trials of 1 worker side by side
    packed, concurrent = pack(resolved, {"CPU": 4.0, "GPU": 1.0})
    assert (packed.fixed["platform.gpus_per_worker"], packed.fixed["platform.workers"], concurrent) == (0.5, 1, 2)
    assert packing.record()["message"].endswith("2 workers per GPU, 2 workers")
    # replicates are alive at once: 2 replicates of 1 worker each fit, 3 do not
    base = trial_plan(spec, {}).cfg

    def replicates(n, resources=GPU, peak=5000):
        reps = auto_spec(tmp_path, {"fl.lr": {"grid": [0.001]}}, replicates=n)
        return resolve_sweep(reps, base, resources, lambda: (peak * MIB, 16000 * MIB))

    two, p2 = replicates(2)
    assert (two.fixed["platform.workers"], p2.copies) == (1, 2) and p2.describe().endswith("for each of 2 replicates")
    with pytest.raises(ConfigError) as err:
        replicates(3)
    assert str(err.value) == (
        "platform.gpus_per_worker = auto: 2 workers of this experiment fit on 1 GPU, fewer than its 3 replicates "
        "alive at once need (one each); allowed here: a number, or at most 2 replicates"
    )
    # 8 fit on the GPU, but 2 replicates of a 1-CPU worker on 2 CPUs: 1 worker each; on 1 CPU, none
    assert replicates(2, {"CPU": 2.0, "GPU": 1.0}, peak=1700)[1].workers == 1
    assert replicates(2, {"CPU": 8.0, "GPU": 1.0}, peak=1700)[1].workers == 4
    with pytest.raises(ConfigError, match="2 x platform.cpus_per_worker = 1 is more than this Ray's 1 CPUs"):
        replicates(2, {"CPU": 1.0, "GPU": 1.0}, peak=1700)


def test_auto_without_a_gpu_is_refused_before_any_probe(tmp_path):
    spec = auto_spec(tmp_path, {"fl.lr": {"grid": [0.001]}})
    with pytest.raises(ConfigError) as err:
        resolve_sweep(spec, trial_plan(spec, {}).cfg, {"CPU": 4.0}, lambda: pytest.fail("probed without a GPU"))
    assert str(err.value) == "platform.gpus_per_worker = auto but this Ray has no GPU; allowed here: a number"


@pytest.mark.parametrize(
    "key, grid",
    [("model.preset", ["tiny", "small"]), ("fl.batch_size", [2, 4]), ("data.patch", [8, 16])],
)
def test_a_sweep_of_a_key_that_changes_a_clients_memory_is_refused_before_ray_starts(tmp_path, monkeypatch, key, grid):
    import fedvsr.platform.run

    monkeypatch.setattr(fedvsr.platform.run, "init_ray", lambda *a, **k: pytest.fail("Ray started"))
    spec = auto_spec(tmp_path, {key: {"grid": grid}})
    with pytest.raises(ConfigError) as err:
        run_sweep(spec, tmp_path / "sweep")
    assert str(err.value) == (
        f"platform.gpus_per_worker = auto measures one configuration, but this sweep varies {key}, which changes "
        f"a client's GPU memory; allowed here: a number for platform.gpus_per_worker"
    )
    assert not (tmp_path / "sweep").exists()


def test_auto_is_decided_once_so_the_worker_count_and_auto_itself_are_not_swept(tmp_path):
    with pytest.raises(ConfigError, match="but this sweep varies platform.workers; allowed here: a number"):
        check_auto(auto_spec(tmp_path, {"platform.workers": {"grid": [1, 2]}}))
    fixed = {k: v for k, v in tiny_fixed(tmp_path, 1).items() if k != "platform.workers"}
    swept = build_spec(
        "g", {"search": "grid", "fixed": fixed, "params": {"platform.gpus_per_worker": {"grid": [0.5, "auto"]}}}
    )
    with pytest.raises(ConfigError) as err:
        check_auto(swept)
    assert str(err.value) == (
        "platform.gpus_per_worker = auto is decided once per sweep: give it as a fixed key (or --set), "
        "not among the swept values; allowed here: numbers"
    )
    check_auto(auto_spec(tmp_path, {"fl.lr": {"grid": [0.001]}, "fl.local_epochs": {"grid": [1, 2]}}))  # fine


def test_train_central_refuses_auto():
    cfg = load_config(None, ["platform.gpus_per_worker=auto"])
    with pytest.raises(ConfigError) as err:
        central_config(cfg, 2, True)
    assert str(err.value) == (
        "platform.gpus_per_worker = auto packs federated clients on a GPU, but train-central trains one model "
        "data-parallel, a GPU per worker; allowed here: a number (platform.gpus_per_worker=1)"
    )
    assert central_config(cfg, 2, False).platform.gpus_per_worker == 0.0  # on the CPU it is not used
