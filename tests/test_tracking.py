"""Live curves (fedvsr.tracking): TensorBoard events and MLflow runs, read back with TensorBoard's own event reader
and MLflow's client, hold exactly what rounds.parquet and clients.parquet hold."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fedvsr import tracking
from fedvsr.config import load_config
from fedvsr.tracking import CLIENT_LOSS, SCALARS, EventLog, MlflowRun, NoEvents, TrackingError, open_events

DOWN = "http://127.0.0.1:9"  # the discard port: nothing listens there, a connection is refused at once


def rounds(n: int, shift: float = 0.0) -> list[dict]:
    return [
        {"round": t, "psnr": 20.0 + t / 3 + shift, "ssim": 0.5 + t / 70, "train_loss": 0.1 / t} for t in range(1, n + 1)
    ]


def clients(n: int) -> list[dict]:
    """Three client rows per round: two trained, one dropped (NaN loss: never in the histogram)."""
    return [
        {
            "round": t,
            "client": c,
            "loss": (0.01 * (c + 1) * t) if c < 2 else math.nan,
            "status": "ok" if c < 2 else "dropped",
        }
        for t in range(1, n + 1)
        for c in range(3)
    ]


def read_events(folder) -> EventAccumulator:
    ea = EventAccumulator(str(folder), size_guidance={"histograms": 0, "scalars": 0})
    ea.Reload()
    return ea


def assert_events_are_the_tables(folder, rows: list[dict], client_rows: list[dict] | None) -> None:
    """Each tag's steps and values are the tables' rows (float32, as TensorBoard stores them), each step once."""
    ea = read_events(folder)
    for column, tag in SCALARS.items():
        assert [(s.step, s.value) for s in ea.Scalars(tag)] == [
            (r["round"], float(np.float32(r[column]))) for r in rows
        ], tag
    if client_rows is None:
        return
    hist = [(h.step, h.histogram_value) for h in ea.Histograms(CLIENT_LOSS)]
    assert [step for step, _ in hist] == [r["round"] for r in rows]
    for step, h in hist:
        losses = [c["loss"] for c in client_rows if c["round"] == step and c["status"] == "ok"]
        assert (h.num, h.min, h.max) == (len(losses), min(losses), max(losses))
        assert h.sum == pytest.approx(sum(losses), rel=1e-12)


def write_tables(folder, rows, client_rows) -> None:
    pq.write_table(pa.Table.from_pylist(rows), folder / "rounds.parquet")
    pq.write_table(pa.Table.from_pylist(client_rows), folder / "clients.parquet")


def test_events_hold_each_round_and_its_client_loss_histogram(tmp_path):
    rows, cl = rounds(3), clients(3)
    events = EventLog(tmp_path, rows[:1], cl)  # round 1 as history, the others as they finish
    events.round(rows[1], [c for c in cl if c["round"] == 2])
    write_tables(tmp_path, rows, cl)
    events.round(rows[2])  # its clients read from clients.parquet
    events.close()
    assert_events_are_the_tables(tmp_path, rows, cl)


def test_a_resumed_run_rewrites_its_events_from_the_tables_without_stale_or_doubled_steps(tmp_path):
    """The first start logged rounds 1-4, then died; its checkpoint was round 2's, so the resume redoes rounds 3 and
    4 (here with other numbers, to tell them apart). A TensorBoard already open and one opened afterwards both show
    rounds 1-2 of the tables and the new 3-4, each once."""
    first = EventLog(tmp_path, rounds(4, shift=100.0), clients(4))
    first.close()
    live = read_events(tmp_path)
    assert [s.value for s in live.Scalars("eval/psnr")][-1] == float(np.float32(rounds(4, 100.0)[-1]["psnr"]))

    rows, cl = rounds(4), clients(4)
    write_tables(tmp_path, rows[:2], [c for c in cl if c["round"] <= 2])  # the tables as the resume restored them
    events = open_events(tmp_path, start_round=3)
    for row in rows[2:]:
        write_tables(tmp_path, rows[: row["round"]], [c for c in cl if c["round"] <= row["round"]])
        events.round(row)
    events.close()
    assert len(list(tmp_path.glob(tracking.EVENTS_GLOB))) == 2
    assert_events_are_the_tables(tmp_path, rows, cl)
    live.Reload()
    assert [(s.step, s.value) for s in live.Scalars("eval/psnr")] == [
        (r["round"], float(np.float32(r["psnr"]))) for r in rows
    ]


def test_FEDVSR_TENSORBOARD_turns_events_off_or_requires_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDVSR_TENSORBOARD", "0")
    assert type(open_events(tmp_path)) is NoEvents
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    monkeypatch.delenv("FEDVSR_TENSORBOARD")
    assert type(open_events(tmp_path)) is NoEvents  # by default: events when the package is there
    monkeypatch.setenv("FEDVSR_TENSORBOARD", "1")
    with pytest.raises(TrackingError) as err:
        open_events(tmp_path)
    assert str(err.value) == (
        "FEDVSR_TENSORBOARD=1 needs the tensorboard package, which is not installed; install it "
        'with pip install -e ".[track]"'
    )


def test_a_failed_event_write_is_a_recorded_warning_and_the_run_goes_on(tmp_path, capsys):
    events = EventLog(tmp_path)
    events.round({"round": 1, "psnr": "not a number"}, [])
    message = "TensorBoard events of round 1 not written: ValueError: could not convert string to float: 'not a number'"
    assert capsys.readouterr().err == f"fedvsr: tracking warning: {message}\n"
    assert (tmp_path / "tracking.log").read_text().endswith(f" {message}\n")
    events.round(rounds(1)[0], [])
    events.close()
    assert_events_are_the_tables(tmp_path, rounds(1), None)


# ------------------------------------------------------------------------------------------------ MLflow


@pytest.fixture
def store(tmp_path_factory, monkeypatch):
    """A local MLflow file store: MLflow 3 keeps it in maintenance mode behind MLFLOW_ALLOW_FILE_STORE, and it starts
    in a blink where a new SQLite store (what docs/tracking.md advises) spends seconds creating its tables; the CLI
    tests below use SQLite."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return (tmp_path_factory.mktemp("mlflow") / "mlruns").as_uri()


