"""Ray's own messages about events fedvsr handles: kept in a log file, off the driver's console.

Ray prints on the driver's console (1) what its error channel publishes (``(raylet) A worker died or was killed
while executing a task ...``, ``Task ClientWorker.ping failed. There are infinite retries remaining ...``): Ray's
view of a worker death the coordinator handles itself (the client is trained again, ``worker_died`` and
``client_retried`` are recorded, the round line says ``1 retried``); (2) the output of every worker process
(``log_to_driver``), which includes the tracebacks a worker prints for a task that failed or was cancelled (a
sweep records the trial's error; ASHA stops trials); (3) its driver-side loggers (``ray``, ``ray.tune``: a failed
trial with its traceback). :func:`divert_ray_output` appends (1), the tracebacks in (2) and (3) to a log file (a
run's or a sweep's ``ray.log``); the rest of the workers' output, Ray's autoscaler notes (an infeasible request)
and every line fedvsr prints itself stay on the console.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
from pathlib import Path
from typing import Any

#: the first line of a Python traceback
TRACEBACK = "Traceback (most recent call last):"
#: the first line of a traceback as Ray prints it for a failed task or actor (its frames follow, no TRACEBACK line):
#: ``Exception raised in creation task: ... ray::Coordinator.__init__() (pid=3830, ip=127.0.0.1, ...)``
_RAY_TASK_ERROR = re.compile(r"ray::[\w.]+\(\) \(pid=\d+, ip=")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Ray colours the task's name
#: a traceback's last line (``ValueError: ...``, ``ray.exceptions.RayTaskError(ValueError): ...``) or the lines
#: that chain two tracebacks
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(\([\w.]+\))?(:|$)")
_CHAINING = ("During handling of the above exception", "The above exception was the direct cause")

_lock = threading.Lock()
_log_path: Path | None = None
_original = None


class TracebackSplitter:
    """Splits each worker's output into its tracebacks and the rest, keeping per worker whether the last batch
    ended inside a traceback (a traceback may come in more than one batch)."""

    def __init__(self) -> None:
        self._state: dict[Any, str] = {}  # source -> "" | "frames" (inside one) | "after" (its last line seen)

    def split(self, source: Any, lines: list[str]) -> tuple[list[str], list[str]]:
        """``lines`` of ``source`` -> (the lines for the console, the lines of tracebacks)."""
        console, traced = [], []
        state = self._state.get(source, "")
        for line in lines:
            if (
                line.startswith(TRACEBACK)
                or _RAY_TASK_ERROR.search(_ANSI.sub("", line))
                or (state and line.startswith(_CHAINING))
            ):
                state = "frames"
            elif state == "frames" and line.strip() and not line[:1].isspace():
                state = "after" if _EXCEPTION_LINE.match(line) else ""  # its last line, or not a traceback after all
            elif state == "after" and line.strip():
                state = ""
            (traced if state else console).append(line)
        self._state[source] = state
        return console, traced


_splitter = TracebackSplitter()


def _append(header: str, lines: list[str]) -> None:
    if _log_path is None or not lines:
        return
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    with _lock:
        _log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(_log_path, "a") as f:
            f.writelines(f"{stamp} {header} {_ANSI.sub('', line)}\n" for line in lines)


def _route(data: dict[str, Any], ignore_prefix: bool) -> None:
    """Ray's ``print_to_stdstream`` with tracebacks and the error channel sent to the log."""
    source = data.get("pid")
    header = (
        f"({source})"
        if source in ("raylet", "autoscaler")
        else f"({data.get('actor_name') or data.get('task_name') or 'worker'} pid={source}, ip={data.get('ip')})"
    )
    if source == "raylet":
        _append(header, list(data.get("lines", [])))
        return
    console, traced = _splitter.split((data.get("ip"), source), list(data.get("lines", [])))
    _append(header, traced)
    if console:
        _original({**data, "lines": console}, ignore_prefix)


class _LogFileHandler(logging.Handler):
    """A logging handler that appends to the current log file, opened per record (Ray's loggers say little)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            _append(f"({record.name})", self.format(record).splitlines())
        except Exception:  # noqa: BLE001 - a log line must never fail the run
            self.handleError(record)


def session_log() -> Path:
    """``fedvsr-console.log`` in the log folder of this driver's Ray session."""
    import ray

    return Path(ray._private.worker._global_node.get_logs_dir_path()) / "fedvsr-console.log"


def divert_ray_output(log_path: str | Path) -> None:
    """From now on, send Ray's messages of handled events and its tracebacks to ``log_path`` (module docstring).
    Call after ``ray.init`` in the driver; calling again moves the log."""
    global _log_path, _original
    import ray._private.worker as ray_worker
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    _log_path = Path(log_path)
    if _original is None:
        _original = ray_worker.print_to_stdstream
        ray_worker.print_to_stdstream = _route  # what the error-channel thread calls
    for name, handler in list(dispatcher.handlers):  # worker output (log_to_driver)
        if name == "ray_print_logs" and isinstance(handler, functools.partial) and handler.func is _original:
            dispatcher.remove_handler(name)
            dispatcher.add_handler(name, functools.partial(_route, **handler.keywords))
    ray_logger = logging.getLogger("ray")
    for handler in list(ray_logger.handlers):
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            ray_logger.removeHandler(handler)
    if not any(isinstance(h, _LogFileHandler) for h in ray_logger.handlers):
        handler = _LogFileHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        ray_logger.addHandler(handler)
