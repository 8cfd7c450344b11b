"""The `fedvsr` command as a user runs it (subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from tests.conftest import tiny_experiment


def fedvsr(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fedvsr.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


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
    proc = fedvsr("models", "--json", "--no-flops")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    efvsr = {r["preset"]: r for r in rows if r["name"] == "efvsr"}
    assert set(efvsr) == {"tiny", "small", "base"}
    # small: head 9*32*3*3+32, 4 blocks of 2 convs 32->32, body tail, 2 x (32 -> 128 conv), tail 32 -> 3
    conv = lambda cin, cout: cin * cout * 9 + cout  # noqa: E731
    expected = conv(9, 32) + 9 * conv(32, 32) + 2 * conv(32, 128) + conv(32, 3)
    assert efvsr["small"]["params"] == expected
    assert efvsr["small"]["num_frames"] == 3 and efvsr["small"]["center_output"] is True


@pytest.mark.slow
def test_simulate_runs_a_real_experiment(tmp_path, synth_root):
    out = tmp_path / "run"
    sets = [a for s in tiny_experiment(synth_root) for a in ("--set", s)]
    proc = fedvsr("simulate", "--out", str(out), *sets)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert any(line.startswith("bicubic    psnr") for line in lines)
    assert [line.split()[1] for line in lines if line.startswith("round") and "loss" in line] == ["1", "2"]
    assert lines[-1].startswith("final      psnr") and "over bicubic" in lines[-1]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_psnr"] == pq.read_table(out / "rounds.parquet").to_pydict()["psnr"][-1]


@pytest.mark.parametrize("argv, message", [
    (["--replicates", "0"], "--replicates = 0 is not allowed; expected an integer >= 1"),
    (["--vary-data"], "--vary-data needs --replicates N with N >= 2"),
])
def test_bad_replicate_options_are_refused_before_ray_starts(argv, message, tmp_path, capsys):
    import ray

    from fedvsr.cli import main

    assert main(["simulate", "--out", str(tmp_path / "x"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not ray.is_initialized()