def run_folder(tmp_path, n: int):
    cfg = load_config(None, ["fl.rounds=3"])
    (tmp_path / "config.yaml").write_text(cfg.to_yaml())
    write_tables(tmp_path, rounds(n), clients(n))
    (tmp_path / "summary.json").write_text('{"final_psnr": 21.0}\n')
    return cfg


def metric(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_mlflow_run_logs_the_config_each_round_once_and_the_artefacts_across_a_resume(tmp_path, store):
    from mlflow import MlflowClient

    cfg = run_folder(tmp_path, 1)
    run = MlflowRun(store, tmp_path)
    run.start()
    run.round(rounds(1)[0])  # already logged by start (rounds.parquet held it): not twice
    run_id = json.loads((tmp_path / "mlflow.json").read_text())["run_id"]
    client = MlflowClient(store)
    params = client.get_run(run_id).data.params
    assert params["fl.rounds"] == "3" and params["model.name"] == cfg.model.name
    assert params == {
        k: (json.dumps(v) if isinstance(v, list | dict) else str(v))
        for k, v in tracking.flatten(yaml.safe_load(cfg.to_yaml())).items()
    }
    run.end("KILLED")  # interrupted after round 1

    run_folder(tmp_path, 3)  # the resume ran rounds 2 and 3
    again = MlflowRun(store, tmp_path)
    again.start()  # the same MLflow run, round 2 from the table
    again.round(rounds(3)[2])
    again.end()
    assert json.loads((tmp_path / "mlflow.json").read_text())["run_id"] == run_id
    assert metric(client, run_id, "psnr") == [(r["round"], r["psnr"]) for r in rounds(3)]
    assert metric(client, run_id, "train_loss") == [(r["round"], r["train_loss"]) for r in rounds(3)]
    got = client.get_run(run_id)
    assert got.info.status == "FINISHED" and got.info.run_name == tmp_path.name
    assert sorted(a.path for a in client.list_artifacts(run_id)) == [
        "clients.parquet",
        "config.yaml",
        "rounds.parquet",
        "summary.json",
    ]


def test_an_unusable_mlflow_store_is_refused_before_the_run(tmp_path, capsys, monkeypatch):
    import ray

    from fedvsr.cli import main

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(
        TrackingError,
        match=r"^--mlflow http://127.0.0.1:9: this MLflow tracking store cannot be "
        r"used: MlflowException: .*; give a running server \(http://host:5000\) "
        r"or a local store \(sqlite:///path/mlflow.db\)$",
    ):
        tracking.check_mlflow(DOWN)

    def refuse(*args, **kwargs):
        raise AssertionError("ray.init was called")

    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    assert main(["simulate", "--out", str(tmp_path / "x"), "--replicates", "2", "--mlflow", DOWN]) == 2
    assert capsys.readouterr().err.endswith(
        "fedvsr: config error: --mlflow does not log a group of --replicates "
        "yet; run `fedvsr sweep` with replicates, or each seed as its own "
        "`fedvsr simulate --mlflow` run\n"
    )
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed
    assert main(["simulate", "--out", str(tmp_path / "x"), "--mlflow", "sqlite:///x.db"]) == 2
    assert capsys.readouterr().err.endswith(
        "fedvsr: config error: --mlflow needs the mlflow (mlflow-skinny) "
        "package, which is not installed; install it with pip install -e "
        '".[track]"\n'
    )


def test_an_mlflow_server_lost_mid_run_is_a_recorded_warning(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    run_folder(tmp_path, 2)
    run = MlflowRun(DOWN, tmp_path)  # as if the server went away after the check
    run.start()
    run.round(rounds(2)[1])
    run.end()
    log = (tmp_path / "tracking.log").read_text().splitlines()
    assert len(log) == 3 and all(f"MLflow ({DOWN}): starting the run failed: MlflowException: " in line for line in log)
    assert capsys.readouterr().err.count("fedvsr: tracking warning: MLflow") == 3


# ------------------------------------------------------------------------------------ the real commands
# (no run of their own: tests/test_cli.py::test_simulate_runs_a_real_experiment runs `fedvsr simulate --mlflow` into
# a SQLite store, tests/sweeps/test_sweep_ray.py::test_grid_sweep_with_asha_and_a_failing_trial logs its sweep with
# the MLflow callback, and the resume-crash chain of tests/platform/test_resume_crash.py checks its events; they
# check what they logged with the helpers below)


def table(path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def assert_mlflow_run_is_the_table(client, run_id: str, folder, keys=("psnr", "ssim", "train_loss")) -> None:
    rows = table(Path(folder) / "rounds.parquet")
    for key in keys:
        assert metric(client, run_id, key) == [(r["round"], r[key]) for r in rows], key


def test_a_runs_processes_do_not_import_tune_and_a_sweep_gets_its_callback():
    """Every coordinator and client worker imports fedvsr.tracking (TensorBoard events); Tune, about a second of
    import, is loaded only when a sweep asks for MlflowSweep."""
    code = (
        "import sys, fedvsr.platform.worker, fedvsr.platform.coordinator, fedvsr.tracking as t; "
        "assert 'ray.tune' not in sys.modules, 'ray.tune imported'; "
        "import ray.tune, pickle; "
        "assert issubclass(t.MlflowSweep, ray.tune.Callback) and t.MlflowSweep.__qualname__ == 'MlflowSweep'; "
        "c = t.MlflowSweep('sqlite:///x.db', '.', 'n', dict, str); "
        "assert type(pickle.loads(pickle.dumps(c))) is t.MlflowSweep; print('ok')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
