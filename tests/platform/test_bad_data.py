"""Bad data never costs good data, and a run that trains nothing fails (issue 23): the broken folder run end to
end, a folder with nothing readable, a video that breaks while the run trains, rounds that train no client."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from fedvsr.cli import main
from fedvsr.config import load_config
from fedvsr.fl.sampling import client_seed, sample_clients
from fedvsr.platform.checkpoint import latest_checkpoint
from fedvsr.platform.run import RunFailed, run_experiment
from tests.data.broken import BAD, GOOD, SMALL, broken_folder


def sets(*overrides: str) -> list[str]:
    return [arg for o in overrides for arg in ("--set", o)]


def events(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]


def test_a_folder_with_nothing_readable_fails_before_ray_starts_naming_the_files(tmp_path):
    root = broken_folder(tmp_path / "data", good=False).resolve()
    out = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedvsr.cli",
            "simulate",
            *sets(*SMALL),
            "--set",
            "data.source=kinetics",
            "--set",
            f"data.root={root}",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and proc.stdout.startswith("fedvsr: reading the videos of data.source = kinetics")
    assert "round" not in proc.stdout  # nothing ran
    assert proc.stderr.startswith(
        f"fedvsr: config error: data.root '{root}': none of the 4 videos can be used "
        f"(unreadable: 3, too small: 1): {root / 'a' / 'zero.mp4'}: empty file (0 bytes); "
    )
    assert all(str(root / name) in proc.stderr for name in BAD) and len(proc.stderr.splitlines()) == 1
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("source", ["folder", "kinetics"])
def test_the_broken_folder_trains_every_readable_video(ray_local, tmp_path, source, caplog):
    root = broken_folder(tmp_path / "data").resolve()
    out = (tmp_path / "run").resolve()
    code = main(
        [
            "simulate",
            *sets(*SMALL, f"data.source={source}", f"data.root={root}", "fl.clients_per_round=4"),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert (
        f"fedvsr: 4 of 13 videos left out (unreadable: 3, too small: 1), see {out / 'data_skipped.parquet'}"
        in caplog.messages
    )
    partition = pq.read_table(out / "partition.parquet").to_pydict()
    assert len(partition["video"]) == 7 and {f"{v}.mp4" for v in partition["video"]} < set(GOOD)  # 2 held out
    clients = pq.read_table(out / "clients.parquet").to_pydict()
    assert clients["status"] == ["ok"] * 8 and clients["client"] == [0, 1, 2, 3] * 2  # every client, every round
    left = pq.read_table(out / "data_skipped.parquet").to_pylist()
    assert {Path(r["path"]).relative_to(root).as_posix(): r["kind"] for r in left} == BAD
    skipped = [e for e in events(out) if e["kind"] == "video_skipped"]
    assert [(e["path"], e["problem"], e["message"]) for e in skipped] == [
        (r["path"], r["kind"], r["reason"]) for r in left
    ]


def write_videos(root: Path, n: int = 8) -> Path:
    from tests.data.broken import write_good

    for k in range(n):
        write_good(root / "ab"[k % 2] / f"v{k}.mp4", k)
    return root.resolve()


def break_videos(out: Path, root: Path, pick) -> list[tuple[int, Path]]:
    """Overwrite with text the videos ``pick({client: its videos})`` names as ``(client, video)``; returns
    ``(client, path)`` of each."""
    partition = pq.read_table(out / "partition.parquet").to_pydict()
    owned: dict[int, list[str]] = {}
    for c, v in zip(partition["client"], partition["video"], strict=True):
        owned.setdefault(c, []).append(v)
    broken = [(c, root / f"{v}.mp4") for c, v in pick(owned)]
    for _, path in broken:
        path.write_text("replaced on disk after the scan\n" * 10)
    return broken


@pytest.mark.slow
def test_a_video_broken_after_the_scan_is_skipped_and_its_client_trains_on_the_rest(ray_local, tmp_path):
    root = write_videos(tmp_path / "data")  # 8 videos: 6 for 4 clients (2, 2, 1, 1), 2 held out
    out = tmp_path / "run"
    broken: list[tuple[int, Path]] = []

    def on_start(info: dict) -> None:  # the coordinator has scanned; no client video is loaded yet
        broken.extend(break_videos(out, root, lambda owned: [next((c, v[0]) for c, v in owned.items() if len(v) == 2)]))

    cfg = load_config(
        None, [*SMALL, "data.source=folder", f"data.root={root}", "fl.clients_per_round=4", "fl.rounds=1"]
    )
    run_experiment(cfg, out, on_start=on_start)
    [(client, path)] = broken
    clients = pq.read_table(out / "clients.parquet").to_pydict()
    assert clients["status"] == ["ok"] * 4
    assert clients["samples"][client] == 2  # its one video left x data.samples_per_video = 2
    [event] = [e for e in events(out) if e["kind"] == "video_skipped"]
    assert (event["round"], event["client"], event["path"]) == (1, client, str(path))
    assert event["message"].startswith(f"{path}: PyAV cannot decode it")


def dropout_seed() -> int:
    """The first seed whose round 1 trains a client and whose round 2 none, with fl.dropout = 0.5 (2 of 4 sampled,
    the coordinator's draws)."""

    def trained(seed: int, t: int) -> int:
        return sum(
            np.random.default_rng([client_seed(seed, t, c), 0xD0]).random() >= 0.5
            for c in sample_clients(seed, t, 4, 2)
        )

    return next(s for s in range(1000) if trained(s, 1) > 0 and trained(s, 2) == 0)


@pytest.mark.slow
def test_a_round_that_trains_no_client_stops_the_run_non_zero_keeping_the_last_good_round(
    ray_local, tmp_path, synth_root, capsys
):
    out = (tmp_path / "run").resolve()
    seed = dropout_seed()
    code = main(
        ["simulate", *sets(*SMALL, f"data.root={synth_root}", "fl.dropout=0.5", f"seed={seed}"), "--out", str(out)]
    )
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"fedvsr: run failed: round 2: 0 of 2 clients trained (did not report (fl.dropout = 0.5): 2), "
        f"fewer than fl.min_clients = 1; each client's reason is in {out / 'clients.parquet'}, the "
        f"checkpoint of round 1 is kept"
    ]
    rounds = pq.read_table(out / "rounds.parquet").to_pydict()
    assert rounds["status"] == ["ok", "failed"] and rounds["aggregated"][1] == 0
    assert latest_checkpoint(out / "checkpoint").round == 1
    assert not (out / "summary.json").exists()
    assert [e["round"] for e in events(out) if e["kind"] == "round_failed"] == [2]


