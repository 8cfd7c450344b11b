"""The worker pool: runs a list of tasks on long-lived worker actors, largest first, each to a free worker.

The coordinator hands it a round's clients (or the held-out clips to evaluate) with four callables: ``submit``
(start a task on a worker, giving a future), ``done`` (take a result), ``failed`` (the worker died during a task:
retry it?) and ``size`` (largest first). A worker runs its calls in order; when it dies, the call it was running
failed with it, the calls queued behind it never started and go back to the queue as they were (no attempt
counted), and the pool waits for Ray to restart it (``revive``: configure the restarted process again) before
giving it work. A worker whose restart failed leaves the pool; with none left the run stops with
:class:`WorkersLost`.

Ray is reached only through a :class:`Backend` (``wait``, ``get``, the error of a dead actor), so the pool's
logic is tested with plain Python objects standing in for actor handles and futures (tests/platform/test_pool.py).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Backend:
    """How the pool waits for futures: ``wait(futures, num_returns, timeout)`` -> ``(ready, not_ready)`` as
    :func:`ray.wait`, ``get(future)`` as :func:`ray.get`, and ``died``, the error ``get`` raises for a call whose
    worker process died (:class:`ray.exceptions.RayActorError`)."""

    wait: Callable[..., tuple[list[Any], list[Any]]]
    get: Callable[[Any], Any]
    died: type[BaseException]

    @classmethod
    def ray(cls) -> Backend:
        import ray

        return cls(wait=ray.wait, get=ray.get, died=ray.exceptions.RayActorError)


@dataclass
class InFlight:
    """One call in flight on a worker."""

    task: Any  #: the task (None for a revive call)
    worker: int  #: the worker's index in the pool
    order: int  #: the task's place in the list it came in (the queue's tie-break after size)
    attempt: int  #: 1 = first try
    revive: bool = False  #: the call that configures a restarted worker again, not a task


@dataclass
class Job:
    """The callables of one :meth:`WorkerPool.run` (see there)."""

    submit: Callable[[Any, Any], Any]
    done: Callable[[Any, int, Any], None]
    failed: Callable[[Any, int, BaseException, int], bool]
    size: Callable[[Any], float]
    depth: int = 1
    requeued: Callable[[Any, int], None] | None = None
    queue: list[tuple[float, int, Any, int]] = field(default_factory=list)

    def push(self, task: Any, order: int, attempt: int) -> None:
        heapq.heappush(self.queue, (-self.size(task), order, task, attempt))


class WorkersLost(RuntimeError):
    """Every worker of the pool died and none could be restarted (their node lost, typically): the run cannot go on
    here. A sweep trial takes it as a lost node (Tune starts the trial again, on the nodes that are left); a plain
    run stops with how to resume."""


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class WorkerPool:
    """Long-lived workers (actor handles, index = worker id) and which of them are alive.

    ``revive(w)`` returns a future answered once Ray has restarted worker ``w`` and it is configured again
    (failing when it is gone for good); ``event(kind, message, **fields)`` records what happened to a worker;
    ``lost_hint`` ends the error raised when no worker is left (how to continue)."""

    def __init__(
        self,
        workers: list[Any],
        revive: Callable[[int], Any],
        event: Callable[..., None],
        lost_hint: str = "",
        backend: Backend | None = None,
    ) -> None:
        self.workers = workers
        self.alive = list(range(len(workers)))
        #: a dead worker -> the future of its revival, kept across runs: a worker whose node was lost, with no room
        #: elsewhere yet, does not hold up the end of a run's tasks
        self.reviving: dict[int, Any] = {}
        self.revive, self.event, self.lost_hint = revive, event, lost_hint
        self.backend = backend or Backend.ray()

    def run(
        self,
        tasks: list[Any],
        submit: Callable[[Any, Any], Any],
        done: Callable[[Any, int, Any], None],
        failed: Callable[[Any, int, BaseException, int], bool],
        size: Callable[[Any], float],
        depth: int = 1,
        requeued: Callable[[Any, int], None] | None = None,
    ) -> Iterator[int]:
        """Run ``tasks`` on the live workers, largest ``size`` first, each to a worker with nothing to do.

        ``depth`` > 1 (``platform.queue_depth``) also queues calls behind a worker's running one, up to ``depth``
        in flight, so it starts its next task without waiting for the coordinator in between; only while at least
        one task per live worker is left, so the round's tail still goes to whichever worker is free first.
        ``submit(worker, task)`` starts a task; ``done(task, worker, output)`` takes each result; when the worker
        died during a task, ``failed(task, worker, error, attempt)`` says whether to retry it (on the next free
        worker); ``requeued(task, worker)`` is told of each task that was queued behind it and goes back to the
        queue. Yields the number of tasks finished after each one."""
        job = Job(submit, done, failed, size, depth, requeued)
        for i, task in enumerate(tasks):
            job.push(task, i, 1)
        self._free = {w: 0 if w in self.reviving else depth for w in self.alive}  # call slots per worker
        self._calls: dict[int, list[Any]] = {w: [] for w in self.alive}  # in submission order
        pending: dict[Any, InFlight] = {ref: InFlight(None, w, -1, 0, revive=True) for w, ref in self.reviving.items()}
        finished = 0
        while job.queue or any(not call.revive for call in pending.values()):
            self._fill(job, pending)
            if not pending:
                raise WorkersLost(
                    f"no client worker is left ({len(self.workers)} started, all lost)"
                    + (f"; {self.lost_hint}" if self.lost_hint else "")
                )
            [ref], _ = self.backend.wait(list(pending), num_returns=1)
            call = pending.pop(ref)
            if call.revive:
                self._revived(call, ref, depth)
                continue
            try:
                out = self.backend.get(ref)
            except self.backend.died as err:  # the worker process died
                for _ in self._died(job, call, ref, err, pending):
                    finished += 1
                    yield finished
                continue
            self._calls[call.worker].remove(ref)
            self._free[call.worker] += 1
            done(call.task, call.worker, out)
            finished += 1
            yield finished

    def _fill(self, job: Job, pending: dict[Any, InFlight]) -> None:
        """Start queued tasks: on idle workers first, then (while a task per live worker is left) behind a running
        call, up to ``job.depth`` calls a worker."""
        while job.queue:
            w = next((w for w in self.alive if self._free[w] > 0 and not self._calls[w]), None)
            if w is None and len(job.queue) >= len(self.alive):
                w = next((w for w in self.alive if self._free[w] > 0), None)
            if w is None:
                return
            _, order, task, attempt = heapq.heappop(job.queue)
            ref = job.submit(self.workers[w], task)
            pending[ref] = InFlight(task, w, order, attempt)
            self._calls[w].append(ref)
            self._free[w] -= 1

    def _revived(self, call: InFlight, ref: Any, depth: int) -> None:
        """A worker that died is back (restarted and configured) or gone for good."""
        w = call.worker
        self.reviving.pop(w, None)
        try:
            self.backend.get(ref)
            self._free[w], self._calls[w] = depth, []
        except self.backend.died as err:
            self.alive.remove(w)
            self.event("worker_lost", f"worker {w} could not be restarted: {_first_line(err)}", worker=w)

    def _died(
        self, job: Job, call: InFlight, ref: Any, err: BaseException, pending: dict[Any, InFlight]
    ) -> Iterator[None]:
        """Worker ``call.worker`` died during ``ref``: its other calls settle (finished before the death: kept,
        yielding once each; else failed with it), the ones queued behind the running call go back to the queue,
        the running one is retried or not (``job.failed``), and the worker is revived."""
        w = call.worker
        self.event("worker_died", _first_line(err), worker=w)
        calls, self._calls[w], self._free[w] = self._calls[w], [], 0
        info = {r: pending.pop(r) for r in calls if r != ref}
        info[ref] = call
        others = [r for r in calls if r != ref]
        ready, _ = self.backend.wait(others, num_returns=len(others), timeout=30) if others else ([], [])
        dead = [ref]
        for r in others:
            try:
                result = self.backend.get(r) if r in ready else None
            except self.backend.died:
                result = None
            if result is None:
                dead.append(r)
                continue
            job.done(info[r].task, w, result)
            yield
        dead.sort(key=calls.index)
        for r in dead[1:]:  # queued behind the running call, never started: back as they were
            job.push(info[r].task, info[r].order, info[r].attempt)
            if job.requeued is not None:
                job.requeued(info[r].task, w)
        running = info[dead[0]]  # the oldest unfinished call was the running one
        self.reviving[w] = self.revive(w)
        pending[self.reviving[w]] = InFlight(None, w, -1, 0, revive=True)
        if job.failed(running.task, w, err, running.attempt):
            job.push(running.task, running.order, running.attempt + 1)
