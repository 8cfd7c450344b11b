"""The `fedvsr` command as a user runs it (subprocesses)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import tiny_experiment, tiny_fixed


def fedvsr(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fedvsr.cli", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "fl.lr=-1"], "fedvsr: config error: fl.lr = -1 is not allowed; expected a number > 0.0"),
        (["--set", "fl.clients_per_round=20"], "fl.clients_per_round = 20 is larger than fl.clients = 8"),
        (["--set", "fl.bogus=1"], "unknown key 'fl.bogus'"),
        (["--set", "nonsense"], "override 'nonsense' is not of the form key=value"),
        (["--resume"], "--resume needs --out DIR"),
    ],
)
def test_config_errors_stop_before_ray_starts(tmp_path, args, message):
    out = tmp_path / "run"
    proc = fedvsr("simulate", "--out", str(out), *args) if "--resume" not in args else fedvsr("simulate", *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Ray" not in proc.stderr and not out.exists()


def test_models_lists_every_family_and_preset():
    proc = fedvsr("models", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    efvsr = {r["preset"]: r for r in rows if r["name"] == "efvsr"}
    assert set(efvsr) == {"tiny", "small", "base"}
    # small: head 9*32*3*3+32, 4 blocks of 2 convs 32->32, body tail, 2 x (32 -> 128 conv), tail 32 -> 3
    conv = lambda cin, cout: cin * cout * 9 + cout  # noqa: E731
    expected = conv(9, 32) + 9 * conv(32, 32) + 2 * conv(32, 128) + conv(32, 3)
    assert efvsr["small"]["params"] == expected
    assert efvsr["small"]["num_frames"] == 3 and efvsr["small"]["center_output"] is True
    assert "flops" not in efvsr["small"]  # counted only with --flops (tens of seconds of CPU for every preset)


@pytest.mark.slow
def test_simulate_runs_a_real_experiment(tmp_path, synth_root):
    out = tmp_path / "run"
    sets = [a for s in tiny_experiment(synth_root) for a in ("--set", s)]
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = fedvsr("simulate", "--out", str(out), "--mlflow", store, *sets)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    # what the first seconds go to is said before Ray starts: building the videos of synth_root (when no earlier
    # test of this session built them), then Ray
    if lines[0].startswith("fedvsr: building the 10 built-in videos (5 frames of 64x64) in "):
        lines = lines[1:]
    assert lines[0].startswith("fedvsr: starting a local Ray with ") and lines[0].endswith(", then 2 workers ...")
    assert any(line.startswith("bicubic    psnr") for line in lines)
    assert [line.split()[1] for line in lines if line.startswith("round") and "loss" in line] == ["1", "2"]
    assert lines[-1].startswith("final      psnr") and "over bicubic" in lines[-1]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_psnr"] == pq.read_table(out / "rounds.parquet").to_pydict()["psnr"][-1]
    assert (out / "psnr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # drawn by the command from the results
    # the live curves (docs/tracking.md): TensorBoard events and the MLflow run hold what rounds.parquet holds
    from mlflow import MlflowClient

    from tests.test_tracking import assert_events_are_the_tables, assert_mlflow_run_is_the_table, table

    assert_events_are_the_tables(out, table(out / "rounds.parquet"), table(out / "clients.parquet"))
    client, run_id = MlflowClient(store), json.loads((out / "mlflow.json").read_text())["run_id"]
    assert_mlflow_run_is_the_table(client, run_id, out)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["fl.clients"] == "4"
    assert {"config.yaml", "summary.json", "rounds.parquet", "psnr.png"} <= {
        a.path for a in client.list_artifacts(run_id)
    }
    assert run.info.artifact_uri.startswith((tmp_path / "mlartifacts").as_uri())  # beside the database


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--replicates", "0"], "--replicates = 0 is not allowed; expected an integer >= 1"),
        (["--vary-data"], "--vary-data needs --replicates N with N >= 2"),
    ],
)
def test_bad_replicate_options_are_refused_before_ray_starts(argv, message, tmp_path, capsys, monkeypatch):
    import ray

    from fedvsr.cli import main

    def refuse(*args, **kwargs):
        raise AssertionError("ray.init was called")

    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as if no Ray ran (the suite's own may)
    assert main(["simulate", "--out", str(tmp_path / "x"), *argv]) == 2
    assert message in capsys.readouterr().err


def test_a_closed_pipe_ends_quietly():
    """`fedvsr best --json | head` once ended in a BrokenPipeError traceback: the reader that went away is now an
    exit code (141 = 128 + SIGPIPE, as a shell reports a process SIGPIPE ended) and nothing on stderr."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedvsr.cli", "models", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.close()  # the reader is gone before the first write
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141
    assert err == ""


def test_starting_lines_and_the_loud_oversubscription_warning(tmp_path, capsys, monkeypatch):
    from fedvsr.config import load_config
    from fedvsr.preflight import Machine
    from fedvsr.starting import say_starting

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cpus = Machine.this().cpus
    cfg = load_config(None, [f"data.root={tmp_path}", f"platform.workers={cpus + 1}", "platform.oversubscribe=true"])
    say_starting(cfg)
    out, err = capsys.readouterr()
    assert err == (
        f"fedvsr: WARNING: platform.oversubscribe = true: {cpus + 1} workers x 1 CPUs = {cpus + 1} CPUs on "
        f"a machine with {cpus}; the workers share the cores, each runs slower, and timings are not "
        f"comparable with a run that fits\n"
    )
    assert out.splitlines() == [
        f"fedvsr: building the 28 built-in videos (16 frames of 128x128) in {tmp_path}/synthetic-"
        f"{out.split('synthetic-')[1][:12]}, once: later runs reuse them ...",
        f"fedvsr: starting a local Ray with {cpus + 1} CPUs, then {cpus + 1} workers ...",
    ]


