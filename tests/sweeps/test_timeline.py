"""The sweep's time budget (fedvsr.sweeps.timeline), worked out by hand on a small timeline."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fedvsr.sweeps.timeline import TIMELINE_FILE, describe, record_step, time_budget, write_timeline


def step(trial, rnd, started, ended, begin, seconds, pid=7):
    return {
        "trial": trial,
        "round": rnd,
        "step_started": started,
        "step_ended": ended,
        "begin_seconds": begin,
        "round_seconds": seconds,
        "replayed": False,
        "actor_pid": pid,
    }


#: 2 slots, from 0 s to 20 s. A: steps [1, 4] (1 s start, 2 s round) and [5, 8] (3 s round);
#: B: [2, 6] (2 s start, 2 s round); C starts last: [10, 13] (0.5 s start, 2 s round) and [13.5, 18] (4 s round)
ROWS = [
    step("A", 1, 1.0, 4.0, 1.0, 2.0),
    step("A", 2, 5.0, 8.0, 0.0, 3.0),
    step("B", 1, 2.0, 6.0, 2.0, 2.0, pid=8),
    step("C", 1, 10.0, 13.0, 0.5, 2.0),
    step("C", 2, 13.5, 18.0, 0.0, 4.0),
]


def test_the_budget_splits_the_slot_seconds_into_parts_that_add_up():
    b = time_budget(ROWS, 0.0, 20.0, 2)
    assert (b["slots"], b["slot_seconds"], b["trials"], b["actors"]) == (2, 40.0, 3, 2)
    s = b["seconds"]
    assert s["rounds"] == pytest.approx(13.0)  # 2 + 3 + 2 + 2 + 4
    assert s["trial_starts"] == pytest.approx(3.5)  # 1 + 2 + 0.5
    assert s["in_steps"] == pytest.approx(1.0)  # C's steps: 3 - 0.5 - 2 and 4.5 - 4
    assert s["between_rounds"] == pytest.approx(1.5)  # A: 4 -> 5; C: 13 -> 13.5
    assert s["start_up"] == pytest.approx(2.0)  # [0, 1]: both slots idle
    assert s["between_trials"] == pytest.approx(7.0)  # [1, 2] one idle, [6, 8] one, [8, 10] both
    assert s["tail"] == pytest.approx(8.0)  # [10, 18]: C alone
    assert s["shut_down"] == pytest.approx(4.0)  # [18, 20]: both idle
    assert s["other"] == pytest.approx(0.0)
    assert b["shares"]["rounds"] == pytest.approx(13.0 / 40.0)


def test_slots_default_to_the_most_trials_active_at_once_and_never_exceed_the_trials():
    assert time_budget(ROWS, 0.0, 20.0, None)["slots"] == 2  # A and B overlap in [2, 6]
    wide = time_budget(ROWS, 0.0, 20.0, 8)
    assert wide["slots"] == 3 and wide["slot_seconds"] == 60.0
    assert wide["seconds"]["tail"] == pytest.approx(16.0)  # [10, 18] with 2 of 3 slots idle
    empty = time_budget([], 0.0, 5.0, 2)
    assert (empty["slots"], empty["seconds"]["start_up"], empty["trials"]) == (1, 5.0, 0)  # at least one slot


def test_a_resumed_sweep_appends_its_steps_as_the_next_start(tmp_path: Path):
    result = {"round": 1, "seconds": 2.0, "step_started": 1.0, "step_ended": 4.0, "begin_seconds": 1.0}
    record_step(tmp_path, "A", {**result, "actor_pid": 7})
    record_step(tmp_path, "A", {"round": 2, "seconds": 3.0})  # a result without the step's times: not kept
    first = write_timeline(tmp_path, 0.0, 5.0, 1)
    assert first["start"] == 0 and first["seconds"]["rounds"] == 2.0
    record_step(tmp_path, "A", {**result, "round": 2, "replayed": True, "actor_pid": 9})
    second = write_timeline(tmp_path, 0.0, 5.0, 1)
    table = pq.read_table(tmp_path / TIMELINE_FILE)
    assert table.column("start").to_pylist() == [0, 1]
    assert table.column("round_seconds").to_pylist() == [2.0, 0.0]  # a replayed step trained nothing
    assert second["start"] == 1 and second["seconds"]["in_steps"] == 2.0  # 3 s step, 1 s start, no round
    assert json.loads(table.schema.metadata[b"fedvsr.time_budget"]) == json.loads(json.dumps(second))


def test_the_budget_is_said_in_one_line_largest_part_first():
    line = describe(time_budget(ROWS, 0.0, 20.0, 2))
    assert line == (
        "fedvsr sweep: time of 2 trial slots x 20 s: rounds 32%, tail 20%, between trials 18%, shut down 10%, "
        "trial starts 9%, start up 5%, between rounds 4%, in steps 2% (timeline.parquet)"
    )
