"""Running a sweep with Ray Tune: one trial is one federated experiment.

A trial runs the same platform code as ``fedvsr simulate`` (its coordinator and client workers are the
trial's own Ray actors): the workers take the bundles of the trial's placement group (one bundle of
``platform.cpus_per_worker`` CPUs and ``platform.gpus_per_worker`` GPUs per worker), so trials side by
side never starve each other (``gpus_per_worker = auto`` is made a number once, at the sweep's start:
:mod:`fedvsr.sweeps.gpus`). A trial reports PSNR, SSIM and train loss after every round with
``ray.tune.report``; ASHA (``ASHAScheduler(time_attr="round")``) stops weak trials at its rungs.

The searcher and early stopping: Ray's ``OptunaSearch`` tells Optuna a trial that ASHA stopped is
COMPLETE with its last value, so TPE would learn from a round-3 PSNR as if it were final.
:class:`RoundAwareOptunaSearch` instead tells Optuna such a trial is PRUNED; its per-round values were
reported to Optuna step by step (``trial.report(psnr, round)``), which is how Optuna's own pruners
leave trials. TPE fills its group of good trials with complete trials first and only then with pruned
ones, ranked by how far they got, so a round-3 value never competes with final values.

Each trial's run folder is ``<sweep>/runs/<index>-<hash of its values>`` (rounds.parquet,
clients.parquet, checkpoint, ...). A trial restarted after an interruption continues its run from
the checkpoint, and a trial whose run folder already holds all its rounds reports them without
training again, so ``--resume`` (Tune's ``Tuner.restore``) runs only what is missing.

On a cluster of several nodes a trial runs on whichever node has its resources, and writes its run folder
there with plain file I/O; Tune's own state (``<sweep>/tune``) is written from the trial's node too. So the
sweep folder must be on a file system every node mounts at the same path (NFS, EFS, Filestore; see
docs/cluster.md). The driver writes a random id to ``<sweep>/sweep-id``; before the sweep starts, a zero-CPU
task on every node checks that it reads the same id there (and that the base config's dataset folders
exist), and every trial checks it again before it writes anything (a node the autoscaler added later), so
a node that does not see the folder is a :class:`SharedStorageError` naming the node and the folder, never
a run silently written to that node's local disk. ``node.json`` in each run folder names the node that ran it.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

from fedvsr.platform.cluster import SWEEP_ID_FILE, check_nodes_see
from fedvsr.platform.gpus import probe
from fedvsr.platform.results import write_json_atomic, write_text_atomic
from fedvsr.sweeps.gpus import PACKING_FILE, check_auto, is_auto_sweep, resolve_sweep
from fedvsr.sweeps.persist import save_spec, saved_spec
from fedvsr.sweeps.results import (
    ERROR_FILE,
    SWEEP_FILE,
    mark_status,
    write_trials_table,
)
from fedvsr.sweeps.spec import SpecError, SweepSpec
from fedvsr.sweeps.timeline import describe, forget, record_step, write_timeline
from fedvsr.sweeps.trial import SweepTrial, run_folder_name, trial_plan, trial_resources

METRIC_KEYS = {"psnr": "psnr", "ssim": "ssim", "loss": "loss"}
#: Tune's own experiment folder (its state, for --resume) inside the sweep folder
TUNE_DIR = "tune"
#: a trial whose node (or Tune actor) was lost is started again this many times at most, on any node, and continues
#: from its run folder's last round checkpoint; node.json's "starts" and trials.parquet's "restarts" record it
TRIAL_RESTARTS = 2


def _optuna_search(spec: SweepSpec):
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    class RoundAwareOptunaSearch(OptunaSearch):
        """OptunaSearch that marks trials stopped before their last round PRUNED (module docstring)."""

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            if (
                not error
                and result
                and trial_id in self._ot_trials
                and trial_id not in self._completed_trials
                and result.get("round", 0) < result.get("rounds", 0)
            ):
                self._ot_study.tell(self._ot_trials[trial_id], state=optuna.trial.TrialState.PRUNED)
                self._completed_trials.add(trial_id)
                return
            super().on_trial_complete(trial_id, result, error)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return RoundAwareOptunaSearch(
        space=spec.suggest,
        metric=METRIC_KEYS[spec.metric],
        mode=spec.mode,
        sampler=optuna.samplers.TPESampler(seed=spec.seed),
    )


def _progress_callback(spec: SweepSpec, sweep_dir: Path, echo: Callable[[str], None], table_every: float):
    """A Tune callback on the driver: a line per finished trial, a table of the running ones every
    ``table_every`` seconds, and ``status.json`` / ``trials.parquet`` kept up to date. (Tune saves it with
    the experiment, by value, and a restored sweep gets it back.)"""
    from ray import tune

    class Progress(tune.Callback):
        def __init__(self) -> None:
            self.running: dict[str, dict[str, Any]] = {}
            self.last_table = 0.0
            self.finished = 0

        def _folder(self, trial) -> Path:
            return sweep_dir / "runs" / run_folder_name(trial.trial_id, trial_plan(spec, trial.config).overrides)

        def _values(self, trial) -> str:
            return ", ".join(f"{k}={_short(v)}" for k, v in trial_plan(spec, trial.config).overrides.items())

        def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
            record_step(sweep_dir, self._folder(trial).name, result)  # as trials.parquet names it
            if not result.get("replayed"):
                count_busy(sweep_dir, trial_plan(spec, trial.config).cfg, result.get("seconds", 0.0))
            self.running[trial.trial_id] = {
                "round": result.get("round"),
                "rounds": result.get("rounds"),
                "psnr": result.get("psnr"),
                "values": self._values(trial),
            }
            now = time.monotonic()
            if now - self.last_table >= table_every and self.running:
                self.last_table = now
                echo(_running_table(self.running))

        def _done(self, trial, status: str, error: str = "") -> None:
            self.running.pop(trial.trial_id, None)
            folder = self._folder(trial)
            if folder.is_dir():
                mark_status(folder, status, error)
                write_trials_table(sweep_dir)
            self.finished += 1
            total = spec.trials or "?"
            res = trial.last_result or {}
            if status == "error":
                echo(
                    f"trial {self.finished}/{total} {trial.trial_id} failed: {error.splitlines()[0] if error else ''}"
                    f"  [{self._values(trial)}]"
                )
            else:
                what = "finished" if status == "finished" else f"stopped by ASHA at round {res.get('round')}"
                echo(
                    f"trial {self.finished}/{total} {trial.trial_id} {what}: psnr {res.get('psnr', math.nan):.2f} "
                    f"ssim {res.get('ssim', math.nan):.4f}  [{self._values(trial)}]"
                )

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            res = trial.last_result or {}
            finished = res.get("round", 0) >= res.get("rounds", math.inf)
            self._done(trial, "finished" if finished else "stopped")

        def on_trial_recover(self, iteration, trials, trial, **info) -> None:
            self.running.pop(trial.trial_id, None)
            if (self._folder(trial) / ERROR_FILE).is_file():  # fedvsr's own error: its restart fails the same, at once
                return
            echo(
                f"trial {trial.trial_id} was lost ({trial.num_failures} of {TRIAL_RESTARTS} restarts): it starts "
                f"again, from its last round checkpoint  [{self._values(trial)}]"
            )

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            folder = self._folder(trial)
            message = _error_message(folder, trial)
            if not folder.is_dir():
                folder.mkdir(parents=True)
                write_text_atomic(
                    folder / "config.yaml", yaml.safe_dump(trial_plan(spec, trial.config).tree, sort_keys=False)
                )
            self._done(trial, "error", message or "the trial failed (see Ray's logs)")

    return Progress()


def _running_table(running: dict[str, dict[str, Any]]) -> str:
    """The progress callback's table of the running trials: id, round of rounds, last PSNR, values."""
    lines = [f"  running  {'trial':<16} {'round':>7} {'psnr':>7}  values"]
    for tid, r in sorted(running.items()):
        at = f"{r['round']:>3}/{r['rounds']:<3}"
        lines.append(f"           {tid:<16} {at} {r['psnr']:7.2f}  {r['values']}")
    return "\n".join(lines)


