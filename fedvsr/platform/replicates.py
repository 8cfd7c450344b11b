"""Replicates: one experiment under several training seeds, in one folder, with an aggregate per round.

Replicate r runs the experiment with ``seed = seed + r`` and the data seed fixed (``data.seed``: the same
videos, held-out clips and partition), or ``data.seed + r`` too with ``vary_data``. So replicate r of every
strategy and every sweep point sees the same data, split, client sampling and initial model, and two points
can be compared seed by seed (:mod:`fedvsr.stats`). Each replicate is an ordinary run folder, bit-identical
to ``fedvsr simulate --set seed=...`` of that seed alone::

    DIR/replicates.json    {"replicates": N, "seeds": [...], "data_seeds": [...], "vary_data": false, "config": {...}}
    DIR/rep-0/ ... rep-N-1/   run folders (config.yaml, rounds.parquet, summary.json, checkpoint/, ...)
    DIR/rounds.parquet     per round: n, then mean, std and the 95% t interval (low, high) of psnr, ssim, train_loss
    DIR/summary.json       the same for the final and best values and the gain over bicubic, and per replicate

The replicates are stepped together, round by round, so a sweep trial can report the mean of round t to
ASHA and Optuna as soon as every replicate has finished it. ``parallel``: each replicate keeps its own workers
and their rounds run at the same time (when the resources hold every replicate's workers); otherwise they
share one set of resources (each worker reserves ``1/N`` of its CPUs and GPUs: N x workers processes are
alive, one replicate trains at a time) and run one after another within each round.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import ray
from ray.util.placement_group import PlacementGroup

from fedvsr.config import ConfigError, ExperimentConfig, config_from_dict
from fedvsr.platform.data import check_data
from fedvsr.platform.gpus import PACKING_FILE, is_auto, probe, resolve
from fedvsr.platform.results import write_json_atomic, write_parquet_atomic
from fedvsr.platform.run import Experiment, start_ray
from fedvsr.stats import mean_interval

REPLICATES_FILE = "replicates.json"
#: per-round columns aggregated over the replicates
ROUND_METRICS = ("psnr", "ssim", "train_loss")
#: summary values aggregated over the replicates (``gain_db`` = final_psnr - bicubic_psnr of each replicate)
SUMMARY_METRICS = ("final_psnr", "final_ssim", "best_psnr", "bicubic_psnr", "initial_psnr", "gain_db")


def replicate_configs(cfg: ExperimentConfig, n: int, vary_data: bool = False) -> list[ExperimentConfig]:
    """The configs of ``n`` replicates of ``cfg``: training seeds ``seed + r``, data seed fixed (or + r)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"--replicates = {n!r} is not allowed; expected an integer >= 1")
    out = []
    for r in range(n):
        c = copy.deepcopy(cfg)
        c.seed = cfg.seed + r
        if vary_data:
            c.data.seed = cfg.data.seed + r
        out.append(config_from_dict(c.to_dict()))  # validated, as every run's config
    return out


def is_replicate_group(path: str | Path) -> bool:
    return (Path(path) / REPLICATES_FILE).is_file()


def replicate_dir(out: Path, r: int) -> Path:
    return out / f"rep-{r}"


