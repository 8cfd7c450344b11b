"""Result rows of runs and sweeps, ranking for `fedvsr best`, and the winner's YAML."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from fedvsr.config import load_config
from fedvsr.report import asha_rungs
from fedvsr.sweeps.results import collect_rows, mark_status, rank, run_row, to_table, winner_yaml


def fake_run(path, psnrs, rounds=None, lr=0.002, strategy="fedavg", finished=True, status=None):
    """A run folder as `fedvsr simulate` writes it, with the given PSNR per round."""
    rounds = rounds or len(psnrs)
    cfg = load_config(None, [f"fl.rounds={rounds}", f"fl.lr={lr}", f"fl.strategy={strategy}"])
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(cfg.to_yaml())
    rows = [{"round": i + 1, "psnr": p, "ssim": 0.5 + p / 100, "train_loss": 0.1 / (i + 1), "seconds": 2.0}
            for i, p in enumerate(psnrs)]
    pq.write_table(pa.Table.from_pylist(rows), path / "rounds.parquet")
    if finished:
        (path / "summary.json").write_text(json.dumps({"initial_psnr": 27.0, "bicubic_psnr": 27.5}))
    if status:
        mark_status(path, status)
    return path


def test_run_row_numbers(tmp_path):
    row = run_row(fake_run(tmp_path / "a", [28.0, 29.5, 29.1]))
    assert row["status"] == "finished" and row["rounds"] == row["rounds_run"] == 3
    assert row["final_psnr"] == 29.1 and row["best_psnr"] == 29.5 and row["best_round"] == 2
    assert row["final_ssim"] == pytest.approx(0.5 + 0.291) and row["best_ssim"] == pytest.approx(0.795)
    assert row["final_loss"] == pytest.approx(0.1 / 3) and row["seconds"] == 6.0
    assert row["fl.lr"] == 0.002 and row["fl.strategy"] == "fedavg" and row["model.name"] == "efvsr"
    assert row["bicubic_psnr"] == 27.5
    half = run_row(fake_run(tmp_path / "b", [28.0], rounds=3, finished=False))
    assert half["status"] == "incomplete" and half["rounds_run"] == 1


def test_rank_finished_first_then_filters(tmp_path):
    fake_run(tmp_path / "runs" / "a", [28.0, 29.0], lr=0.001)
    fake_run(tmp_path / "runs" / "b", [28.0, 29.4], lr=0.002, strategy="fedprox")
    fake_run(tmp_path / "runs" / "c", [30.0], rounds=2, lr=0.004, status="stopped")
    fake_run(tmp_path / "runs" / "d", [28.0, 28.5], lr=0.003)
    (tmp_path / "runs" / "d" / "error.txt").write_text("RuntimeError: boom")
    (tmp_path / "runs" / "d" / "summary.json").unlink()
    rows = collect_rows([tmp_path])
    assert sorted(r["trial"] for r in rows) == ["a", "b", "c", "d"]
    assert {r["trial"]: r["status"] for r in rows}["d"] == "error"
    ranked, column, mode = rank(rows, "psnr")
    assert [r["trial"] for r in ranked] == ["b", "a"] and (column, mode) == ("final_psnr", "max")
    ranked, _, _ = rank(rows, "psnr", include_stopped=True)
    assert [r["trial"] for r in ranked] == ["c", "b", "a"]
    ranked, _, _ = rank(rows, "psnr", where=[("fl.strategy", "fedavg")])
    assert [r["trial"] for r in ranked] == ["a"]
    ranked, _, _ = rank(rows, "psnr", where=[("fl.lr", 0.002)])
    assert [r["trial"] for r in ranked] == ["b"]
    ranked, column, mode = rank(rows, "loss")
    assert (column, mode) == ("final_loss", "min") and [r["trial"] for r in ranked] == ["a", "b"]  # a tie: stable
    with pytest.raises(ValueError, match="no column 'lpips'"):
        rank(rows, "lpips")


def test_winner_yaml_is_a_config_simulate_accepts(tmp_path):
    row = run_row(fake_run(tmp_path / "a", [28.0, 29.5], lr=0.003))
    text = winner_yaml(row, "final_psnr", "max", 4)
    assert text.startswith("# fedvsr best: trial a (") and "final_psnr = 29.5000 (max over 4 runs, 2 rounds)" in text
    path = tmp_path / "best.yaml"
    path.write_text(text)
    cfg = load_config(path)
    assert cfg.fl.lr == 0.003 and cfg.fl.rounds == 2
    assert yaml.safe_load(text) == cfg.to_dict()


def test_table_of_mixed_columns(tmp_path):
    table = to_table([{"trial": "a", "x": 1, "y": 0.5, "z": "s"}, {"trial": "b", "x": "two", "y": 2, "z": None}])
    assert table.column("x").to_pylist() == ["1", "two"]  # a choice of numbers and strings: strings
    assert table.column("y").to_pylist() == [0.5, 2.0]
    assert table.column("status").to_pylist() == [None, None]


def test_collect_rows_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no sweep"):
        collect_rows([tmp_path])
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        collect_rows([tmp_path / "nope"])


def test_asha_rungs():
    assert asha_rungs(2, 3, 20) == [2, 6, 18]
    assert asha_rungs(1, 2, 3) == [1, 2]
    assert asha_rungs(5, 3, 5) == []
