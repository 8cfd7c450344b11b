"""End-to-end sweeps on a local Ray (2 CPUs): Optuna and grid, ASHA, a failing trial, kill and resume,
and `fedvsr best` whose YAML reproduces the winning trial."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pyarrow.parquet as pq
import pytest
import yaml

from fedvsr.config import load_config
from fedvsr.platform.run import run_experiment
from fedvsr.sweeps.cli import _end_mlflow_sweep, _mlflow_sweep
from fedvsr.sweeps.results import collect_rows, rank, winner_yaml
from fedvsr.sweeps.runner import run_sweep
from fedvsr.sweeps.spec import build_spec, load_spec
from tests.conftest import tiny_fixed

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def test_seeded_optuna_sweep_runs_the_seeded_proposals_and_best_reproduces_the_winner(ray_local, synth_root, tmp_path):
    data = {
        "search": "optuna",
        "trials": 6,
        "seed": 3,
        "scheduler": "none",
        "fixed": tiny_fixed(synth_root, 2),
        "params": {
            "fl.strategy": {"choice": ["fedavg", "fedprox"]},
            "fl.mu": {"loguniform": [1e-4, 1e-1], "when": {"fl.strategy": "fedprox"}},
            "fl.lr": {"loguniform": [1e-4, 1e-2]},
        },
    }
    spec = build_spec("seeded", data)
    lines: list[str] = []
    rows = run_sweep(spec, tmp_path / "sweep", concurrent=2, echo=lines.append)
    assert len(rows) == 6 and {r["status"] for r in rows} == {"finished"}
    assert sum(line.startswith("trial ") and " finished: psnr " in line for line in lines) == 6
    assert all(r["rounds_run"] == 2 for r in rows)

    # the trials ran exactly what a TPE sampler with the same seed proposes (its first 10 draws do not
    # depend on the results), so two sweeps with the same seed propose the same configs
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=3))
    expected = []
    for _ in range(6):
        trial = study.ask()
        drawn = spec.suggest(trial)
        expected.append(spec.trial_overrides({**trial.params, **drawn}))
        study.tell(trial, 0.0)
    got = [
        {
            "fl.strategy": r["fl.strategy"],
            **({"fl.mu": r["fl.mu"]} if r["fl.strategy"] == "fedprox" else {}),
            "fl.lr": r["fl.lr"],
        }
        for r in rows
    ]
    assert sorted(got, key=lambda c: c["fl.lr"]) == sorted(expected, key=lambda c: c["fl.lr"])

    table = pq.read_table(tmp_path / "sweep" / "trials.parquet").to_pylist()
    assert len(table) == 6 and {"fl.lr", "fl.mu", "final_psnr", "best_psnr", "status", "out"} <= set(table[0])

    # `fedvsr best`: the winner's YAML runs with simulate --config and gives the trial's numbers again
    ranked, column, mode = rank(collect_rows([tmp_path / "sweep"]), "psnr")
    assert ranked[0]["final_psnr"] == max(r["final_psnr"] for r in rows)
    best = tmp_path / "best.yaml"
    best.write_text(winner_yaml(ranked[0], column, mode, len(ranked)))
    summary = run_experiment(load_config(best), tmp_path / "again")
    assert summary["final_psnr"] == ranked[0]["final_psnr"]


def test_grid_sweep_with_asha_and_a_failing_trial(ray_local, synth_root, tmp_path, monkeypatch):
    fixed = tiny_fixed(synth_root, 3)
    root = fixed.pop("data.root")
    points = [
        [0.002, "folder", str(tmp_path / "no-such-folder")],  # crashes before its first round
        [0.002, "synthetic", root],
        [0.004, "synthetic", root],
        [0.5, "synthetic", root],
    ]  # diverges: far below the others at round 1
    spec = build_spec(
        "asha",
        {
            "search": "grid",
            "scheduler": "asha",
            "asha": {"grace_period": 1, "reduction_factor": 2},
            "fixed": fixed,
            "params": {"point": {"keys": ["fl.lr", "data.source", "data.root"], "choice": points}},
        },
    )
    lines: list[str] = []
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # a local store that starts at once (docs/tracking.md)
    store = (tmp_path / "mlruns").as_uri()
    track = _mlflow_sweep(store, tmp_path / "sweep", spec)  # what `fedvsr sweep --mlflow` adds
    rows = run_sweep(spec, tmp_path / "sweep", concurrent=1, echo=lines.append, callbacks=[track])
    _end_mlflow_sweep(track, tmp_path / "sweep")
    check_mlflow_sweep(store, tmp_path / "sweep", rows)
    by_lr = {(r["fl.lr"], r["data.source"]): r for r in rows}
    assert len(rows) == 4
    failed = by_lr[(0.002, "folder")]
    assert failed["status"] == "error" and "is not a folder" in failed["error"]
    assert failed["rounds_run"] == 0
    bad = by_lr[(0.5, "synthetic")]
    assert bad["status"] == "stopped" and bad["rounds_run"] < 3  # ASHA stopped it before its last round
    assert by_lr[(0.002, "synthetic")]["status"] == "finished" and by_lr[(0.002, "synthetic")]["rounds_run"] == 3
    assert any("failed:" in line and "is not a folder" in line for line in lines)
    assert any("stopped by ASHA at round" in line for line in lines)


def check_mlflow_sweep(store: str, sweep: Path, rows: list[dict]) -> None:
    """The sweep's MLflow runs (docs/tracking.md): a parent with the sweep's files, a child per trial whose status
    is the trial's and whose metrics are its rounds.parquet."""
    from mlflow import MlflowClient

    from tests.test_tracking import assert_events_are_the_tables, assert_mlflow_run_is_the_table, table

    client, state = MlflowClient(store), json.loads((sweep / "mlflow.json").read_text())
    parent = client.get_run(state["run_id"])
    assert parent.info.status == "FINISHED"
    assert {"sweep.yaml", "trials.parquet", "best.yaml", "report"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id)
    }
    status = {"finished": "FINISHED", "stopped": "KILLED", "error": "FAILED"}
    by_folder = {r["out"]: r for r in rows}
    assert len(state["trials"]) == len(rows)
    for run_id in state["trials"].values():
        child = client.get_run(run_id)
        row = by_folder[child.data.tags["fedvsr.folder"]]
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.status == status[row["status"]] and float(child.data.params["fl.lr"]) == row["fl.lr"]
        if row["status"] != "error":
            assert_mlflow_run_is_the_table(client, run_id, row["out"], keys=("psnr", "ssim"))
            assert_events_are_the_tables(
                row["out"], table(Path(row["out"]) / "rounds.parquet"), table(Path(row["out"]) / "clients.parquet")
            )


