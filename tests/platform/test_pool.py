"""The worker pool's logic (fedvsr.platform.pool) on plain Python objects standing in for actor handles and
futures: a simulated clock orders the calls, a worker can die during a call (the calls queued behind it fail with
it) and be restarted or lost. The same paths on real Ray actors: tests/platform/test_scheduling.py (slow)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from fedvsr.platform.pool import Backend, WorkerPool, WorkersLost


class Died(Exception):
    """Stands in for ray.exceptions.RayActorError."""


@dataclass(eq=False)
class Future:
    ready_at: float
    value: Any = None
    error: BaseException | None = None
    effect: Any = None  # run when the result is taken (a revive configures the worker again)


@dataclass
class Clock:
    now: float = 0.0

    def wait(self, futures, num_returns=1, timeout=None):
        ordered = sorted(futures, key=lambda f: f.ready_at)
        ready = ordered[:num_returns]
        self.now = max(self.now, ready[-1].ready_at)
        return ready, ordered[num_returns:]

    @staticmethod
    def get(future):
        if future.effect is not None:
            future.effect()
        if future.error is not None:
            raise future.error
        return future.value


@dataclass
class FakeWorker:
    """A worker that runs its calls in order; task ``t`` takes ``t`` time units; it dies during the tasks in
    ``dies_on`` (first try only), and a restart after a death fails when ``restart_fails``."""

    clock: Clock
    index: int
    dies_on: set = field(default_factory=set)
    restart_fails: bool = False
    busy_until: float = 0.0
    dead_at: float | None = None

    def call(self, task: int) -> Future:
        if self.dead_at is not None:  # queued behind the call it died in
            return Future(self.dead_at, error=Died(f"worker {self.index} died"))
        end = max(self.busy_until, self.clock.now) + task
        self.busy_until = end
        if task in self.dies_on:
            self.dies_on.discard(task)
            self.dead_at = end
            return Future(end, error=Died("The actor died unexpectedly before finishing this task.\nmore"))
        return Future(end, value=f"{task} on {self.index}")

    def revive(self) -> Future:
        def back() -> None:
            self.dead_at, self.busy_until = None, self.clock.now

        if self.restart_fails:
            return Future(self.clock.now + 1, error=Died("The actor is dead because it was killed"))
        return Future(self.clock.now + 1, value={"index": self.index}, effect=back)


def make_pool(*workers_kwargs: dict) -> tuple[WorkerPool, list[FakeWorker], list[tuple]]:
    clock = Clock()
    workers = [FakeWorker(clock, i, **kw) for i, kw in enumerate(workers_kwargs)]
    events: list[tuple] = []
    pool = WorkerPool(
        workers,
        lambda w: workers[w].revive(),
        lambda kind, msg, **f: events.append((kind, msg, f)),
        lost_hint="resume it",
        backend=Backend(clock.wait, clock.get, Died),
    )
    return pool, workers, events


def run(pool: WorkerPool, tasks: list[int], depth: int = 1, retries: int = 1):
    done, failed, requeued = [], [], []

    def on_failed(task, w, err, attempt):
        failed.append((task, w, attempt))
        return attempt <= retries

    progress = list(
        pool.run(
            tasks,
            lambda worker, task: worker.call(task),
            lambda task, w, out: done.append(out),
            on_failed,
            lambda task: task,
            depth,
            lambda task, w: requeued.append((task, w)),
        )
    )
    return done, failed, requeued, progress


def test_tasks_go_largest_first_to_whichever_worker_is_free():
    pool, _, events = make_pool({}, {})
    done, failed, requeued, progress = run(pool, [1, 5, 2, 3])
    # 5 -> w0 (0-5), 3 -> w1 (0-3), 2 -> w1 (3-5), 1 -> w0 or w1 at 5: w0 is first in the pool
    assert done == ["3 on 1", "5 on 0", "2 on 1", "1 on 0"]
    assert progress == [1, 2, 3, 4] and failed == requeued == events == []


def test_a_dead_worker_retries_its_running_task_and_requeues_the_one_queued_behind():
    pool, _, events = make_pool({"dies_on": {5}}, {})
    # depth 2: w0 runs 5 with 2 queued behind it, w1 runs 4 with 1 behind it
    done, failed, requeued, progress = run(pool, [5, 4, 2, 1], depth=2)
    assert failed == [(5, 0, 1)]  # the running task: its first attempt failed
    assert requeued == [(2, 0)]  # queued behind it, never started: back to the queue, no attempt counted
    assert events == [("worker_died", "The actor died unexpectedly before finishing this task.", {"worker": 0})]
    # the retry (attempt 2) queues behind w1's running task; w0, back at 6, takes the requeued one
    assert done == ["4 on 1", "1 on 1", "2 on 0", "5 on 1"]
    assert progress == [1, 2, 3, 4]
    assert pool.alive == [0, 1]


def test_a_task_whose_worker_dies_too_often_is_given_up():
    pool, _, _ = make_pool({"dies_on": {3}}, {"dies_on": {3}})
    # w0 dies in 3 (attempt 1); retried on w1, which dies in it too (attempt 2): no retry left (retries = 1)
    done, failed, _, progress = run(pool, [3, 1], retries=1)
    assert failed == [(3, 0, 1), (3, 1, 2)]
    assert done == ["1 on 1"] and progress == [1]


def test_a_worker_that_cannot_be_restarted_leaves_the_pool_and_the_others_finish():
    pool, _, events = make_pool({"dies_on": {4}, "restart_fails": True}, {})
    done, failed, _, _ = run(pool, [4, 3, 2])
    assert pool.alive == [1]
    assert (
        "worker_lost",
        "worker 0 could not be restarted: The actor is dead because it was killed",
        {"worker": 0},
    ) in events
    assert done == ["3 on 1", "2 on 1", "4 on 1"] and failed == [(4, 0, 1)]


def test_with_every_worker_lost_the_run_stops_with_how_to_continue():
    pool, _, _ = make_pool({"dies_on": {2}, "restart_fails": True})
    with pytest.raises(WorkersLost) as err:  # a RuntimeError; a sweep trial takes it as a lost node
        run(pool, [2, 1])
    assert str(err.value) == "no client worker is left (1 started, all lost); resume it"