def _rows(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "rounds.parquet"
    return pq.read_table(path).to_pylist() if path.is_file() else []


def _finished(run_dir: Path, rounds: int) -> bool:
    return (run_dir / "summary.json").is_file() and len(_rows(run_dir)) >= rounds


def aggregate_rounds(rows: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per round that every replicate has: ``n`` and, for psnr, ssim and train_loss, the mean, std and 95%
    t interval over the replicates (``<metric>_mean``, ``_std``, ``_low``, ``_high``; NaN where n = 1 or a
    value is not finite, e.g. the loss of a round that aggregated no client)."""
    by_round = [{int(r["round"]): r for r in reps} for reps in rows]
    common = sorted(set.intersection(*(set(b) for b in by_round))) if by_round else []
    out = []
    for t in common:
        row: dict[str, Any] = {"round": t, "n": len(by_round)}
        for m in ROUND_METRICS:
            row.update(_stats(m, [b[t].get(m) for b in by_round]))
        row["seconds"] = float(sum(b[t].get("seconds", 0.0) for b in by_round))
        out.append(row)
    return out


def _stats(name: str, values: list[Any]) -> dict[str, float]:
    xs = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if len(xs) < len(values) or not xs:
        mean = math.fsum(xs) / len(xs) if xs and len(xs) == len(values) else math.nan
        return {f"{name}_mean": mean, f"{name}_std": math.nan, f"{name}_low": math.nan, f"{name}_high": math.nan}
    iv = mean_interval(xs)
    return {f"{name}_mean": iv.mean, f"{name}_std": iv.std, f"{name}_low": iv.low, f"{name}_high": iv.high}


def write_aggregate(out: str | Path) -> dict[str, Any]:
    """(Re)write ``rounds.parquet`` and ``summary.json`` of the replicate group in ``out`` from its replicates'
    folders (the rounds all of them have; the summary only when every replicate has finished). Returns the
    summary (empty while a replicate is unfinished)."""
    out = Path(out)
    meta = json.loads((out / REPLICATES_FILE).read_text())
    n = int(meta["replicates"])
    dirs = [replicate_dir(out, r) for r in range(n)]
    rows = [_rows(d) for d in dirs]
    agg = aggregate_rounds(rows)
    if agg:
        write_parquet_atomic(out / "rounds.parquet", pa.Table.from_pylist(agg))
    if not all((d / "summary.json").is_file() for d in dirs):
        return {}
    summaries = [json.loads((d / "summary.json").read_text()) for d in dirs]
    per = []
    for r, (s, d) in enumerate(zip(summaries, dirs, strict=True)):
        per.append(
            {
                "replicate": r,
                "seed": meta["seeds"][r],
                "data_seed": meta["data_seeds"][r],
                "out": d.name,
                **{k: s.get(k) for k in SUMMARY_METRICS if k != "gain_db"},
                "gain_db": s["final_psnr"] - s["bicubic_psnr"],
                "best_round": s.get("best_round"),
            }
        )
    summary: dict[str, Any] = {
        "replicates": n,
        "seeds": meta["seeds"],
        "data_seeds": meta["data_seeds"],
        "vary_data": meta["vary_data"],
        **{k: summaries[0].get(k) for k in ("model", "preset", "params", "strategy", "rounds", "eval_channels")},
    }
    for m in SUMMARY_METRICS:
        stats = _stats(m, [p[m] for p in per])
        summary[m] = stats[f"{m}_mean"]
        summary.update({f"{m}_{k}": stats[f"{m}_{k}"] for k in ("std", "low", "high")})
    summary["per_replicate"] = per
    write_json_atomic(out / "summary.json", summary)
    return summary


class ReplicateGroup:
    """The replicates of one experiment in ``out``, stepped together round by round (module docstring).

    Ray must be running. Replicates already finished (after an interruption) are read from their folders, the
    others start or resume from their checkpoints."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        out: Path,
        n: int,
        vary_data: bool = False,
        resume: bool = False,
        placement_group: PlacementGroup | None = None,
        parallel: bool = False,
        coordinators: list[Any] | None = None,
    ) -> None:
        """``coordinators``: live coordinator actors of earlier runs, configured for these replicates instead of
        started (:class:`~fedvsr.platform.run.Experiment`); the list is emptied, those left over are killed."""
        self.out, self.parallel = out, parallel
        spare = list(coordinators or [])
        if coordinators is not None:
            coordinators.clear()
        self.configs = replicate_configs(cfg, n, vary_data)
        self.rounds = cfg.fl.rounds
        meta = {
            "replicates": n,
            "seeds": [c.seed for c in self.configs],
            "data_seeds": [c.data.seed for c in self.configs],
            "vary_data": vary_data,
            "config": cfg.to_dict(),
        }
        if resume and is_replicate_group(out):
            saved = json.loads((out / REPLICATES_FILE).read_text())
            if {k: saved.get(k) for k in meta} != json.loads(json.dumps(meta)):
                raise ConfigError(
                    f"--resume: the replicates in {str(out)!r} were started with another config or "
                    f"seeds; resume without --replicates, --set or --config"
                )
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / REPLICATES_FILE, meta)
        share = 1.0 if parallel else math.floor(1e4 / n) / 1e4  # Ray counts resources in units of 1e-4
        #: every replicate's rows so far, by round
        self.rows: list[dict[int, dict[str, Any]]] = []
        self.runs: list[Experiment | None] = []
        try:
            for r, c in enumerate(self.configs):
                d = replicate_dir(out, r)
                self.rows.append({int(x["round"]): x for x in _rows(d)})
                if _finished(d, self.rounds):
                    self.runs.append(None)
                    continue
                self.runs.append(
                    Experiment(
                        c,
                        d,
                        (d / "config.yaml").is_file(),
                        placement_group,
                        share,
                        coordinator=spare.pop() if spare else None,
                        alone=n == 1,
                    )
                )
        except BaseException:
            self.close()
            raise
        finally:
            for actor in spare:
                ray.kill(actor)
        for run, rows in zip(self.runs, self.rows, strict=True):
            if run is not None:  # rows after the checkpoint will be trained again
                for t in [t for t in rows if t >= run.next_round]:
                    del rows[t]

    @property
    def info(self) -> dict[str, Any]:
        """The first live replicate's start-up info (bicubic, initial model, workers), with the group's."""
        live = [run for run in self.runs if run is not None]
        base = dict(live[0].info) if live else {}
        base.update(
            replicates=len(self.runs),
            seeds=[c.seed for c in self.configs],
            data_seeds=[c.data.seed for c in self.configs],
            parallel=self.parallel,
            start_round=min((run.next_round for run in live), default=self.rounds + 1),
        )
        return base

    @property
    def next_round(self) -> int:
        """The first round some replicate has not finished (rounds + 1 when all are done)."""
        return min(
            (t for t in range(1, self.rounds + 1) if any(t not in rows for rows in self.rows)), default=self.rounds + 1
        )

    @property
    def done(self) -> bool:
        return self.next_round > self.rounds

    def run_round(
        self, on_progress: Callable[[dict[str, Any]], None] | None = None
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Round t (:attr:`next_round`) for every replicate that has not run it; returns the aggregate row of
        round t (:func:`aggregate_rounds`) and the replicates' own rows."""
        t = self.next_round
        todo = [r for r, run in enumerate(self.runs) if run is not None and t not in self.rows[r]]

        def one(r: int) -> None:
            run = self.runs[r]
            assert run is not None and run.next_round == t, (r, run and run.next_round, t)
            progress = (lambda item: on_progress({**item, "replicate": r})) if on_progress else None
            self.rows[r][t] = run.run_round(progress)

        if self.parallel and len(todo) > 1:
            with ThreadPoolExecutor(len(todo)) as pool:
                list(pool.map(one, todo))
        else:
            for r in todo:
                one(r)
        rows = [rows[t] for rows in self.rows]
        return aggregate_rounds([[row] for row in rows])[0], rows

    def finish(self) -> dict[str, Any]:
        """Each live replicate's summary and model, then the group's aggregate (:func:`write_aggregate`)."""
        for run in self.runs:
            if run is not None:
                run.finish()
        return write_aggregate(self.out)

    def close(self, keep: bool = False) -> list[Any]:
        """End every replicate's run; with ``keep``, returns their coordinators, alive for the next runs."""
        kept = []
        for run in self.runs:
            if run is not None:
                kept += run.close(keep)
        self.runs = [None] * len(self.runs)
        return kept


def fits_in_parallel(cfg: ExperimentConfig, n: int, resources: dict[str, float]) -> bool:
    """Whether ``resources`` (Ray's ``cluster_resources()``) hold every replicate's workers at once."""
    p = cfg.platform
    need = {"CPU": n * p.workers * p.cpus_per_worker, "GPU": n * p.workers * p.gpus_per_worker}
    return all(v <= resources.get(k, 0.0) + 1e-9 for k, v in need.items() if v > 0)


def _pack_replicates(cfg: ExperimentConfig, n: int, out: Path) -> ExperimentConfig:
    """``cfg`` with ``platform.gpus_per_worker = auto`` resolved once for ``n`` replicates alive at once
    (:func:`fedvsr.platform.gpus.resolve`); the decision is kept in ``out/gpu_packing.json``."""
    packing = resolve(cfg, ray.cluster_resources(), lambda: probe(cfg, os.environ.get("FEDVSR_FAULT", "")), n)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / PACKING_FILE, packing.record())
    return packing.config(cfg)


