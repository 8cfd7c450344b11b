"""The coordinator's in-order merge (fedvsr.platform.rounds.MergeInOrder): the same aggregate whatever order the
clients' updates arrive in, holes (clients that sent none) skipped; a round's failure message and its row."""

import dataclasses
import math

import torch

from fedvsr.fl.aggregate import ClientUpdate, PartialAggregate
from fedvsr.fl.participation import ClientPlan, ClientReport
from fedvsr.platform.rounds import MergeInOrder, failed_round, round_row


def update(value: float, weight: float) -> ClientUpdate:
    u = ClientUpdate()
    u.add("model", {"w": torch.full((3,), value)}, weight)
    return u


def test_updates_merge_in_dispatch_order_whatever_order_they_arrive_in():
    order = [7, 2, 9, 4]  # dispatch order: largest data first
    values = {7: (0.1, 1.0), 2: (1e8, 3.0), 9: (-1e8, 3.0), 4: (0.3, 2.0)}  # cancellation: order shows in the bits
    merges = []
    for arrival in ([7, 2, 9, 4], [4, 9, 2, 7], [9, 7, 4, 2]):
        merge = MergeInOrder(PartialAggregate(), order)
        for c in arrival:
            merge.add(c, update(*values[c]) if c != 9 or arrival[0] != 9 else None)
        merge.flush(final=True)
        assert merge.merged == 4 and merge.arrived == {}
        merges.append(merge.aggregate.sums["model"]["w"])
    assert torch.equal(merges[0], merges[1])
    assert merges[0].tolist() != merges[2].tolist()  # the third left client 9 out (a hole)
    direct = PartialAggregate()
    for c in (7, 2, 4):
        direct.add("model", {"w": torch.full((3,), values[c][0])}, values[c][1])
    assert torch.equal(merges[2], direct.sums["model"]["w"])


def _report(client: int, reason: str = "", samples: int = 0, seen: int = 0, loss: float = 0.0) -> ClientReport:
    report = ClientReport.not_trained(3, client, 0.1, ClientPlan.of(0.0, 1.0, 1), reason)
    if not reason:
        report = dataclasses.replace(report, status="ok", samples=samples, seen=seen, loss=loss)
    return report


def test_a_round_fails_with_fewer_than_min_clients_trained_naming_the_reasons():
    rows = [_report(0, "data error: x"), _report(1), _report(2, "data error: y"), _report(3, "missed the deadline: z")]
    assert failed_round(3, rows, 1) == ""
    assert failed_round(3, rows, 2) == (
        "round 3: 1 of 4 clients trained (data error: 2, missed the deadline: 1), fewer than fl.min_clients = 2"
    )


def test_the_round_row_counts_the_kept_clients():
    rows = [
        _report(0, samples=10, seen=40, loss=1.0),
        _report(1, "dropped out"),
        _report(2, samples=6, seen=20, loss=3.0),
    ]
    kept = [r for r in rows if r.ok]
    metrics = {"psnr": 30.0, "eval_seconds": 0.5, "eval_workers": 2}
    row = round_row(3, metrics, rows, kept, 4.0, 2.0, 0.1, 2)
    assert row == {
        "round": 3,
        "psnr": 30.0,
        "train_loss": 2.0,
        "clients": 3,
        "aggregated": 2,
        "dropped": 1,
        "retried": 0,
        "cut": 0,
        "seconds": 4.0,
        "train_seconds": 2.0,
        "eval_seconds": 0.5,
        "samples": 16,
        "updates_per_s": 1.0,
        "samples_per_s": 30.0,
        "lr": 0.1,
        "workers": 2,
        "eval_workers": 2,
    }
    assert math.isnan(round_row(3, metrics, rows, [], 4.0, 0.0, 0.1, 2)["updates_per_s"])