def _error_message(folder: Path, trial: Any) -> str:
    """Why a trial failed: the first paragraph of fedvsr's error file in its run ``folder``, else the last line of
    Ray's error file, else ``""``."""
    if (folder / ERROR_FILE).is_file():
        return (folder / ERROR_FILE).read_text().split("\n\n", 1)[0]
    if getattr(trial, "error_file", None) and Path(trial.error_file).is_file():
        return Path(trial.error_file).read_text().strip().splitlines()[-1]
    return ""


#: per sweep folder (this driver's sweep): seconds x resources its trials' rounds held, what its utilisation counts
_BUSY: dict[str, dict[str, float]] = {}


def count_busy(sweep_dir: Path, cfg, seconds: float) -> None:
    """Add a round of ``seconds`` of a trial of ``cfg`` to the sweep's busy time: its workers' GPUs when it has
    them, else their CPUs (a module function, so a callback Tune restored by value counts into the same table)."""
    if cfg is None:
        return
    p = cfg.platform
    kind, per = ("GPU", p.gpus_per_worker) if p.gpus_per_worker > 0 else ("CPU", p.cpus_per_worker)
    busy = _BUSY.setdefault(str(sweep_dir), {})
    busy[kind] = busy.get(kind, 0.0) + float(seconds) * p.workers * per


