"""The coordinator's in-order merge (fedvsr.platform.rounds.MergeInOrder): the same aggregate whatever order the
clients' updates arrive in, holes (clients that sent none) skipped."""

import torch

from fedvsr.fl.aggregate import ClientUpdate, PartialAggregate
from fedvsr.platform.rounds import MergeInOrder


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