def test_an_interrupted_sweep_names_what_is_missing():
    from fedvsr.sweeps.runner import SweepInterrupted
    from fedvsr.sweeps.spec import build_spec

    spec = build_spec(
        "s", {"search": "grid", "fixed": {"fl.rounds": 3}, "params": {"fl.lr": {"grid": [0.001, 0.002, 0.003, 0.004]}}}
    )
    rows = [
        {"trial": "00000-a", "status": "finished", "rounds": 3, "rounds_run": 3, "fl.lr": 0.001},
        {"trial": "00001-b", "status": "incomplete", "rounds": 3, "rounds_run": 1, "fl.lr": 0.002},
    ]
    err = SweepInterrupted(Path("/x"), spec, rows)
    assert err.out == Path("/x") and err.missing == 3
    assert str(err) == (
        "3 of 4 trials not finished (1 done); started: 00001-b (round 1 of 3; fl.lr=0.002); not "
        "started: fl.lr=0.003; fl.lr=0.004"
    )


@pytest.mark.slow
def test_a_sweep_interrupted_by_sigint_says_so_and_resumes(tmp_path, synth_root):
    """Ctrl-C during `fedvsr sweep` (SIGINT to the driver): exit 130, the trials not finished and the command that
    continues them, no "next: fedvsr best"; `fedvsr best` ranks what finished and counts what is missing; the
    printed command finishes the sweep."""
    fixed = tiny_fixed(synth_root, 3)
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "search": "grid",
                "scheduler": "none",
                "fixed": fixed,
                "params": {"fl.lr": {"grid": [0.001, 0.002, 0.003]}},
            }
        )
    )
    out = tmp_path / "sweep"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedvsr.cli", "sweep", str(spec), "--out", str(out), "--concurrent", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while time.time() < deadline and not (
        list(out.glob("runs/*/status.json")) and len(list(out.glob("runs/*/rounds.parquet"))) >= 2
    ):
        time.sleep(0.2)  # the first trial finished, the second trained a round
    os.kill(proc.pid, signal.SIGINT)  # the driver only, as a terminal's Ctrl-C reaches it
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stdout + stderr
    assert "next: fedvsr best" not in stdout and "Traceback" not in stderr
    again = f"fedvsr sweep --resume --out {out}"
    # the second trial is stopped mid-run, unless it ran its last rounds while the driver was stopping Tune (seen
    # on a fast CI machine with 3 rounds a trial): then it is done, and only the third is left
    m = re.search(
        r"^fedvsr sweep: interrupted: (\d) of 3 trials not finished \((\d) done\)(.*)$", stderr, flags=re.MULTILINE
    )
    assert m, stderr
    done = int(m[2])
    if done == 1:
        assert m[1] == "2" and re.fullmatch(
            r"; started: 00001-\w{8} \(round [12] of 3; fl.lr=0.002\); "
            r"not started: fl.lr=0.003",
            m[3],
        ), stderr
    else:
        assert (m[1], done, m[3]) == ("1", 2, "; not started: fl.lr=0.003"), stderr
    assert stderr.splitlines()[-1] == f"fedvsr sweep: continue it with: {again}"

    best = subprocess.run(
        [sys.executable, "-m", "fedvsr.cli", "best", str(out), "--json"], capture_output=True, text=True, timeout=120
    )
    assert best.returncode == 0, best.stderr
    assert json.loads(best.stdout)["config"]["fl.lr"] in ((0.001,) if done == 1 else (0.001, 0.002))
    incomplete = f"1 incomplete (interrupted: {again} finishes them), " if done == 1 else ""
    assert best.stderr == (
        f"fedvsr best: ranking the {done} finished of 3 runs; not ranked: {incomplete}"
        f"1 not started ({again} runs them)\n"
    )

    resumed = subprocess.run(
        [sys.executable, "-m", "fedvsr.cli", *again.split()[1:]], capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert resumed.stdout.splitlines()[-1].startswith("next: fedvsr best")
    rows = pq.read_table(out / "trials.parquet").to_pylist()
    assert sorted((r["fl.lr"], r["status"], r["rounds_run"]) for r in rows) == [
        (0.001, "finished", 3),
        (0.002, "finished", 3),
        (0.003, "finished", 3),
    ]


def test_a_figure_that_cannot_be_drawn_leaves_a_finished_command_finished(tmp_path, capsys, monkeypatch):
    """psnr.png is drawn after the command's work, in a `finally`: an error there is reported in one line, and the
    command's own outcome (here: none raised) stands."""
    import argparse

    from fedvsr import cli, report

    def broken(folder):
        raise ValueError("No match for FieldRef.Name(psnr)")

    monkeypatch.setattr(report, "plot_runs", broken)
    cli._draw_plots(argparse.Namespace(runs_in=str(tmp_path)))
    assert capsys.readouterr().err == (
        "fedvsr: the runs' psnr.png were not drawn (ValueError: No match for FieldRef.Name(psnr))\n"
    )