def utilisation(busy: dict[str, float], wall: float, resources: dict[str, float]) -> dict[str, float]:
    """``{"CPU": u, ...}``: the trials' rounds' seconds x the resources they held, over wall x the cluster's."""
    return {k: v / (wall * resources[k]) for k, v in busy.items() if wall > 0 and resources.get(k, 0) > 0}


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def run_sweep(
    spec: SweepSpec | None,
    out: str | os.PathLike,
    concurrent: int | str | None = None,
    resume: bool = False,
    address: str | None = None,
    echo: Callable[[str], None] = lambda s: print(s, flush=True),
    table_every: float = 30.0,
    callbacks: list | None = None,
) -> list[dict[str, Any]]:
    """Run (or with ``resume`` continue) the sweep in ``out``; returns the rows of ``trials.parquet``.

    ``address``: the Ray cluster to run on (default: the spec's platform.address, usually a local Ray).
    ``concurrent``: trials at once (None: as many as the resources allow; ``"auto"``: :func:`pack`).
    ``callbacks``: more Tune callbacks on the driver (``--mlflow``: :class:`fedvsr.tracking.MlflowSweep`)."""
    began = time.time()  # the sweep's time budget counts from here, Ray's start included (fedvsr.sweeps.timeline)
    out = Path(out).resolve()
    if resume:
        if not (out / SWEEP_FILE).is_file():
            raise SpecError(f"--resume: {str(out)!r} holds no sweep.yaml of an earlier sweep")
        saved = saved_spec(out)
        if spec is not None and spec.to_dict() != saved.to_dict():
            raise SpecError(
                f"--resume: the sweep in {str(out)!r} was started with another spec; Tune cannot change "
                "a sweep's search space on restore: resume without a spec, --set or --trials"
            )
        spec = saved
    else:
        if (out / SWEEP_FILE).exists():
            raise SpecError(f"{str(out)!r} already holds a sweep; pass --resume to continue it or choose another --out")
    if concurrent is not None and concurrent != "auto" and (not isinstance(concurrent, int) or concurrent < 1):
        raise SpecError(f"--concurrent = {concurrent} is not allowed; expected an integer >= 1 or auto")

    check_auto(spec)  # before Ray starts: platform.gpus_per_worker = auto is resolved once for the sweep
    base = copy.deepcopy(trial_plan(spec, {}).cfg)  # the spec's own, built once (validated with the spec)
    if address:  # else the spec's platform.address, else $RAY_ADDRESS (inside `ray job submit`): init_ray decides
        base.platform.address = address
    import ray

    from fedvsr.platform.run import init_ray

    started = init_ray(base, log=out / "ray.log")  # joins the address or starts a local Ray
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # our own progress lines instead of Tune's tables
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    try:
        packing = None
        if is_auto_sweep(spec):  # a resumed sweep has the numbers its start decided (sweep.yaml)
            fault = os.environ.get("FEDVSR_FAULT", "")
            spec, packing = resolve_sweep(spec, base, ray.cluster_resources(), lambda: probe(base, fault))
            echo(f"fedvsr sweep: {packing.describe()}")
        if concurrent == "auto":
            spec, concurrent = pack(spec, ray.cluster_resources())
            p = trial_plan(spec, {}).cfg.platform
            echo(
                f"fedvsr sweep: --concurrent auto: {concurrent} trials at once, {p.workers} worker"
                f"{'s' * (p.workers > 1)} of {p.cpus_per_worker:g} CPU each"
                + (f" and {p.gpus_per_worker:g} GPU" if p.gpus_per_worker else "")
            )
        if not resume:
            out.mkdir(parents=True, exist_ok=True)
            save_spec(spec, out)
        if packing is not None:
            write_json_atomic(out / PACKING_FILE, packing.record())
        if not (out / SWEEP_ID_FILE).is_file():  # a new sweep, or one from before sweep-id existed
            write_text_atomic(out / SWEEP_ID_FILE, uuid.uuid4().hex + "\n")
        sweep_id = (out / SWEEP_ID_FILE).read_text().strip()
        if len([n for n in ray.nodes() if n.get("Alive")]) > 1:
            nodes = check_nodes_see(out, sweep_id, _dataset_folders(base))
            echo(f"fedvsr sweep: all {nodes} nodes of the cluster see {out}")
        return _fit(spec, out, concurrent, resume, echo, table_every, sweep_id, callbacks or [], began=began)
    finally:
        if started:
            ray.shutdown()