def run_replicates(
    cfg: ExperimentConfig | None,
    out_dir: str | Path,
    n: int = 1,
    vary_data: bool = False,
    resume: bool = False,
    parallel: bool | None = None,
    on_start: Callable[[dict[str, Any]], None] | None = None,
    on_round: Callable[[dict[str, Any], list[dict[str, Any]]], None] | None = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run ``n`` replicates of ``cfg`` into ``out_dir`` (or with ``resume`` continue the group there, under its
    saved config: ``cfg`` and ``n`` may then be None / ignored); returns the group's summary.

    ``parallel``: None = when the Ray resources hold every replicate's workers at once (:func:`fits_in_parallel`).
    ``on_round(aggregate_row, replicate_rows)`` after each round of the group."""
    out = Path(out_dir).resolve()
    if resume:
        if not is_replicate_group(out):
            raise ConfigError(f"--resume: {str(out)!r} holds no {REPLICATES_FILE} of earlier replicates")
        meta = json.loads((out / REPLICATES_FILE).read_text())
        cfg, n, vary_data = config_from_dict(meta["config"]), int(meta["replicates"]), bool(meta["vary_data"])
    elif is_replicate_group(out) or (out / "config.yaml").exists():
        raise ConfigError(
            f"output folder {str(out)!r} already holds a run; pass --resume to continue it or choose another --out"
        )
    seen: set[int] = set()
    for r, c in enumerate(replicate_configs(cfg, n, vary_data)):  # before Ray starts: unusable data stops here
        if c.data.seed not in seen:
            seen.add(c.data.seed)
            check_data(c, replicate_dir(out, r))
    started = start_ray(cfg, log=out / "ray.log")
    group = None
    try:
        if is_auto(cfg) and n > 1:  # one probe for all: each replicate's workers hold their own share of a GPU
            cfg, parallel = _pack_replicates(cfg, n, out), True
        if parallel is None:
            parallel = fits_in_parallel(cfg, n, ray.cluster_resources())
        group = ReplicateGroup(cfg, out, n, vary_data, resume, parallel=parallel)
        if on_start:
            on_start(group.info)
        while not group.done:
            agg, rows = group.run_round(on_progress)
            if on_round:
                on_round(agg, rows)
        return group.finish()
    finally:
        if group is not None:
            group.close()
        if started:
            ray.shutdown()