def _cli(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "fedvsr.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        **kw,
    )


def test_a_killed_sweep_resumes_and_runs_only_the_missing_trials(synth_root, tmp_path):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(
        yaml.safe_dump(
            {
                "search": "grid",
                "scheduler": "none",
                "fixed": tiny_fixed(synth_root, 2),
                "params": {"fl.lr": {"grid": [0.001, 0.002, 0.003]}},
            }
        )
    )
    out = tmp_path / "sweep"
    proc = _cli("sweep", str(spec_file), "--out", str(out), "--concurrent", "1")
    deadline = time.time() + 300
    while time.time() < deadline and not list(out.glob("runs/*/status.json")):
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started, at once
    proc.wait(timeout=60)
    done_before = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("runs/*/summary.json")}
    assert len(done_before) >= 1

    resumed = _cli("sweep", "--resume", "--out", str(out))
    output = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, output
    assert "resuming" in output
    rows = collect_rows([out])
    assert sorted(r["fl.lr"] for r in rows) == [0.001, 0.002, 0.003]
    assert {r["status"] for r in rows} == {"finished"} and all(r["rounds_run"] == 2 for r in rows)
    # the command draws each trial's psnr.png from its results (the killed driver drew none; the runtime never does)
    assert all((Path(r["out"]) / "psnr.png").is_file() for r in rows)
    for name, stamp in done_before.items():  # finished trials were not trained again
        assert (out / "runs" / name / "summary.json").stat().st_mtime_ns == stamp
        events = out / "runs" / name / "events.jsonl"
        assert not events.exists() or "resumed" not in events.read_text()
    best = subprocess.run(
        [sys.executable, "-m", "fedvsr.cli", "best", str(out), "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert best.returncode == 0, best.stderr
    assert json.loads(best.stdout)["final_psnr"] == max(r["final_psnr"] for r in rows)


def test_cli_sweep_errors_stop_before_ray(tmp_path):
    spec_file = tmp_path / "bad.yaml"
    spec_file.write_text(yaml.safe_dump({"search": "grid", "params": {"fl.mu": {"grid": [-1]}}}))
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "fedvsr.cli", "sweep", str(spec_file), "--out", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert proc.returncode == 2
    assert "fedvsr: config error: sweep spec 'bad': fl.mu = -1 is not allowed; expected a number >= 0.0" in proc.stderr
    assert "Ray" not in proc.stderr and not out.exists()
    listed = subprocess.run(
        [sys.executable, "-m", "fedvsr.cli", "sweep", "--list"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert "fedvsr-lambda-bounded" in listed.stdout and "fedprox-mu" in listed.stdout
    assert load_spec("fedprox-mu").trials == 4