def replicates_in_parallel(spec: SweepSpec) -> bool:
    """Whether a trial's replicates each get their own workers: when the cluster holds all of them at once
    (else they share one set of workers' resources and run one after another within each round)."""
    import ray

    from fedvsr.platform.replicates import fits_in_parallel

    return spec.replicates > 1 and fits_in_parallel(trial_plan(spec, {}).cfg, spec.replicates, ray.cluster_resources())


def _dataset_folders(cfg) -> dict[str, str]:
    """The base config's dataset folders that every node must see (a synthetic dataset is built on each node)."""
    folders = {}
    if cfg.data.source != "synthetic" and cfg.data.root:
        folders["data.root"] = cfg.data.root
    if cfg.eval.source == "folder" and cfg.eval.root:
        folders["eval.root"] = cfg.eval.root
    return folders


def _fit(
    spec: SweepSpec,
    out: Path,
    concurrent: int | None,
    resume: bool,
    echo,
    table_every: float,
    sweep_id: str | None = None,
    callbacks: list | tuple = (),
    *,
    began: float,
):
    """Run the Tune experiment; ``began``: when :func:`run_sweep` started (the time budget counts from there)."""
    from ray import tune

    parallel = replicates_in_parallel(spec)
    trainable = tune.with_resources(
        tune.with_parameters(SweepTrial, spec=spec, sweep_dir=str(out), sweep_id=sweep_id, parallel=parallel),
        trial_resources(spec, parallel),
    )
    if resume and tune.Tuner.can_restore(str(out / TUNE_DIR)):
        tuner = tune.Tuner.restore(
            str(out / TUNE_DIR), trainable, resume_unfinished=True, resume_errored=False, restart_errored=False
        )
        echo(f"fedvsr sweep: resuming {spec.name} in {out}")
    else:
        tuner = _new_tuner(spec, out, trainable, concurrent, parallel, echo, table_every, callbacks)
    started = time.time()
    _BUSY.pop(str(out), None)
    forget(out)
    try:
        grid = tuner.fit()
    except KeyboardInterrupt:  # a second Ctrl-C: Tune gives up saving its state once more, what it had is kept
        grid = None
    wall = time.time() - started
    rows = write_trials_table(out)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("finished", "stopped", "error", "incomplete")}
    echo(
        f"fedvsr sweep: {len(rows)} trials in {wall:.0f} s: "
        + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        + f" -> {out / 'trials.parquet'}"
    )
    _report_utilisation(out, wall, echo)
    slots = concurrent if isinstance(concurrent, int) else None
    echo(describe(write_timeline(out, began, time.time(), slots)))
    if grid is not None and grid.num_errors:
        echo(f"fedvsr sweep: {grid.num_errors} trial(s) failed; their errors are in trials.parquet")
    # Tune ends fit() early only when interrupted (SIGINT, SIGUSR1): it catches the signal itself, saves its state
    # and returns the trials as they are, those not finished PENDING, RUNNING or PAUSED, and no error
    if grid is None or grid.num_terminated + grid.num_errors < spec.trials:
        raise SweepInterrupted(out, spec, rows)
    return rows


