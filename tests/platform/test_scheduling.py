"""The worker pool: dynamic scheduling, per-client retries after a worker dies mid-round, evaluation split
across workers, client dropout and deadlines, throughput, and GPU placement (Ray's fake GPU resources)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from fedvsr.config import ConfigError, load_config
from fedvsr.data.synthetic import build_synthetic_dataset
from fedvsr.fl.sampling import client_seed
from fedvsr.platform.worker import ClientWorker
from tests.conftest import run_tiny

pytestmark = pytest.mark.slow
METRICS = ["psnr", "ssim", "train_loss"]


run = run_tiny


def table(out, name):
    return pq.read_table(out / f"{name}.parquet").to_pydict()


def events(out):
    path = out / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("killed", [3, 0])
def test_a_worker_killed_mid_round_retries_only_its_client(ray_local, synth_root, tmp_path, monkeypatch, killed):
    # every client in every round (4 of 4), dealt 0 and 2 to worker 0 (client 2 queued behind client 0:
    # platform.queue_depth = 2) and 1 to worker 1; 3 goes to whichever worker is free first. In round 2 the
    # worker that starts client `killed` is SIGKILLed as it starts it: client 3 (nothing queued behind it), or
    # client 0, with client 2 queued behind it, which never started, so it is not counted as retried
    marker = tmp_path / "fault-fired"
    monkeypatch.setenv("FEDVSR_FAULT", f"kill:2:{killed}:{marker}")
    progress = []
    out, _ = run(tmp_path, "killed", synth_root, "fl.clients_per_round=4", on_progress=progress.append)
    monkeypatch.delenv("FEDVSR_FAULT")
    assert marker.exists()  # the fault really fired
    clients = table(out, "clients")
    rows = [
        (r, c, a, s)
        for r, c, a, s in zip(clients["round"], clients["client"], clients["attempts"], clients["status"], strict=True)
    ]
    # one row per client and round: the clients the workers finished were not trained again
    assert rows == [
        (1, 0, 1, "ok"),
        (1, 1, 1, "ok"),
        (1, 2, 1, "ok"),
        (1, 3, 1, "ok"),
        *[(2, c, 2 if c == killed else 1, "ok") for c in range(4)],
    ]
    rounds = table(out, "rounds")
    assert rounds["retried"] == [0, 1] and rounds["aggregated"] == [4, 4] and rounds["workers"] == [2, 2]
    assert rounds["eval_workers"] == [2, 2]  # the held-out clips were split between the two workers
    found = events(out)
    requeued = [(e["round"], e["client"]) for e in found if e["kind"] == "client_requeued"]
    assert requeued == ([(2, 2)] if killed == 0 else [])  # client 2 waited behind client 0 on the dead worker
    found = [e for e in found if e["kind"] != "client_requeued"]
    assert [e["kind"] for e in found] == ["worker_died", "client_retried"]
    assert (found[1]["round"], found[1]["client"]) == (2, killed)
    # a progress item per finished client, in order; the killed attempt is not counted
    assert [(p["round"], p["progress"]) for p in progress] == [(r, (k, 4)) for r in (1, 2) for k in (1, 2, 3, 4)]
    # throughput: updates and samples per second of training time
    for r in range(2):
        assert rounds["updates_per_s"][r] == pytest.approx(4 / rounds["train_seconds"][r])
        assert rounds["samples_per_s"][r] == pytest.approx(4 * 8 / rounds["train_seconds"][r])
    # the same numbers as one worker training every client in turn, with no failure
    one, _ = run(tmp_path, "one-worker", synth_root, "fl.clients_per_round=4", "platform.workers=1")
    assert {k: rounds[k] for k in METRICS} == {k: table(one, "rounds")[k] for k in METRICS}
    assert table(one, "rounds")["eval_workers"] == [1, 1]


def test_dropout_and_deadlines_are_seeded_and_recorded(ray_local, synth_root, tmp_path):
    out, summary = run(
        tmp_path, "hetero", synth_root, "fl.clients_per_round=4", "fl.dropout=0.3", "fl.deadline=2", "fl.stragglers=0.7"
    )
    clients = table(out, "clients")
    speed = np.exp(0.7 * np.random.default_rng([0, 0x5EED]).standard_normal(4))
    planned = 2  # 2 videos x 4 clips = 8 samples, batches of 4, one local epoch
    expected = []
    for t in (1, 2):
        for c in range(4):
            if np.random.default_rng([client_seed(0, t, c), 0xD0]).random() < 0.3:
                expected.append((t, c, "dropped", 0, False, "did not report (fl.dropout = 0.3)"))
                continue
            allowed = math.floor(2 * speed[c])
            if allowed == 0:
                expected.append((t, c, "dropped", 0, True, "the deadline came before the first local step"))
            else:
                expected.append((t, c, "ok", min(allowed, planned), allowed < planned, ""))
    got = list(
        zip(
            clients["round"],
            clients["client"],
            clients["status"],
            clients["steps"],
            clients["cut"],
            clients["reason"],
            strict=True,
        )
    )
    assert got == expected
    # the draws of this seed cover every case: dropped out, dropped at the deadline, cut, and complete
    assert {e[2:5] for e in expected} == {
        ("dropped", 0, False),
        ("dropped", 0, True),
        ("ok", 1, True),
        ("ok", 2, False),
    }
    assert clients["speed"] == pytest.approx([speed[c] for c in clients["client"]])
    assert clients["budget"] == pytest.approx([2 * speed[c] for c in clients["client"]])
    rounds = table(out, "rounds")
    assert rounds["dropped"] == [3, 1] and rounds["cut"] == [1, 2]
    assert summary["clients_dropped"] == 4
    # a cut client's update counts the samples it processed: 1 step x 4 samples
    seen = [s for s, c in zip(clients["seen"], clients["cut"], strict=True) if c]
    assert set(seen) <= {0, 4}


@pytest.fixture(scope="module")
def worker_inputs(tmp_path_factory):
    entries = build_synthetic_dataset(tmp_path_factory.mktemp("videos"), 4, 5, 64, 64, seed=0)
    return entries, [[0, 1], [2]], [3]


def make_worker(worker_inputs, *extra):
    cfg = load_config(
        None,
        [
            "model.preset=tiny",
            "fl.batch_size=4",
            "data.patch=16",
            "data.samples_per_video=4",
            "fl.clients=2",
            "fl.clients_per_round=1",
            *extra,
        ],
    )
    videos, client_videos, held = worker_inputs
    return ClientWorker.local(cfg, 0, videos, client_videos, held)


def test_a_late_client_is_dropped_or_cut_as_configured(worker_inputs):
    # client 0 has 2 videos x 4 clips = 8 samples: 2 steps of 4
    import torch

    from fedvsr.fl.aggregate import to_numpy
    from fedvsr.fl.participation import ClientPlan
    from fedvsr.fl.strategy import float_state

    worker = make_worker(worker_inputs, "fl.deadline=1", "fl.deadline_action=drop")
    params = to_numpy(float_state(worker.model))
    torch.manual_seed(0)
    late = worker.train_client(1, params, {}, 0, None, ClientPlan(speed=0.75, budget=1.5))
    assert late.report.status == "dropped" and late.report.steps == 0
    assert late.report.reason == "missed the deadline: needs 2 local steps, its deadline allows 1"
    assert late.update.entries == [] and late.state is None
    on_time = worker.train_client(1, params, {}, 0, None, ClientPlan(budget=2.0))
    assert on_time.report.status == "ok" and on_time.report.steps == 2
    assert on_time.report.seen == 8 and not on_time.report.cut
    assert [e[0] for e in on_time.update.entries] == ["model"]
    # a wall-clock deadline too short for one step: nothing to aggregate, whatever the action
    timed = make_worker(worker_inputs, "fl.deadline=1", "fl.deadline_unit=seconds")
    first = timed.train_client(1, params, {}, 1, None, ClientPlan(budget=1e-9))
    assert first.report.status == "dropped" and first.report.cut
    assert first.report.reason == "the deadline came before the first local step"
    cut = make_worker(worker_inputs, "fl.deadline=1")
    half = cut.train_client(1, params, {}, 0, None, ClientPlan(budget=1.0))
    assert half.report.status == "ok" and half.report.steps == 1 and half.report.cut
    assert half.report.seen == 4 and half.report.device == "cpu"


def test_stragglers_need_a_deadline():
    with pytest.raises(ConfigError, match="fl.stragglers = 0.5 has no effect without a deadline"):
        load_config(None, ["fl.stragglers=0.5"])
    with pytest.raises(ConfigError, match="fl.dropout"):
        load_config(None, ["fl.dropout=1.5"])


def test_a_pool_larger_than_the_local_ray_is_refused(ray_local, synth_root, tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"platform.workers = 3 x platform.cpus_per_worker = 1.0 needs 3 CPUs but "
        r"this Ray has 2; allowed here: platform.workers <= 2",
    ):
        run(tmp_path, "too-big", synth_root, "platform.workers=3")
    assert not (tmp_path / "too-big").exists()


FAKE_GPU_RUNS = """
import json, os, sys
import ray
from fedvsr.config import load_config
from fedvsr.platform.run import run_experiment
from tests.conftest import tiny_experiment

