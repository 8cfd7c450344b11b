"""Run folders, replicate groups and sweep folders written by hand, in the layout `fedvsr simulate` and
`fedvsr sweep` write (config.yaml, rounds.parquet, summary.json; replicates.json with rep-<r>/ runs; sweep.yaml
with runs/<trial>/), so the result queries, `fedvsr compare` and `fedvsr report` are tested without Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from fedvsr.config import load_config
from fedvsr.sweeps.results import mark_status
from fedvsr.sweeps.spec import build_spec


def fake_run(
    path: Path,
    psnrs: list[float],
    rounds: int | None = None,
    lr: float = 0.002,
    strategy: str = "fedavg",
    finished: bool = True,
    status: str | None = None,
    seed: int = 0,
    data_seed: int = 0,
    bicubic: float = 27.5,
    initial: float = 27.0,
    overrides: tuple[str, ...] = (),
) -> Path:
    """A run folder with the given PSNR per round (SSIM = 0.5 + PSNR / 100, loss 0.1 / round)."""
    rounds = rounds or len(psnrs)
    cfg = load_config(
        None,
        [
            f"fl.rounds={rounds}",
            f"fl.lr={lr}",
            f"fl.strategy={strategy}",
            f"seed={seed}",
            f"data.seed={data_seed}",
            *overrides,
        ],
    )
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(cfg.to_yaml())
    rows = [
        {"round": i + 1, "psnr": p, "ssim": 0.5 + p / 100, "train_loss": 0.1 / (i + 1), "seconds": 2.0}
        for i, p in enumerate(psnrs)
    ]
    pq.write_table(pa.Table.from_pylist(rows), path / "rounds.parquet")
    if finished:
        (path / "summary.json").write_text(
            json.dumps({"initial_psnr": initial, "bicubic_psnr": bicubic, "final_psnr": psnrs[-1]})
        )
    if status:
        mark_status(path, status)
    return path


def fake_group(
    path: Path, curves: list[list[float]], seeds: list[int] | None = None, status: str | None = None, **run_kwargs
) -> Path:
    """A replicate group: replicates.json, rep-<r>/ (replicate r under training seed seeds[r], data seed 0) and
    the aggregate rounds.parquet / summary.json at the top, as `fedvsr simulate --replicates N` writes them."""
    seeds = seeds if seeds is not None else list(range(len(curves)))
    path.mkdir(parents=True)
    (path / "replicates.json").write_text(
        json.dumps({"replicates": len(curves), "seeds": seeds, "data_seeds": [0] * len(curves), "vary_data": False})
    )
    for r, (curve, seed) in enumerate(zip(curves, seeds, strict=True)):
        fake_run(path / f"rep-{r}", curve, seed=seed, **run_kwargs)
    n = len(curves)
    agg = [{"round": i + 1, "n": n, "psnr_mean": sum(c[i] for c in curves) / n} for i in range(len(curves[0]))]
    pq.write_table(pa.Table.from_pylist(agg), path / "rounds.parquet")
    # the group's summary has the replicates' mean initial PSNR as a run's does (its rounds.parquet has psnr_mean)
    (path / "summary.json").write_text(json.dumps({"final_psnr": agg[-1]["psnr_mean"], "initial_psnr": 26.0}))
    if status:
        mark_status(path, status)
    return path


def fake_sweep(
    path: Path, trials: dict[str, dict], name: str = "toy", params: dict | None = None, fixed: dict | None = None
) -> Path:
    """A sweep folder: sweep.yaml (the resolved spec) and runs/<trial>/, each trial a run folder (``psnrs``) or,
    with ``curves``, a replicate group; the other keys of a trial go to :func:`fake_run`."""
    params = params or {"fl.lr": {"grid": [0.001, 0.002, 0.004]}}
    spec = {
        "description": "a hand-written sweep",
        "search": "grid",
        "metric": "psnr",
        "scheduler": "none",
        "fixed": fixed or {"fl.rounds": 3},
        "params": params,
    }
    build_spec(name, dict(spec))  # a spec fedvsr would accept
    path.mkdir(parents=True)
    (path / "sweep.yaml").write_text(yaml.safe_dump({"name": name, **spec}, sort_keys=False))
    for trial, kwargs in trials.items():
        kwargs = dict(kwargs)
        if "curves" in kwargs:
            fake_group(path / "runs" / trial, kwargs.pop("curves"), **kwargs)
        else:
            fake_run(path / "runs" / trial, kwargs.pop("psnrs"), **kwargs)
    return path