@pytest.mark.slow
def test_every_client_failing_on_its_data_fails_the_run(ray_local, tmp_path):
    root = write_videos(tmp_path / "data")
    out = (tmp_path / "run").resolve()
    cfg = load_config(None, [*SMALL, "data.source=folder", f"data.root={root}", "fl.clients_per_round=4"])
    with pytest.raises(RunFailed) as err:
        run_experiment(
            cfg,
            out,
            on_start=lambda info: break_videos(
                out, root, lambda owned: [(c, v) for c, videos in owned.items() for v in videos]
            ),
        )
    assert str(err.value) == (
        f"round 1: 0 of 4 clients trained (data error: 4), fewer than fl.min_clients = 1; "
        f"each client's reason is in {out / 'clients.parquet'}, no round had completed"
    )
    assert pq.read_table(out / "rounds.parquet").to_pydict()["status"] == ["failed"]
    assert not (out / "summary.json").exists()


@pytest.mark.slow
def test_a_sweep_trial_whose_round_trains_no_client_is_recorded_as_an_error(ray_local, synth_root, tmp_path):
    from fedvsr.sweeps.runner import run_sweep
    from fedvsr.sweeps.spec import build_spec

    fixed = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in SMALL)}
    fixed |= {"fl.rounds": 1, "platform.workers": 1, "data.root": str(synth_root)}
    spec = build_spec(
        "dropout",
        {"search": "grid", "scheduler": "none", "fixed": fixed, "params": {"fl.dropout": {"choice": [0.0, 1.0]}}},
    )
    rows = {r["fl.dropout"]: r for r in run_sweep(spec, tmp_path / "sweep", concurrent=1, echo=lambda line: None)}
    assert rows[0.0]["status"] == "finished"
    assert rows[1.0]["status"] == "error" and rows[1.0]["error"].startswith(
        "RunFailed: round 1: 0 of 2 clients trained (did not report (fl.dropout = 1.0): 2), fewer than "
        "fl.min_clients = 1; "
    )