root, runs, sweep = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
os.environ["FEDVSR_FAULT"] = sweep["fault"] if sweep else ""  # before Ray starts: the sweep's trial actors inherit it
ray.init(num_cpus=4, num_gpus=1, include_dashboard=False, logging_level="ERROR")
for run in runs:
    os.environ["FEDVSR_FAULT"] = run["fault"]  # the driver's environment, read at each run's start
    cfg = load_config(None, tiny_experiment(root, "fl.rounds=1", "fl.clients_per_round=4",
                                            f"platform.workers={run['workers']}", "platform.cpus_per_worker=0.5",
                                            f"platform.gpus_per_worker={run['per']}"))
    seen = {}
    try:
        run_experiment(cfg, run["out"], on_start=seen.update)
    except Exception as err:
        print(json.dumps({"error": str(err)}))
    else:
        print(json.dumps({"gpus": seen["gpus"], "devices": seen["devices"]}))

if not sweep:
    sys.exit()
from fedvsr.sweeps.runner import run_sweep
from fedvsr.sweeps.spec import build_spec
from tests.conftest import tiny_fixed

os.environ["FEDVSR_FAULT"] = sweep["fault"]  # the driver's probe reads it
fixed = {**tiny_fixed(root, 1), "fl.clients_per_round": 4, "platform.workers": 2, "platform.cpus_per_worker": 0.5,
         "platform.gpus_per_worker": "auto"}
