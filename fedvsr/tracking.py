"""Live curves where researchers look: TensorBoard event files and MLflow runs, drawn from the Parquet tables.

``rounds.parquet`` and ``clients.parquet`` stay the source of truth; this module only copies their rows out as
they are written (both tools are optional: ``pip install -e ".[track]"``, see docs/tracking.md).

- :func:`open_events`: a run's TensorBoard events, in its folder beside its Parquet files (``eval/psnr``,
  ``eval/ssim``, ``train/loss`` per round, ``train/client_loss`` the histogram of the round's client losses),
  flushed after every round. On by default when ``tensorboard`` is installed; ``FEDVSR_TENSORBOARD=0`` turns it
  off, ``=1`` makes a missing package an error. A resumed run rewrites its events from the tables in a new
  event file that starts with a purge of every step (TensorBoard drops the earlier files' points there), so no
  step is doubled and no round dropped by the resume stays as a stale point.
- :class:`MlflowRun`: ``fedvsr simulate --mlflow URI``: one MLflow run per experiment (params = the flattened
  config, metrics per round, the run's YAML, summary, tables and plots as artefacts); its id is kept in
  ``mlflow.json`` in the run folder, so ``--resume`` continues the same MLflow run without logging a step twice.
- :class:`MlflowSweep`: ``fedvsr sweep --mlflow URI``: a Tune callback on the sweep's driver: one parent run for
  the sweep, a child run per trial (its values as params, its per-round reports as metrics, its folder's YAML and
  summary as artefacts), the sweep's best YAML and report plots on the parent at the end.

An MLflow store that cannot be used is a :class:`TrackingError` before the experiment starts
(:func:`check_mlflow`); a failure later is a warning on stderr and in ``tracking.log`` of the folder, and the
experiment goes on.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fedvsr.config import ConfigError

#: the optional-dependency extra that installs tensorboard and mlflow-skinny
EXTRA = "track"
INSTALL = f'pip install -e ".[{EXTRA}]"'
EVENTS_GLOB = "events.out.tfevents.*"
#: column of rounds.parquet -> TensorBoard tag / MLflow metric
SCALARS = {"psnr": "eval/psnr", "ssim": "eval/ssim", "train_loss": "train/loss"}
CLIENT_LOSS = "train/client_loss"
MLFLOW_FILE = "mlflow.json"
LOG_FILE = "tracking.log"
#: MLflow's per-call limits (log_batch)
_PARAMS_PER_BATCH, _METRICS_PER_BATCH, _PARAM_CHARS = 100, 1000, 6000


class TrackingError(ConfigError):
    """A tracking tool asked for and not usable (not installed, an MLflow store it cannot reach)."""


def warn(folder: str | os.PathLike | None, message: str) -> None:
    """A survivable tracking failure: one line on stderr and in ``folder/tracking.log``."""
    line = f"fedvsr: tracking warning: {message}"
    print(line, file=sys.stderr, flush=True)
    if folder is not None:
        try:
            with open(Path(folder) / LOG_FILE, "a") as f:
                f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
        except OSError:
            pass


def _missing(package: str, flag: str) -> TrackingError:
    return TrackingError(f"{flag} needs the {package} package, which is not installed; install it with {INSTALL}")


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"fl": {"rounds": 2}}`` -> ``{"fl.rounds": 2}`` (lists and scalars are leaves)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _read_rows(path: Path, after: int = 0, before: int | None = None) -> list[dict[str, Any]]:
    """The rows of a table with ``after < round < before`` (none when the file is not there)."""
    import pyarrow.parquet as pq

    if not path.is_file():
        return []
    return [
        r for r in pq.read_table(path).to_pylist() if r["round"] > after and (before is None or r["round"] < before)
    ]


# ------------------------------------------------------------------------------------------ TensorBoard


def tensorboard_wanted() -> bool:
    """Whether runs write TensorBoard events: ``$FEDVSR_TENSORBOARD`` 0 (no), 1 (yes: an error without the
    package), unset (when the package is installed)."""
    wanted = os.environ.get("FEDVSR_TENSORBOARD", "").strip().lower()
    if wanted in ("0", "false", "no", "off"):
        return False
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        if wanted in ("1", "true", "yes", "on"):
            raise _missing("tensorboard", "FEDVSR_TENSORBOARD=1") from None
        return False
    return True


class NoEvents:
    """What :func:`open_events` returns when events are not written."""

    def round(self, row: dict[str, Any], clients: list[dict[str, Any]] | None = None) -> None:
        pass

    def close(self) -> None:
        pass


class EventLog(NoEvents):
    """The TensorBoard events of one run, in its folder. ``history`` (rows of rounds.parquet already done, with
    their ``clients`` rows) is written first. When the folder holds event files of an earlier start, the new file
    begins with a purge of every step (TensorBoard's ``SessionLog.START`` at step 1, what a restarted TensorFlow
    job writes): TensorBoard reads the files in order, drops every point of the earlier ones at the purge and
    shows the rows rewritten from the tables, so a resumed run neither doubles a step nor keeps a round its
    resume dropped, whether TensorBoard was already showing it or starts afterwards."""

    def __init__(
        self,
        out: str | os.PathLike,
        history: Iterable[dict[str, Any]] = (),
        clients: Iterable[dict[str, Any]] = (),
        read_clients: bool = True,
    ) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.out, self.read_clients = Path(out), read_clients
        old = sorted(self.out.glob(EVENTS_GLOB))
        self.writer = SummaryWriter(log_dir=str(self.out), purge_step=1 if old else None, flush_secs=3600)
        by_round: dict[int, list[dict[str, Any]]] = {}
        for c in clients:
            by_round.setdefault(int(c["round"]), []).append(c)
        for row in history:
            self._write(row, by_round.get(int(row["round"]), []))
        self.writer.flush()

    def _write(self, row: dict[str, Any], clients: list[dict[str, Any]]) -> None:
        import numpy as np

        t = int(row["round"])
        for column, tag in SCALARS.items():
            if column in row and row[column] is not None:
                self.writer.add_scalar(tag, float(row[column]), t)
        losses = [
            c["loss"]
            for c in clients
            if c.get("status", "ok") == "ok" and c.get("loss") is not None and math.isfinite(c["loss"])
        ]
        if losses:
            self.writer.add_histogram(CLIENT_LOSS, np.asarray(losses, dtype=np.float64), t)

    def round(self, row: dict[str, Any], clients: list[dict[str, Any]] | None = None) -> None:
        """Add one round (its client rows: ``clients``, else read from the folder's clients.parquet) and flush."""
        try:
            if clients is None and self.read_clients:
                t = int(row["round"])
                clients = _read_rows(self.out / "clients.parquet", t - 1, t + 1)
            self._write(row, clients or [])
            self.writer.flush()
        except Exception as err:  # a full disk: the run goes on, its Parquet tables hold the round
            warn(self.out, f"TensorBoard events of round {row.get('round')} not written: {type(err).__name__}: {err}")

    def close(self) -> None:
        try:
            self.writer.close()
        except Exception as err:
            warn(self.out, f"TensorBoard events not closed: {type(err).__name__}: {err}")


def open_events(out: str | os.PathLike, start_round: int = 1) -> NoEvents:
    """The TensorBoard events of the run in ``out`` that goes on at ``start_round`` (its rounds before it are
    rewritten from its Parquet tables); a :class:`NoEvents` when events are off (:func:`tensorboard_wanted`)."""
    if not tensorboard_wanted():
        return NoEvents()
    out = Path(out)
    try:
        return EventLog(
            out, _read_rows(out / "rounds.parquet", 0, start_round), _read_rows(out / "clients.parquet", 0, start_round)
        )
    except Exception as err:
        warn(out, f"TensorBoard events not written: {type(err).__name__}: {err}")
        return NoEvents()


# ------------------------------------------------------------------------------------------------ MLflow


def _mlflow(flag: str = "--mlflow"):
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")  # a server that is down: seconds, not minutes
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    try:
        import mlflow
    except ImportError:
        raise _missing("mlflow (mlflow-skinny)", flag) from None
    return mlflow


def _client(uri: str):
    return _mlflow().MlflowClient(tracking_uri=uri)


def check_mlflow(uri: str) -> None:
    """Refuse, before the experiment, an MLflow tracking store that cannot be used (:class:`TrackingError`)."""
    if not uri or not uri.strip():
        raise TrackingError(
            "--mlflow needs a tracking URI: http(s)://host:port of a server, or "
            "sqlite:///path/mlflow.db for a local store"
        )
    try:
        _client(uri).search_experiments(max_results=1)
    except TrackingError:
        raise
    except Exception as err:
        text = " ".join(str(err).split())
        raise TrackingError(
            f"--mlflow {uri}: this MLflow tracking store cannot be used: {type(err).__name__}: "
            f"{text[:400]}; give a running server (http://host:5000) or a local store "
            f"(sqlite:///path/mlflow.db)"
        ) from None


def _artifact_location(uri: str) -> str | None:
    """A local SQLite store keeps its experiment's artefacts beside the database (MLflow's default would be
    ``./mlruns`` under whatever folder the command ran in)."""
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        return (db.parent / "mlartifacts").resolve().as_uri()
    return None


def _experiment_id(client, uri: str, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    return client.create_experiment(name, artifact_location=_artifact_location(uri))


def _log_params(client, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    items = [
        Param(k[:250], json.dumps(v) if isinstance(v, (list, dict)) else str(v)[:_PARAM_CHARS])
        for k, v in params.items()
    ]
    for i in range(0, len(items), _PARAMS_PER_BATCH):
        client.log_batch(run_id, params=items[i : i + _PARAMS_PER_BATCH])


def _log_metrics(client, run_id: str, rows: list[dict[str, Any]], columns: dict[str, str]) -> None:
    """One metric per column of ``columns`` (row key -> metric name) per row, at step ``row["round"]``."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [
        Metric(name, float(row[key]), now, int(row["round"]))
        for row in rows
        for key, name in columns.items()
        if row.get(key) is not None and math.isfinite(float(row[key]))
    ]
    for i in range(0, len(items), _METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=items[i : i + _METRICS_PER_BATCH])


def _last_step(client, run_id: str, metric: str) -> int:
    return max((m.step for m in client.get_metric_history(run_id, metric)), default=0)


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


RUN_METRICS = {"psnr": "psnr", "ssim": "ssim", "train_loss": "train_loss"}
RUN_ARTIFACTS = ("config.yaml", "summary.json", "rounds.parquet", "clients.parquet", "environment.json")


class MlflowRun:
    """One experiment's MLflow run (``fedvsr simulate --mlflow URI``), its id kept in ``out/mlflow.json``.

    :meth:`start` once the run folder holds its ``config.yaml`` (it logs the params, and the rounds already in
    rounds.parquet that the MLflow run lacks, so a resume neither doubles nor loses a step); :meth:`round` per
    round; :meth:`end` with the artefacts. Failures after :meth:`start` are warnings (:func:`warn`)."""

    def __init__(self, uri: str, out: str | os.PathLike, experiment: str | None = None) -> None:
        self.uri, self.out = uri, Path(out)
        self.experiment = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or "fedvsr"
        self.client, self.run_id, self.logged = None, None, 0

    def _safe(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as err:
            warn(self.out, f"MLflow ({self.uri}): {what} failed: {type(err).__name__}: {' '.join(str(err).split())}")
            return None

    def start(self, info: dict[str, Any] | None = None) -> None:
        self._safe("starting the run", self._start)

    def _start(self) -> None:
        import yaml

        self.client = _client(self.uri)
        state = json.loads((self.out / MLFLOW_FILE).read_text()) if (self.out / MLFLOW_FILE).is_file() else {}
        if state.get("tracking_uri") == self.uri:  # a resumed run goes on in its MLflow run
            self.run_id = state["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            self.logged = _last_step(self.client, self.run_id, "psnr")
        else:
            exp = _experiment_id(self.client, self.uri, self.experiment)
            run = self.client.create_run(exp, run_name=self.out.name, tags={"fedvsr.folder": str(self.out.resolve())})
            self.run_id = run.info.run_id
            _write_json(self.out / MLFLOW_FILE, {"tracking_uri": self.uri, "experiment_id": exp, "run_id": self.run_id})
            _log_params(self.client, self.run_id, flatten(yaml.safe_load((self.out / "config.yaml").read_text())))
        self._log(_read_rows(self.out / "rounds.parquet", self.logged))

    def _log(self, rows: list[dict[str, Any]]) -> None:
        rows = [r for r in rows if int(r["round"]) > self.logged]
        if rows:
            _log_metrics(self.client, self.run_id, rows, RUN_METRICS)
            self.logged = max(int(r["round"]) for r in rows)

    def round(self, row: dict[str, Any]) -> None:
        if self.run_id is None:  # the start failed: try again, it logs what rounds.parquet holds
            self.start()
        elif int(row["round"]) > self.logged:
            # a round that failed earlier is picked up from rounds.parquet with this one
            self._safe(
                f"logging round {row['round']}",
                lambda: self._log(_read_rows(self.out / "rounds.parquet", self.logged) or [row]),
            )

    def end(self, status: str = "FINISHED", artifacts: Iterable[str | os.PathLike] = ()) -> None:
        """Log ``artifacts`` (default: the run's YAML, summary, tables, plots) and close the run with ``status``."""
        if self.run_id is None:
            self.start()
        if self.run_id is None:
            return
        paths = [Path(p) for p in artifacts] or [self.out / n for n in RUN_ARTIFACTS] + sorted(self.out.glob("*.png"))
        for path in paths:
            if path.is_file():
                self._safe(f"logging {path.name}", lambda p=path: self.client.log_artifact(self.run_id, str(p)))
        self._safe("ending the run", lambda: self.client.set_terminated(self.run_id, status=status))


def mlflow_run(uri: str | None, out: str | os.PathLike) -> MlflowRun | None:
    """``--mlflow URI`` of ``fedvsr simulate``: the run's :class:`MlflowRun`, after checking the store (an error
    before the experiment starts); None without the flag."""
    if uri is None:
        return None
    check_mlflow(uri)
    return MlflowRun(uri, out)


SWEEP_METRICS = {"psnr": "psnr", "ssim": "ssim", "loss": "train_loss", "psnr_std": "psnr_std"}
TRIAL_ARTIFACTS = ("config.yaml", "summary.json", "rounds.parquet", "error.txt")
_TRIAL_STATUS = {"finished": "FINISHED", "stopped": "KILLED", "error": "FAILED"}


class _MlflowSweep:
    """``fedvsr sweep --mlflow URI``: a Tune callback on the sweep's driver (the only process that talks to MLflow,
    so a store on the driver's machine is enough, even on a cluster). A parent run for the sweep; a child run per
    trial with ``params(trial)`` as params and its reports as metrics at step ``round``, its ``folder(trial)``'s
    YAML and summary as artefacts when it ends. Run ids are kept in ``sweep_dir/mlflow.json``, so a resumed sweep
    goes on in the same runs and never logs a step twice. :meth:`end` closes the parent with the sweep's files."""

    def __init__(
        self,
        uri: str,
        sweep_dir: str | os.PathLike,
        name: str,
        params: Callable[[Any], dict[str, Any]],
        folder: Callable[[Any], Path],
    ) -> None:
        self.uri, self.sweep_dir, self.name = uri, Path(sweep_dir), name
        self.params, self.folder = params, folder
        self.experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "fedvsr"
        self._client, self.state, self.logged = None, {}, {}

    def __getstate__(self) -> dict[str, Any]:  # Tune saves its callbacks with the experiment: no client in it
        return {**self.__dict__, "_client": None}

    @property
    def client(self):
        if self._client is None:
            self._client = _client(self.uri)
        return self._client

    def _safe(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as err:
            warn(
                self.sweep_dir,
                f"MLflow ({self.uri}): {what} failed: {type(err).__name__}: {' '.join(str(err).split())}",
            )
            return None

    def _save(self) -> None:
        _write_json(self.sweep_dir / MLFLOW_FILE, self.state)

    def parent(self) -> str | None:
        """The sweep's parent run id (created, or found in ``mlflow.json``)."""
        if not self.state.get("run_id"):
            self._safe("starting the sweep's run", self._start_parent)
        return self.state.get("run_id")

    def _start_parent(self) -> None:
        path = self.sweep_dir / MLFLOW_FILE
        saved = json.loads(path.read_text()) if path.is_file() else {}
        if saved.get("tracking_uri") == self.uri:
            self.state = saved
            self.client.update_run(saved["run_id"], status="RUNNING")
            return
        exp = _experiment_id(self.client, self.uri, self.experiment)
        run = self.client.create_run(
            exp, run_name=self.name, tags={"fedvsr.folder": str(self.sweep_dir.resolve()), "fedvsr.kind": "sweep"}
        )
        self.state = {"tracking_uri": self.uri, "experiment_id": exp, "run_id": run.info.run_id, "trials": {}}
        self._save()

    def setup(self, **info) -> None:
        self.state, self.logged = {}, {}  # a restored sweep: its runs are those of mlflow.json, not of the pickle
        self.parent()

    def _trial_run(self, trial) -> str | None:
        """The child run of ``trial`` (created on first sight, with its params)."""
        trials = self.state.setdefault("trials", {})
        if trial.trial_id in trials:
            run_id = trials[trial.trial_id]
            if trial.trial_id not in self.logged:  # a resumed sweep: what the run has already
                self.logged[trial.trial_id] = (
                    self._safe("reading a trial's run", lambda: _last_step(self.client, run_id, "psnr")) or 0
                )
            return run_id
        parent = self.parent()
        if parent is None:
            return None

        def create() -> str:
            run = self.client.create_run(
                self.state["experiment_id"],
                run_name=trial.trial_id,
                tags={"mlflow.parentRunId": parent, "fedvsr.folder": str(self.folder(trial).resolve())},
            )
            _log_params(self.client, run.info.run_id, self.params(trial))
            return run.info.run_id

        run_id = self._safe(f"starting the run of trial {trial.trial_id}", create)
        if run_id is not None:
            trials[trial.trial_id] = run_id
            self.logged[trial.trial_id] = 0
            self._safe("saving mlflow.json", self._save)
        return run_id

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._trial_run(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        run_id = self._trial_run(trial)
        step = int(result.get("round", 0))
        if run_id is None or step <= self.logged.get(trial.trial_id, 0):
            return
        if self._safe(
            f"logging round {step} of trial {trial.trial_id}",
            lambda: _log_metrics(self.client, run_id, [result], SWEEP_METRICS) or True,
        ):
            self.logged[trial.trial_id] = step

    def _trial_end(self, trial, status: str) -> None:
        run_id = self._trial_run(trial)
        if run_id is None:
            return
        folder = self.folder(trial)
        for name in TRIAL_ARTIFACTS:
            if (folder / name).is_file():
                self._safe(
                    f"logging {name} of trial {trial.trial_id}",
                    lambda n=name: self.client.log_artifact(run_id, str(folder / n)),
                )
        self._safe(
            f"ending the run of trial {trial.trial_id}",
            lambda: self.client.set_terminated(run_id, status=_TRIAL_STATUS[status]),
        )

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        res = trial.last_result or {}
        self._trial_end(trial, "finished" if res.get("round", 0) >= res.get("rounds", math.inf) else "stopped")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._trial_end(trial, "error")

    def end(
        self,
        status: str = "FINISHED",
        artifacts: Iterable[str | os.PathLike] = (),
        folders: dict[str, str | os.PathLike] | None = None,
    ) -> None:
        """Close the parent run with ``status``, logging ``artifacts`` (files) and ``folders`` (artefact path ->
        local folder). (Tune may have run a restored copy of this callback: the run is the one of mlflow.json.)"""
        if not self.state.get("run_id") and not (self.sweep_dir / MLFLOW_FILE).is_file():
            return  # stopped before the sweep began: no run was made
        run_id = self.parent()
        if run_id is None:
            return
        for path in map(Path, artifacts):
            if path.is_file():
                self._safe(f"logging {path.name}", lambda p=path: self.client.log_artifact(run_id, str(p)))
        for at, folder in (folders or {}).items():
            if Path(folder).is_dir():
                self._safe(f"logging {at}", lambda f=folder, a=at: self.client.log_artifacts(run_id, str(f), a))
        self._safe("ending the sweep's run", lambda: self.client.set_terminated(run_id, status=status))


class CentralTracking:
    """``fedvsr train-central``: its epochs as TensorBoard events (no client histogram: one pooled client) and,
    with ``--mlflow``, an MLflow run; fed by the driver's ``on_start`` / ``on_epoch`` (its rounds.parquet is
    written at the end)."""

    def __init__(self, out: str | os.PathLike, mlflow: str | None = None) -> None:
        self.out, self.events = Path(out), NoEvents()
        self.mlflow = mlflow_run(mlflow, out)

    def start(self) -> None:
        self.events = open_events(self.out)
        if self.mlflow:
            self.mlflow.start()

    def round(self, row: dict[str, Any]) -> None:
        self.events.round(row, [])
        if self.mlflow:
            self.mlflow.round(row)

    def end(self, status: str = "FINISHED") -> None:
        self.events.close()
        if self.mlflow:
            self.mlflow.end(status)


@contextmanager
def ends_on_error(
    run: MlflowRun | _MlflowSweep | None, killed: tuple[type[BaseException], ...] = (KeyboardInterrupt,)
) -> Iterator[None]:
    """End ``run`` (if any) as KILLED (an exception of ``killed``: an interruption) or FAILED when the body raises;
    the error goes on. (Success is the caller's: it ends the run with its artefacts.)"""
    try:
        yield
    except BaseException as err:
        if run is not None:
            run.end("KILLED" if isinstance(err, killed) else "FAILED")
        raise


def __getattr__(name: str) -> Any:
    """``MlflowSweep`` (:class:`_MlflowSweep` on Tune's ``Callback``) is built at first use: importing ``ray.tune``
    takes about a second, and every coordinator and client worker of every run imports this module (for
    TensorBoard), where no sweep needs it. Pickled by name, as any module-level class."""
    if name != "MlflowSweep":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from ray.tune import Callback

    body = {"__module__": __name__, "__qualname__": name, "__doc__": _MlflowSweep.__doc__}
    cls = globals()[name] = type(name, (_MlflowSweep, Callback), body)
    return cls
