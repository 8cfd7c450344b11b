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
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

from fedvsr.config import ConfigError
from fedvsr.platform.results import write_text_atomic
from fedvsr.sweeps.results import (
    ERROR_FILE,
    SWEEP_FILE,
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


def sweep_trial(config: dict[str, Any], spec: SweepSpec, sweep_dir: str) -> None:
    """The Tune function of one trial (runs in a Tune actor)."""
    from ray import tune
    from ray.util.placement_group import get_current_placement_group

    from fedvsr.platform.run import run_experiment

    overrides = spec.trial_overrides(config)
    out = Path(sweep_dir) / "runs" / run_folder_name(tune.get_context().get_trial_id(), overrides)
    try:
        cfg = spec.experiment_config(overrides)
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
    except Exception as err:
        out.mkdir(parents=True, exist_ok=True)
        if not (out / "config.yaml").is_file():  # a config that never ran: keep what was asked
            write_text_atomic(out / "config.yaml", yaml.safe_dump(_tree(spec, overrides), sort_keys=False))
        write_text_atomic(out / ERROR_FILE, root_cause(err) + "\n\n" + traceback.format_exc())
        raise


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


def trial_resources(spec: SweepSpec) -> Callable[[dict[str, Any]], Any]:
    """Tune's per-trial resources: an empty bundle for the trial's driver, one bundle per client worker."""
    from ray import tune

    def resources(config: dict[str, Any]):
        try:
            p = spec.experiment_config(spec.trial_overrides(config)).platform
        except ConfigError:  # the trial records the error itself
            p = spec.experiment_config({}).platform
        worker = {"CPU": p.cpus_per_worker, **({"GPU": p.gpus_per_worker} if p.gpus_per_worker else {})}
        return tune.PlacementGroupFactory([{"CPU": 0}] + [dict(worker) for _ in range(p.workers)])

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
              table_every: float = 30.0) -> list[dict[str, Any]]:
    """Run (or with ``resume`` continue) the sweep in ``out``; returns the rows of ``trials.parquet``.

    ``address``: the Ray cluster to run on (default: the spec's platform.address, usually a local Ray)."""
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
    if address:
        base.platform.address = address
    from fedvsr.platform.run import init_ray

    started = init_ray(base)  # joins platform.address (--address) or starts a local Ray
    if not resume:
        out.mkdir(parents=True, exist_ok=True)
        save_spec(spec, out)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # our own progress lines instead of Tune's tables
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    try:
        return _fit(spec, out, concurrent, resume, echo, table_every)
    finally:
        if started:
            import ray

            ray.shutdown()


def _fit(spec: SweepSpec, out: Path, concurrent: int | None, resume: bool, echo, table_every: float):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    trainable = tune.with_resources(tune.with_parameters(sweep_trial, spec=spec, sweep_dir=str(out)),
                                    trial_resources(spec))
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
                                      callbacks=[_progress_callback(spec, out, echo, table_every)],
                                      failure_config=tune.FailureConfig(max_failures=0)),
        )
        echo(f"fedvsr sweep: {spec.name}: {spec.trials} trials ({spec.search}"
             f"{', ASHA on rounds' if spec.scheduler == 'asha' else ''}), metric {spec.metric} ({spec.mode}); "
             f"output in {out}")
    started = time.time()
    grid = tuner.fit()
    rows = write_trials_table(out)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("finished", "stopped", "error", "incomplete")}
    echo(f"fedvsr sweep: {len(rows)} trials in {time.time() - started:.0f} s: "
         + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + f" -> {out / 'trials.parquet'}")
    if grid.num_errors:
        echo(f"fedvsr sweep: {grid.num_errors} trial(s) failed; their errors are in trials.parquet")
    return rows

