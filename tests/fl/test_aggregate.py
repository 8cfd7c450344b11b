"""The partial-aggregate protocol: plain and log-space weights, merging, exactness."""

from __future__ import annotations

import math

import pytest
import torch

from fedvsr.fl.aggregate import PartialAggregate, merge_partials, normalised_weights


def _tensors(seed: int) -> dict[str, torch.Tensor]:
    return {"w": torch.randn(5, generator=torch.Generator().manual_seed(seed))}


def test_log_weights_of_any_size_average_like_their_ratios():
    # exp(1000) and exp(1000 + log 3) overflow float64; their ratio 1 : 3 does not
    p = PartialAggregate()
    p.add("model", _tensors(0), log_weight=1000.0)
    p.add("model", _tensors(1), log_weight=1000.0 + math.log(3))
    expected = (_tensors(0)["w"] + 3 * _tensors(1)["w"]) / 4
    torch.testing.assert_close(p.mean("model")["w"], expected)
    q = PartialAggregate()
    q.add("model", _tensors(0), log_weight=-2000.0)  # underflows float64: still weighs 1 : 1
    q.add("model", _tensors(1), log_weight=-2000.0)
    torch.testing.assert_close(q.mean("model")["w"], (_tensors(0)["w"] + _tensors(1)["w"]) / 2)


def test_plain_weights_give_the_bits_of_unscaled_sums():
    # scaling by a power of two is exact: the same bits as sum(w_i x_i) / sum(w_i) in float64
    weights = [8.0, 3.0, 5.0, 1024.0]
    p = PartialAggregate()
    for i, w in enumerate(weights):
        p.add("model", _tensors(i), log_weight=math.log(w))
    plain = sum(w * _tensors(i)["w"].double() for i, w in enumerate(weights)) / sum(weights)
    assert torch.equal(p.mean("model")["w"], plain.float())
    total = PartialAggregate()
    for i in range(3):
        total.add("delta", _tensors(i), 1.0)
    assert torch.equal(total.total("delta")["w"], sum(_tensors(i)["w"].double() for i in range(3)).float())


def test_merging_partials_of_different_scales_equals_one_partial():
    logs = [0.0, 800.0, 3.0, 801.5]
    one = PartialAggregate()
    for i, lw in enumerate(logs):
        one.add("model", _tensors(i), log_weight=lw)
    parts = [PartialAggregate() for _ in range(2)]
    for i, lw in enumerate(logs):
        parts[i % 2].add("model", _tensors(i), log_weight=lw)
    merged = merge_partials(parts)
    torch.testing.assert_close(merged.mean("model")["w"], one.mean("model")["w"], rtol=1e-12, atol=1e-12)


def test_bad_weights_are_rejected():
    p = PartialAggregate()
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="aggregation weight must be finite and > 0"):
            p.add("model", _tensors(0), bad)
    with pytest.raises(ValueError, match="log-weight must be finite"):
        p.add("model", _tensors(0), log_weight=math.inf)


def test_normalised_weights_sum_to_one_for_any_log_weights():
    w = normalised_weights([5000.0, 5000.0 + math.log(3), -5000.0])
    assert w == pytest.approx([0.25, 0.75, 0.0]) and math.fsum(w) == pytest.approx(1.0)
    assert normalised_weights([]) == []


def test_recorded_updates_merged_blockwise_give_the_bits_of_adding_them_in_turn():
    from fedvsr.fl.aggregate import ClientUpdate, merge_updates

    g = torch.Generator().manual_seed(0)
    updates, seq = [], PartialAggregate()
    # log-weights far beyond float64's range and below it, and a second accumulator with plain weights
    for lw in [0.3, 900.0, -50.0, 2.5, 1500.0, 0.0, 7.0]:
        u = ClientUpdate()
        t = {"a": torch.randn(1000, 37, generator=g), "b": torch.randn(5, generator=g)}
        u.add("model", t, log_weight=lw)
        seq.add("model", t, log_weight=lw)
        d = {"a": torch.randn(1000, 37, generator=g)}
        u.add("delta_c", d, 1.0)
        seq.add("delta_c", d, 1.0)
        t["a"].zero_()  # the update holds a copy: training the next client in place changes nothing
        updates.append(u)
    fused = PartialAggregate()
    merge_updates(fused, updates[:3], block=1000)  # blocks that do not divide the tensors, two batches
    merge_updates(fused, updates[3:], block=4096)
    for name in ("model", "delta_c"):
        for key in seq.sums[name]:
            assert torch.equal(seq.sums[name][key], fused.sums[name][key]), (name, key)
        assert (fused.weights[name], fused.scales[name]) == (seq.weights[name], seq.scales[name])
    assert fused.scales["model"] == math.floor(1500 / math.log(2)) + 1
    with pytest.raises(ValueError, match="aggregation weight must be finite and > 0"):
        ClientUpdate().add("model", {}, 0.0)