spec = build_spec("gpu-auto", {"search": "grid", "scheduler": "none", "fixed": fixed,
                               "params": {"fl.lr": {"grid": [0.001, 0.002]}}})
lines = []
rows = run_sweep(spec, sweep["out"], echo=lines.append)
print(json.dumps({"lines": lines, "rows": [{k: r[k] for k in ("out", "status", "fl.lr")} for r in rows]}))
"""


@pytest.fixture(scope="module")
def fake_gpu_runs(synth_root, tmp_path_factory):
    """Runs on a local Ray told it has one GPU (Ray's fake GPU resources: this machine has none, and torch sees no
    CUDA, so the clients train on the CPU), in two processes side by side, each its own Ray (a process start, which
    these runs are mostly made of, keeps one core busy):

    * one after another in the first:

      * ``auto``: platform.gpus_per_worker = auto, 4 workers asked for; the probe (testing hook) says a client peaks
        at 5000 MiB of 16000, and client 0 runs out of GPU memory once (injected);
      * ``quarter``: four workers on a quarter of the GPU each;
      * ``five``: a fifth quarter, which does not fit on one GPU;

    * ``sweep``, in the second: a grid sweep of 2 one-round trials with platform.gpus_per_worker = auto, 2 workers
      asked for, the same probe, and client 0 of round 1 out of GPU memory once (in whichever trial trains it first).

    Returns ``{name: (out, what the run said)}``."""
    work = tmp_path_factory.mktemp("fake-gpu")
    marker = work / "oom-fired"
    runs = {
        "auto": (4, "auto", f"gpu-probe:5000:16000;oom:1:0:{marker}"),
        "quarter": (4, 0.25, ""),
        "five": (5, 0.25, ""),
    }
    spec = [
        {"out": str(work / name), "workers": w, "per": per, "fault": fault} for name, (w, per, fault) in runs.items()
    ]
    sweep = {"out": str(work / "sweep"), "fault": f"gpu-probe:5000:16000;oom:1:0:{work / 'sweep-oom-fired'}"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", FAKE_GPU_RUNS, str(synth_root), json.dumps(runs_), json.dumps(sweep_)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
        )
        for runs_, sweep_ in ((spec, None), ([], sweep))
    ]
    said = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=900)
            assert proc.returncode == 0, stderr[-3000:]
            said += [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert len(said) == len(runs) + 1, said
    return {name: (work / name, result) for name, result in zip([*runs, "sweep"], said, strict=True)} | {
        "oom-marker": marker
    }


def test_fractional_gpus_place_four_workers_per_gpu(fake_gpu_runs):
    quarter, result = fake_gpu_runs["quarter"]
    assert result["gpus"] == ["0", "0", "0", "0"]  # Ray gave every worker a quarter of GPU 0
    assert result["devices"] == ["cpu"] * 4  # torch sees no CUDA here: each worker says so and trains on the CPU
    clients = table(quarter, "clients")
    assert set(clients["gpu"]) == {"0"} and set(clients["device"]) == {"cpu"}
    fallbacks = [e for e in events(quarter) if e["kind"] == "device_fallback"]
    assert sorted(e["worker"] for e in fallbacks) == [0, 1, 2, 3]
    assert "was given GPU 0 by Ray but torch sees no CUDA device" in fallbacks[0]["message"]
    # a fifth quarter does not fit on one GPU: a clear error, not a wait forever
    five, refused = fake_gpu_runs["five"]
    assert refused["error"].startswith(
        "platform.workers = 5 x platform.gpus_per_worker = 0.25 needs 1.25 GPUs but "
        "this Ray has 1; allowed here: platform.workers <= 4"
    )
    assert not five.exists()


def test_auto_gpus_pack_what_the_probe_allows_and_an_out_of_memory_client_trains_again(fake_gpu_runs):
    # 2 clients of 5000 MiB fit on a GPU of 16000 MiB with 15% kept free, so 2 of the 4 workers asked for start,
    # half a GPU each; client 0 then runs out of GPU memory and trains again on a pool of 1 worker per GPU
    auto, result = fake_gpu_runs["auto"]
    marker = fake_gpu_runs["oom-marker"]
    assert result["gpus"] == ["0", "0"] and marker.exists()
    packed = [e for e in events(auto) if e["kind"] in ("gpu_packing", "gpu_oom")]
    assert [(e["kind"], e["workers_per_gpu"]) for e in packed] == [("gpu_packing", 2), ("gpu_oom", 1)]
    assert packed[0]["message"] == (
        "platform.gpus_per_worker = auto: a client peaks at 5000 MiB of 16000 MiB per "
        "GPU (15% kept free): 2 workers per GPU, 2 workers"
    )
    clients = table(auto, "clients")
    assert clients["client"] == [0, 1, 2, 3] and set(clients["status"]) == {"ok"}
    assert clients["workers_per_gpu"] == [1.0, 2.0, 2.0, 2.0]
    assert clients["reason"][0] == (
        f"trained at 1 workers per GPU after CUDA out of memory: CUDA out of memory "
        f"(injected by FEDVSR_FAULT=oom:1:0:{marker})"
    )
    # the same clients, the same numbers as the quarter-GPU run (a client trains the same on any worker)
    assert clients["loss"] == table(fake_gpu_runs["quarter"][0], "clients")["loss"]


def test_an_auto_sweep_probes_once_packs_every_trial_and_a_trial_out_of_memory_trains_on_fewer_workers(
    fake_gpu_runs,
):
    # one probe at the sweep's start: 2 workers of half a GPU in every trial; in the trial that meets the injected
    # CUDA out-of-memory error, the pool keeps its placement group's half-GPU bundles and restarts with 1 worker
    sweep, result = fake_gpu_runs["sweep"]
    said = (
        "platform.gpus_per_worker = auto: a client peaks at 5000 MiB of 16000 MiB per GPU (15% kept free): "
        "2 workers per GPU, 2 workers"
    )
    assert f"fedvsr sweep: {said}" in result["lines"]
    packing = json.loads((sweep / "gpu_packing.json").read_text())
    assert (packing["message"], packing["workers_per_gpu"], packing["workers"]) == (said, 2, 2)
    assert sorted(r["fl.lr"] for r in result["rows"]) == [0.001, 0.002]
    assert {r["status"] for r in result["rows"]} == {"finished"}
    per_trial = {}
    for row in result["rows"]:
        out = sweep / row["out"]
        platform = load_config(out / "config.yaml").platform
        assert (platform.gpus_per_worker, platform.workers) == (0.5, 2)
        clients = table(out, "clients")
        assert clients["client"] == [0, 1, 2, 3] and set(clients["status"]) == {"ok"}
        per_trial[row["fl.lr"]] = (clients, [e for e in events(out) if e["kind"] == "gpu_oom"])
    hit = [lr for lr, (clients, _) in per_trial.items() if clients["workers_per_gpu"][0] == 1.0]
    assert len(hit) == 1 and (sweep.parent / "sweep-oom-fired").exists()
    (clients, oom), (other, none) = per_trial[hit[0]], per_trial[({0.001, 0.002} - set(hit)).pop()]
    assert clients["workers_per_gpu"] == [1.0, 2.0, 2.0, 2.0] and other["workers_per_gpu"] == [2.0] * 4
    assert clients["reason"][0].startswith("trained at 1 workers per GPU after CUDA out of memory")
    assert [e["workers_per_gpu"] for e in oom] == [1.0] and not none
    assert "the pool restarts with 1 of its 2 workers in the same GPU reservation (1 per GPU)" in oom[0]["message"]
