"""Running a sweep with Ray Tune: one trial is one federated experiment.

A trial runs the same platform code as ``fedvsr simulate`` (its coordinator and client workers are the
trial's own Ray actors): the workers take the bundles of the trial's placement group (one bundle of
``platform.cpus_per_worker`` CPUs and ``platform.gpus_per_worker`` GPUs per worker), so trials side by
side never starve each other. A trial reports PSNR, SSIM and train loss after every round with
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

import hashlib
import json
import math
import os
import re
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

from fedvsr.config import ConfigError
from fedvsr.platform.cluster import CLUSTER_DOC, SharedStorageError
from fedvsr.platform.results import write_json_atomic, write_text_atomic
from fedvsr.sweeps.results import (
    ERROR_FILE,
    NODE_FILE,
    SWEEP_FILE,
    SWEEP_ID_FILE,
    mark_status,
    write_trials_table,
)
from fedvsr.sweeps.spec import SpecError, SweepSpec, build_spec

METRIC_KEYS = {"psnr": "psnr", "ssim": "ssim", "loss": "loss"}
#: Tune's own experiment folder (its state, for --resume) inside the sweep folder
TUNE_DIR = "tune"


def run_folder_name(trial_id: str, overrides: dict[str, Any]) -> str:
    """``<index>-<hash>``: the trial's index in the sweep and a hash of its values (stable across restarts)."""
    index = trial_id.rsplit("_", 1)[-1]
    digest = hashlib.sha1(json.dumps(overrides, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{index}-{digest}"


def _report_row(row: dict[str, Any], rounds: int) -> dict[str, Any]:
    loss = row["train_loss"]
    return {"round": int(row["round"]), "rounds": rounds, "psnr": float(row["psnr"]), "ssim": float(row["ssim"]),
            # a round where every client was dropped has no loss: worst, never NaN (ASHA compares it)
            "loss": float(loss) if math.isfinite(loss) else math.inf, "seconds": float(row["seconds"])}


def this_node() -> dict[str, str]:
    """``{"node_ip", "node_id", "hostname"}`` of the Ray node this process runs on."""
    import socket

    import ray

    return {"node_ip": ray.util.get_node_ip_address(), "node_id": ray.get_runtime_context().get_node_id(),
            "hostname": socket.gethostname()}


def _storage_hint(sweep_dir: str | os.PathLike) -> str:
    return (f"on a cluster of several nodes the sweep's --out ({str(sweep_dir)!r}) must be on a file system every "
            f"node mounts at the same path (NFS, EFS, Filestore), see {CLUSTER_DOC}")


def _sweep_folder_problem(sweep_dir: str | os.PathLike, sweep_id: str) -> str | None:
    """What is wrong with the sweep folder as this node sees it (None: it holds the driver's ``sweep-id``)."""
    marker = Path(sweep_dir) / SWEEP_ID_FILE
    try:
        found = marker.read_text().strip()
    except OSError:
        return f"{str(marker)!r} is not there"
    return None if found == sweep_id else f"{str(marker)!r} holds another sweep (its sweep-id differs)"


def check_sweep_folder(sweep_dir: str | os.PathLike, sweep_id: str) -> None:
    """Raise :class:`SharedStorageError` unless this node sees the sweep folder the driver made (its ``sweep-id``)."""
    problem = _sweep_folder_problem(sweep_dir, sweep_id)
    if problem:
        node = this_node()
        raise SharedStorageError(f"node {node['node_ip']} ({node['hostname']}, node id {node['node_id'][:12]}) does "
                                 f"not see the sweep folder: {problem}; " + _storage_hint(sweep_dir))


def _look_from_node(sweep_dir: str, sweep_id: str, folders: dict[str, str]) -> list[str]:
    """On one node: what it fails to see (an empty list when it sees everything)."""
    problem = _sweep_folder_problem(sweep_dir, sweep_id)
    problems = [problem] if problem else []
    for key, folder in folders.items():
        if not Path(folder).is_dir():
            problems.append(f"{key} = {folder!r} is not a folder there")
    return problems


def check_nodes_see(sweep_dir: str | os.PathLike, sweep_id: str, folders: dict[str, str] | None = None,
                    timeout: float = 120.0) -> int:
    """Run a zero-CPU task on every alive node of the connected Ray cluster that checks it sees the sweep folder
    (and each of ``folders``, ``{config key: path}``); raise one :class:`SharedStorageError` naming every node that
    does not. Returns the number of nodes checked."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    look = ray.remote(num_cpus=0, max_retries=0)(_look_from_node)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    pending = {look.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
        str(sweep_dir), sweep_id, folders or {}): n for n in nodes}
    ready, missing = ray.wait(list(pending), num_returns=len(pending), timeout=timeout)
    problems = []
    for ref in ready:
        node = pending[ref]
        try:
            found = ray.get(ref)
        except Exception as err:  # the node died meanwhile, or cannot start a worker
            found = [f"the check failed there: {root_cause(err)}"]
        problems += [f"node {node['NodeManagerAddress']} ({node['NodeID'][:12]}): {p}" for p in found]
    problems += [f"node {pending[ref]['NodeManagerAddress']} ({pending[ref]['NodeID'][:12]}): did not answer within "
                 f"{timeout:g} s" for ref in missing]
    if problems:
        raise SharedStorageError(f"{len({p.split(':', 1)[0] for p in problems})} of {len(nodes)} nodes of the "
                                 "cluster do not see what the sweep needs: " + "; ".join(problems) + "; "
                                 + _storage_hint(sweep_dir) + " (and so must the dataset folders)")
    return len(nodes)


def sweep_trial(config: dict[str, Any], spec: SweepSpec, sweep_dir: str, sweep_id: str | None = None,
                parallel: bool = False) -> None:
    """The Tune function of one trial (runs in a Tune actor, on any node of the cluster). With
    ``spec.replicates`` > 1 the trial runs its point's replicates stepped together and reports their mean per
    round (``parallel``: each replicate with its own workers, see :mod:`fedvsr.platform.replicates`)."""
    from ray import tune

    if sweep_id is not None:  # before anything is written: never a run folder on a node's local disk
        check_sweep_folder(sweep_dir, sweep_id)
    overrides = spec.trial_overrides(config)
    out = Path(sweep_dir) / "runs" / run_folder_name(tune.get_context().get_trial_id(), overrides)
    try:
        cfg = spec.experiment_config(overrides)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / NODE_FILE, this_node())
        if spec.replicates > 1:
            _trial_replicates(cfg, spec, out, parallel)
        else:
            _trial_run(cfg, out)
    except Exception as err:
        from fedvsr.platform.replicates import is_replicate_group

        out.mkdir(parents=True, exist_ok=True)
        if not (out / "config.yaml").is_file() and not is_replicate_group(out):
            write_text_atomic(out / "config.yaml", yaml.safe_dump(_tree(spec, overrides), sort_keys=False))
        write_text_atomic(out / ERROR_FILE, root_cause(err) + "\n\n" + traceback.format_exc())
        raise


def _trial_run(cfg, out: Path) -> None:
    """One run per trial: its rounds reported as they finish; a finished run is reported, not trained again."""
    from ray import tune
    from ray.util.placement_group import get_current_placement_group

    from fedvsr.platform.run import run_experiment

    rounds = cfg.fl.rounds
    done = pq.read_table(out / "rounds.parquet").to_pylist() if (out / "rounds.parquet").is_file() else []
    if (out / "summary.json").is_file() and len(done) >= rounds:
        tune.report(_report_row(done[-1], rounds))  # finished before an interruption: nothing to train
        return
    resume = (out / "config.yaml").is_file()
    last: list[dict[str, Any]] = []

    def on_round(row: dict[str, Any]) -> None:
        # the last round is reported after the run has written its summary and model: Tune ends a trial
        # as soon as it reports round max_t, and would cut the run's ending short
        if row["round"] < rounds:
            tune.report(_report_row(row, rounds))
        else:
            last.append(row)

    run_experiment(None if resume else cfg, out, resume=resume, on_round=on_round,
                   placement_group=get_current_placement_group())
    if last:
        tune.report(_report_row(last[-1], rounds))


def _trial_replicates(cfg, spec: SweepSpec, out: Path, parallel: bool) -> None:
    """A point's replicates in the trial folder, stepped together; Tune sees the mean of each round."""
    from ray import tune
    from ray.util.placement_group import get_current_placement_group

    from fedvsr.platform.replicates import ReplicateGroup, aggregate_rounds, is_replicate_group

    rounds = cfg.fl.rounds
    group = ReplicateGroup(cfg, out, spec.replicates, spec.vary_data, resume=is_replicate_group(out),
                           placement_group=get_current_placement_group(), parallel=parallel)
    try:
        if group.done:  # finished before an interruption: report, do not train again
            group.finish()
            tune.report(_report_mean(aggregate_rounds([list(rows.values()) for rows in group.rows])[-1], rounds))
            return
        while not group.done:
            agg, _ = group.run_round()
            if agg["round"] == rounds:
                group.finish()  # before the last report (see _trial_run)
            tune.report(_report_mean(agg, rounds))
    finally:
        group.close()


def _report_mean(agg: dict[str, Any], rounds: int) -> dict[str, Any]:
    """What a trial with replicates reports: the mean of each metric over them (what ASHA and Optuna compare),
    with its std and n."""
    loss = agg["train_loss_mean"]
    return {"round": int(agg["round"]), "rounds": rounds, "psnr": float(agg["psnr_mean"]),
            "ssim": float(agg["ssim_mean"]), "loss": float(loss) if math.isfinite(loss) else math.inf,
            "psnr_std": float(agg["psnr_std"]), "replicates": int(agg["n"]), "seconds": float(agg["seconds"])}


def root_cause(err: BaseException) -> str:
    """``"Type: message"`` of the error that started it all: Ray wraps an error raised inside an actor
    (a coordinator that cannot read its data) in its own errors, whose text ends with the original one."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException) and cause is not err:
        return root_cause(cause)
    text = str(err).strip()
    found = re.findall(r"^(\w+(?:Error|Exception|Unreachable)): (.+)$", text, flags=re.MULTILINE)
    if found and type(err).__module__.startswith("ray"):
        kind, message = found[-1]
        return f"{kind}: {message.strip()}"
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}".strip()


def _tree(spec: SweepSpec, overrides: dict[str, Any]) -> dict[str, Any]:
    from fedvsr.config import set_dotted

    tree = spec.base_tree()
    for k, v in overrides.items():
        set_dotted(tree, k, v)
    return tree


def trial_resources(spec: SweepSpec, parallel: bool = False) -> Callable[[dict[str, Any]], Any]:
    """Tune's per-trial resources: an empty bundle for the trial's driver, one bundle per client worker (per
    client worker of every replicate when the replicates run in ``parallel``; else they share one set)."""
    from ray import tune

    def resources(config: dict[str, Any]):
        try:
            p = spec.experiment_config(spec.trial_overrides(config)).platform
        except ConfigError:  # the trial records the error itself
            p = spec.experiment_config({}).platform
        worker = {"CPU": p.cpus_per_worker, **({"GPU": p.gpus_per_worker} if p.gpus_per_worker else {})}
        copies = spec.replicates if parallel else 1
        return tune.PlacementGroupFactory([{"CPU": 0}] + [dict(worker) for _ in range(p.workers * copies)])

    return resources


def _optuna_search(spec: SweepSpec):
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    class RoundAwareOptunaSearch(OptunaSearch):
        """OptunaSearch that marks trials stopped before their last round PRUNED (module docstring)."""

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            if (not error and result and trial_id in self._ot_trials and trial_id not in self._completed_trials
                    and result.get("round", 0) < result.get("rounds", 0)):
                self._ot_study.tell(self._ot_trials[trial_id], state=optuna.trial.TrialState.PRUNED)
                self._completed_trials.add(trial_id)
                return
            super().on_trial_complete(trial_id, result, error)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return RoundAwareOptunaSearch(space=spec.suggest, metric=METRIC_KEYS[spec.metric], mode=spec.mode,
                                  sampler=optuna.samplers.TPESampler(seed=spec.seed))


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
            return sweep_dir / "runs" / run_folder_name(trial.trial_id, spec.trial_overrides(trial.config))

        def _values(self, trial) -> str:
            return ", ".join(f"{k}={_short(v)}" for k, v in spec.trial_overrides(trial.config).items())

        def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
            self.running[trial.trial_id] = {"round": result.get("round"), "rounds": result.get("rounds"),
                                            "psnr": result.get("psnr"), "values": self._values(trial)}
            now = time.monotonic()
            if now - self.last_table >= table_every and self.running:
                self.last_table = now
                lines = [f"  running  {'trial':<16} {'round':>7} {'psnr':>7}  values"]
                for tid, r in sorted(self.running.items()):
                    at = f"{r['round']:>3}/{r['rounds']:<3}"
                    lines.append(f"           {tid:<16} {at} {r['psnr']:7.2f}  {r['values']}")
                echo("\n".join(lines))

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
                echo(f"trial {self.finished}/{total} {trial.trial_id} failed: {error.splitlines()[0] if error else ''}"
                     f"  [{self._values(trial)}]")
            else:
                what = "finished" if status == "finished" else f"stopped by ASHA at round {res.get('round')}"
                echo(f"trial {self.finished}/{total} {trial.trial_id} {what}: psnr {res.get('psnr', math.nan):.2f} "
                     f"ssim {res.get('ssim', math.nan):.4f}  [{self._values(trial)}]")

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            res = trial.last_result or {}
            finished = res.get("round", 0) >= res.get("rounds", math.inf)
            self._done(trial, "finished" if finished else "stopped")

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            folder = self._folder(trial)
            message = ""
            if (folder / ERROR_FILE).is_file():
                message = (folder / ERROR_FILE).read_text().split("\n\n", 1)[0]
            elif getattr(trial, "error_file", None) and Path(trial.error_file).is_file():
                message = Path(trial.error_file).read_text().strip().splitlines()[-1]
            if not folder.is_dir():
                folder.mkdir(parents=True)
                write_text_atomic(folder / "config.yaml", yaml.safe_dump(_tree(spec, spec.trial_overrides(
                    trial.config)), sort_keys=False))
            self._done(trial, "error", message or "the trial failed (see Ray's logs)")

    return Progress()


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def save_spec(spec: SweepSpec, sweep_dir: Path) -> None:
    write_text_atomic(sweep_dir / SWEEP_FILE, yaml.safe_dump({"name": spec.name, **spec.to_dict()}, sort_keys=False))


def saved_spec(sweep_dir: Path) -> SweepSpec:
    data = yaml.safe_load((sweep_dir / SWEEP_FILE).read_text())
    name = data.pop("name", sweep_dir.name)
    return build_spec(name, data)


def run_sweep(spec: SweepSpec | None, out: str | os.PathLike, concurrent: int | None = None, resume: bool = False,
              address: str | None = None, echo: Callable[[str], None] = lambda s: print(s, flush=True),
              table_every: float = 30.0, callbacks: list | None = None) -> list[dict[str, Any]]:
    """Run (or with ``resume`` continue) the sweep in ``out``; returns the rows of ``trials.parquet``.

    ``address``: the Ray cluster to run on (default: the spec's platform.address, usually a local Ray).
    ``callbacks``: more Tune callbacks on the driver (``--mlflow``: :class:`fedvsr.tracking.MlflowSweep`)."""
    out = Path(out).resolve()
    if resume:
        if not (out / SWEEP_FILE).is_file():
            raise SpecError(f"--resume: {str(out)!r} holds no sweep.yaml of an earlier sweep")
        saved = saved_spec(out)
        if spec is not None and spec.to_dict() != saved.to_dict():
            raise SpecError(f"--resume: the sweep in {str(out)!r} was started with another spec; Tune cannot change "
                            "a sweep's search space on restore: resume without a spec, --set or --trials")
        spec = saved
    else:
        if (out / SWEEP_FILE).exists():
            raise SpecError(f"{str(out)!r} already holds a sweep; pass --resume to continue it or choose another --out")
    if concurrent is not None and concurrent < 1:
        raise SpecError(f"--concurrent = {concurrent} is not allowed; expected an integer >= 1")

    base = spec.experiment_config({})
    if address:  # else the spec's platform.address, else $RAY_ADDRESS (inside `ray job submit`): init_ray decides
        base.platform.address = address
    import ray

    from fedvsr.platform.run import init_ray

    started = init_ray(base, log=out / "ray.log")  # joins the address or starts a local Ray
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # our own progress lines instead of Tune's tables
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    try:
        if not resume:
            out.mkdir(parents=True, exist_ok=True)
            save_spec(spec, out)
        if not (out / SWEEP_ID_FILE).is_file():  # a new sweep, or one from before sweep-id existed
            write_text_atomic(out / SWEEP_ID_FILE, uuid.uuid4().hex + "\n")
        sweep_id = (out / SWEEP_ID_FILE).read_text().strip()
        if len([n for n in ray.nodes() if n.get("Alive")]) > 1:
            nodes = check_nodes_see(out, sweep_id, _dataset_folders(base))
            echo(f"fedvsr sweep: all {nodes} nodes of the cluster see {out}")
        return _fit(spec, out, concurrent, resume, echo, table_every, sweep_id, callbacks or [])
    finally:
        if started:
            ray.shutdown()


def replicates_in_parallel(spec: SweepSpec) -> bool:
    """Whether a trial's replicates each get their own workers: when the cluster holds all of them at once
    (else they share one set of workers' resources and run one after another within each round)."""
    import ray

    from fedvsr.platform.replicates import fits_in_parallel

    return spec.replicates > 1 and fits_in_parallel(spec.experiment_config({}), spec.replicates,
                                                    ray.cluster_resources())


def _dataset_folders(cfg) -> dict[str, str]:
    """The base config's dataset folders that every node must see (a synthetic dataset is built on each node)."""
    folders = {}
    if cfg.data.source != "synthetic" and cfg.data.root:
        folders["data.root"] = cfg.data.root
    if cfg.eval.source == "folder" and cfg.eval.root:
        folders["eval.root"] = cfg.eval.root
    return folders


def _fit(spec: SweepSpec, out: Path, concurrent: int | None, resume: bool, echo, table_every: float,
         sweep_id: str | None = None, callbacks: list | tuple = ()):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    parallel = replicates_in_parallel(spec)
    trainable = tune.with_resources(
        tune.with_parameters(sweep_trial, spec=spec, sweep_dir=str(out), sweep_id=sweep_id, parallel=parallel),
        trial_resources(spec, parallel))
    metric = METRIC_KEYS[spec.metric]
    if resume and tune.Tuner.can_restore(str(out / TUNE_DIR)):
        tuner = tune.Tuner.restore(str(out / TUNE_DIR), trainable, resume_unfinished=True, resume_errored=False,
                                   restart_errored=False)
        echo(f"fedvsr sweep: resuming {spec.name} in {out}")
    else:
        scheduler = None
        if spec.scheduler == "asha":
            scheduler = ASHAScheduler(time_attr="round", max_t=spec.max_rounds, grace_period=spec.grace_period,
                                      reduction_factor=spec.reduction_factor)
        if spec.search == "grid":
            param_space, search_alg, samples = {"params": tune.grid_search(spec.grid_points())}, None, 1
        else:
            param_space, search_alg, samples = {}, _optuna_search(spec), spec.trials
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(metric=metric, mode=spec.mode, scheduler=scheduler, search_alg=search_alg,
                                        num_samples=samples, max_concurrent_trials=concurrent,
                                        trial_dirname_creator=lambda t: t.trial_id),
            run_config=tune.RunConfig(name=TUNE_DIR, storage_path=str(out), verbose=0,
                                      callbacks=[_progress_callback(spec, out, echo, table_every), *callbacks],
                                      failure_config=tune.FailureConfig(max_failures=0)),
        )
        reps = (f", {spec.replicates} replicates per point ({'in parallel' if parallel else 'sharing the workers'}"
                f"; ASHA and Optuna see their mean)" if spec.replicates > 1 else "")
        echo(f"fedvsr sweep: {spec.name}: {spec.trials} trials ({spec.search}"
             f"{', ASHA on rounds' if spec.scheduler == 'asha' else ''}{reps}), metric {spec.metric} ({spec.mode}); "
             f"output in {out}")
    started = time.time()
    try:
        grid = tuner.fit()
    except KeyboardInterrupt:  # a second Ctrl-C: Tune gives up saving its state once more, what it had is kept
        grid = None
    rows = write_trials_table(out)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("finished", "stopped", "error", "incomplete")}
    echo(f"fedvsr sweep: {len(rows)} trials in {time.time() - started:.0f} s: "
         + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + f" -> {out / 'trials.parquet'}")
    if grid is not None and grid.num_errors:
        echo(f"fedvsr sweep: {grid.num_errors} trial(s) failed; their errors are in trials.parquet")
    # Tune ends fit() early only when interrupted (SIGINT, SIGUSR1): it catches the signal itself, saves its state
    # and returns the trials as they are, those not finished PENDING, RUNNING or PAUSED, and no error
    if grid is None or grid.num_terminated + grid.num_errors < spec.trials:
        raise SweepInterrupted(out, spec, rows)
    return rows


class SweepInterrupted(Exception):
    """A sweep that stopped before all its trials finished (Ctrl-C): ``--resume`` continues it. ``unfinished``
    names the trials that started and did not finish, ``not_started`` the grid points (or a count of Optuna's
    proposals) never run."""

    def __init__(self, out: Path, spec: SweepSpec, rows: list[dict[str, Any]]) -> None:
        self.out = out
        keys = spec.swept_keys()

        def values(point: dict[str, Any]) -> str:
            return ", ".join(f"{k}={_short(point[k])}" for k in keys if k in point)

        self.unfinished = [f"{r['trial']} (round {r.get('rounds_run', 0)} of {r.get('rounds', '?')}; {values(r)})"
                           for r in rows if r.get("status") == "incomplete"]
        done = sum(r.get("status") != "incomplete" for r in rows)
        if spec.search == "grid":
            self.not_started = [values(p) for p in spec.grid_points()
                                if not any(all(r.get(k) == v for k, v in p.items()) for r in rows)]
            left = len(self.not_started)
        else:
            left = max(spec.trials - len(rows), 0)
            self.not_started = [f"{left} not proposed yet"] if left else []
        self.missing = len(self.unfinished) + left
        super().__init__(f"{self.missing} of {spec.trials} trials not finished ({done} done)"
                         + (f"; started: {'; '.join(self.unfinished)}" if self.unfinished else "")
                         + (f"; not started: {'; '.join(self.not_started)}" if self.not_started else ""))