def _new_tuner(
    spec: SweepSpec,
    out: Path,
    trainable: Any,
    concurrent: int | None,
    parallel: bool,
    echo: Callable[[str], None],
    table_every: float,
    callbacks: list | tuple,
):
    """A new Tune experiment of ``spec`` in ``out`` (not a restored one): ASHA on rounds when the spec asks for
    it, a grid or Optuna's TPE, the progress callback; says what it will run."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    metric = METRIC_KEYS[spec.metric]
    scheduler = None
    if spec.scheduler == "asha":
        scheduler = ASHAScheduler(
            time_attr="round",
            max_t=spec.max_rounds,
            grace_period=spec.grace_period,
            reduction_factor=spec.reduction_factor,
        )
    if spec.search == "grid":
        param_space, search_alg, samples = {"params": tune.grid_search(spec.grid_points())}, None, 1
    else:
        param_space, search_alg, samples = {}, _optuna_search(spec), spec.trials
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=metric,
            mode=spec.mode,
            scheduler=scheduler,
            search_alg=search_alg,
            num_samples=samples,
            max_concurrent_trials=concurrent,
            trial_dirname_creator=lambda t: t.trial_id,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=TUNE_DIR,
            storage_path=str(out),
            verbose=0,
            callbacks=[_progress_callback(spec, out, echo, table_every), *callbacks],
            failure_config=tune.FailureConfig(max_failures=TRIAL_RESTARTS),
            # a trial's state is its run folder (its round checkpoints), not Tune's
            checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False),
        ),
    )
    reps = (
        f", {spec.replicates} replicates per point ({'in parallel' if parallel else 'sharing the workers'}"
        f"; ASHA and Optuna see their mean)"
        if spec.replicates > 1
        else ""
    )
    echo(
        f"fedvsr sweep: {spec.name}: {spec.trials} trials ({spec.search}"
        f"{', ASHA on rounds' if spec.scheduler == 'asha' else ''}{reps}), metric {spec.metric} ({spec.mode}); "
        f"output in {out}"
    )
    return tuner


def _report_utilisation(out: Path, wall: float, echo: Callable[[str], None]) -> dict[str, Any]:
    """Say how busy the sweep kept the cluster (:func:`utilisation`) and keep it in ``trials.parquet``'s metadata
    (``fedvsr.utilisation``: JSON ``{"wall_seconds", "resources", "busy_seconds", "utilisation"}``)."""
    import ray

    from fedvsr.platform.results import write_parquet_atomic
    from fedvsr.sweeps.results import TRIALS_FILE

    resources = {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}
    busy = _BUSY.pop(str(out), {})
    used = utilisation(busy, wall, resources)
    record = {"wall_seconds": wall, "resources": resources, "busy_seconds": busy, "utilisation": used}
    if used:
        echo(
            "fedvsr sweep: utilisation "
            + ", ".join(f"{u:.0%} of {resources[k]:g} {k}s" for k, u in used.items())
            + " (the trials' rounds x the workers' resources they held, over wall time x the cluster's)"
        )
    path = out / TRIALS_FILE
    if path.is_file():
        table = pq.read_table(path)
        meta = {**(table.schema.metadata or {}), b"fedvsr.utilisation": json.dumps(record).encode()}
        write_parquet_atomic(path, table.replace_schema_metadata(meta))
    return record


def pack(spec: SweepSpec, resources: dict[str, float]) -> tuple[SweepSpec, int]:
    """``--concurrent auto``: the spec with each trial's ``platform.workers`` sized to the trial and the number of
    trials to run at once, so the cluster's CPUs (GPUs when the workers take GPUs) stay busy.

    A trial needs no more workers than it trains clients per round; small trials run side by side: with S worker
    slots (resources over one worker's), N trials and R replicates that fit side by side, k = min(N, S // R)
    trials run at once with w = min(workers, clients per round, S // (k R)) workers each (at least 1). The
    numbers of a run do not depend on its number of workers. A spec that sweeps ``platform.workers`` keeps it."""
    base = trial_plan(spec, {}).cfg
    p = base.platform
    kind, per = ("GPU", p.gpus_per_worker) if p.gpus_per_worker > 0 else ("CPU", p.cpus_per_worker)
    slots = int(resources.get(kind, 0.0) / per + 1e-9) if per > 0 else 0
    if slots < 1:
        return spec, 1
    copies = spec.replicates if 1 < spec.replicates <= slots else 1
    if "platform.workers" in spec.swept_keys():
        return spec, max(1, slots // (p.workers * copies))
    trials = len(spec.grid_points()) if spec.search == "grid" else spec.trials
    k = max(1, min(trials, slots // copies))
    w = max(1, min(p.workers, base.fl.clients_per_round, slots // (k * copies)))
    return replace(spec, fixed={**spec.fixed, "platform.workers": w}), max(1, slots // (w * copies))


class SweepInterrupted(Exception):
    """A sweep that stopped before all its trials finished (Ctrl-C): ``--resume`` continues it. ``unfinished``
    names the trials that started and did not finish, ``not_started`` the grid points (or a count of Optuna's
    proposals) never run."""

    def __init__(self, out: Path, spec: SweepSpec, rows: list[dict[str, Any]]) -> None:
        self.out = out
        keys = spec.swept_keys()

        def values(point: dict[str, Any]) -> str:
            return ", ".join(f"{k}={_short(point[k])}" for k in keys if k in point)

        self.unfinished = [
            f"{r['trial']} (round {r.get('rounds_run', 0)} of {r.get('rounds', '?')}; {values(r)})"
            for r in rows
            if r.get("status") == "incomplete"
        ]
        done = sum(r.get("status") != "incomplete" for r in rows)
        if spec.search == "grid":
            self.not_started = [
                values(p) for p in spec.grid_points() if not any(all(r.get(k) == v for k, v in p.items()) for r in rows)
            ]
            left = len(self.not_started)
        else:
            left = max(spec.trials - len(rows), 0)
            self.not_started = [f"{left} not proposed yet"] if left else []
        self.missing = len(self.unfinished) + left
        super().__init__(
            f"{self.missing} of {spec.trials} trials not finished ({done} done)"
            + (f"; started: {'; '.join(self.unfinished)}" if self.unfinished else "")
            + (f"; not started: {'; '.join(self.not_started)}" if self.not_started else "")
        )
