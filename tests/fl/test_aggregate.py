"""The partial-aggregate protocol: plain and log-space weights, merging, exactness."""

from __future__ import annotations

import math

import pytest
import torch

from fedvsr.fl.aggregate import PartialAggregate, all_finite, merge_partials, normalised_weights


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


@pytest.fixture(params=["kernel", "torch"])
def merge_path(request, monkeypatch):
    """Run a merge test through the compiled kernel (every float32 sum) and through torch operations (none)."""
    from fedvsr.fl import aggregate as agg

    monkeypatch.setattr(agg, "KERNEL_MIN_ELEMENTS", 0 if request.param == "kernel" else 1 << 62)
    return request.param


def test_recorded_updates_merged_blockwise_give_the_bits_of_adding_them_in_turn(merge_path):
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


def test_compiled_merge_and_torch_path_give_the_same_bits(monkeypatch):
    """float32 on the CPU goes through the compiled kernel (from KERNEL_MIN_ELEMENTS elements on); anything else
    (here float16, and every sum with the threshold out of reach) through torch operations: both give the bits
    of sequential ``add``, for 1 to 9 updates (the kernel adds four, then two, then one per pass), a tensor of
    0 elements, and zeros of both signs (a sum of -0.0 terms stays -0.0, as in ``add``)."""
    from fedvsr.fl import aggregate as agg
    from fedvsr.fl.aggregate import ClientUpdate, merge_updates

    g = torch.Generator().manual_seed(1)
    for count in (1, 2, 3, 4, 5, 7, 9):
        updates, seq = [], PartialAggregate()
        for k in range(count):
            t = {
                "w": torch.randn(3000, generator=g) * 10 ** (k % 3),
                "h": torch.randn(700, generator=g).half(),
                "empty": torch.zeros(0),
                "z": torch.tensor([-0.0, 0.0, -0.0]) * (k + 1),
            }
            u = ClientUpdate()
            u.add("model", t, log_weight=0.37 * k)
            seq.add("model", t, log_weight=0.37 * k)
            updates.append(u)
        compiled, plain = PartialAggregate(), PartialAggregate()
        monkeypatch.setattr(agg, "KERNEL_MIN_ELEMENTS", 0)
        merge_updates(compiled, updates, block=512)
        monkeypatch.setattr(agg, "KERNEL_MIN_ELEMENTS", 1 << 62)
        merge_updates(plain, updates, block=512)
        monkeypatch.undo()
        for key in ("w", "h", "empty", "z"):  # bit by bit: -0.0 is not 0.0 here
            bits = seq.sums["model"][key].view(torch.int64)
            assert torch.equal(compiled.sums["model"][key].view(torch.int64), bits), (count, key)
            assert torch.equal(plain.sums["model"][key].view(torch.int64), bits), (count, key)
        assert compiled.sums["model"]["z"][0].item() == 0 and math.copysign(1, compiled.sums["model"]["z"][0]) == -1
        assert compiled.sums["model"]["w"].dtype == torch.float64


def test_merge_kernel_refuses_what_it_cannot_sum():
    import numpy as np

    from fedvsr.fl.merge_kernel import merge_into

    acc = np.zeros(4)
    with pytest.raises(TypeError, match="contiguous 1-D float64"):
        merge_into(np.zeros(4, np.float32), [np.ones(4, np.float32)], [1.0])
    with pytest.raises(TypeError, match=r"contiguous float32 array of shape \(4,\)"):
        merge_into(acc, [np.ones(5, np.float32)], [1.0])
    with pytest.raises(TypeError, match="float32"):
        merge_into(acc, [np.ones(4)], [1.0])
    with pytest.raises(ValueError, match="block must be >= 1"):
        merge_into(acc, [np.ones(4, np.float32)], [1.0], block=0)
    merge_into(acc, [np.full(4, 3, np.float32), np.full(4, 0.5, np.float32)], [0.5, 2.0])
    assert acc.tolist() == [2.5] * 4


def test_an_aggregate_reusing_the_last_rounds_buffers_gives_the_same_sums(merge_path):
    from fedvsr.fl.aggregate import ClientUpdate, merge_updates

    g = torch.Generator().manual_seed(2)

    def updates(n):
        out = []
        for k in range(n):
            u = ClientUpdate()
            u.add("model", {"a": torch.randn(40, 3, generator=g), "b": torch.randn(7, generator=g)}, 1.0 + k)
            out.append(u)
        return out

    first = PartialAggregate()
    merge_updates(first, updates(3))
    a_buffer = first.sums["model"]["a"]
    second_updates = updates(5)
    second = PartialAggregate.reusing(first)
    # packed float32 updates: the accumulator is one flat buffer (a's 120 values, then b's 7) with a view each
    assert first.sums == {} and set(second.spare) == {("model", "")} and second.spare[("model", "")].shape == (127,)
    merge_updates(second, second_updates)
    assert second.sums["model"]["a"].data_ptr() == a_buffer.data_ptr() and second.spare == {}
    assert second.sums["model"]["b"].data_ptr() == a_buffer.data_ptr() + 120 * 8
    fresh = PartialAggregate()
    merge_updates(fresh, second_updates)
    for key in ("a", "b"):
        assert torch.equal(second.sums["model"][key], fresh.sums["model"][key])
    assert second.weights == fresh.weights and math.ldexp(second.weights["model"], second.scales["model"]) == 15.0
    # a buffer of another size is not used
    odd = PartialAggregate()
    odd.flat["model"] = (torch.zeros(126, dtype=torch.float64), (), {})
    third = PartialAggregate.reusing(odd)
    merge_updates(third, second_updates)
    assert torch.equal(third.sums["model"]["a"], fresh.sums["model"]["a"])
    assert third.sums["model"]["a"].shape == (40, 3) and third.flat["model"][0].shape == (127,)


def test_a_packed_update_crosses_pickle_as_one_array_and_merges_read_only(merge_path):
    """Float32 tensors travel as one flat array (pickle protocol 5 out of band, as Ray sends them); after the
    trip the array is read-only, as one from the object store: the merge gives the bits of ``add`` all the
    same, mixing read-only and writable updates, and the tensors read back equal what was added."""
    import pickle

    from fedvsr.fl.aggregate import ClientUpdate, PackedTensors, merge_updates

    g = torch.Generator().manual_seed(3)
    local, seq, shipped = [], PartialAggregate(), []
    for k in range(6):
        t = {
            "conv.weight": torch.randn(8, 3, 3, 3, generator=g),
            "conv.bias": torch.randn(8, generator=g),
            "scalar": torch.tensor(float(k)),
        }
        u = ClientUpdate()
        u.add("model", t, log_weight=0.5 * k)
        seq.add("model", t, log_weight=0.5 * k)
        buffers = []
        blob = pickle.dumps(u, protocol=5, buffer_callback=buffers.append)
        assert len(buffers) == 1  # the whole model: one out-of-band buffer
        back = pickle.loads(blob, buffers=[memoryview(b.raw()).toreadonly() for b in buffers])
        packed = back.entries[0][1]
        assert isinstance(packed, PackedTensors) and not packed.flat.flags.writeable
        assert list(packed) == list(t) and all(torch.equal(packed[key], t[key]) for key in t)
        assert packed["scalar"].shape == () and packed["conv.weight"].shape == (8, 3, 3, 3)
        local.append(u)
        shipped.append(back)
    fused = PartialAggregate()
    merge_updates(fused, [shipped[0], local[1], shipped[2]])
    merge_updates(fused, [local[3], shipped[4], shipped[5]])
    for key in seq.sums["model"]:
        assert torch.equal(fused.sums["model"][key], seq.sums["model"][key]), key
    assert fused.weights == seq.weights and fused.scales == seq.scales
    # an accumulator started by add() is merged into tensor by tensor, with the same result
    mixed = PartialAggregate()
    name, tensors, m, e = local[0].entries[0]
    mixed.add(name, dict(tensors.items()), math.ldexp(m, e))
    merge_updates(mixed, local[1:])
    for key in seq.sums["model"]:
        assert torch.equal(mixed.sums["model"][key], seq.sums["model"][key]), key


def test_all_finite_checks_every_floating_entry_in_one_pass_and_ignores_integer_ones():
    ok = {"w": torch.ones(3, 2), "h": torch.zeros(4, dtype=torch.float16), "n": torch.tensor([7], dtype=torch.long)}
    assert all_finite(ok) and all_finite({}) and all_finite({"steps": torch.tensor(3)})
    for bad in (math.inf, -math.inf, math.nan):
        for key in ("w", "h"):
            broken = {k: v.clone() for k, v in ok.items()}
            broken[key].view(-1)[-1] = bad
            assert not all_finite(broken), (key, bad)
    # float16's largest value is finite; it is not made infinite by being checked beside float32 entries
    assert all_finite({"h": torch.tensor([65504.0], dtype=torch.float16), "w": torch.ones(1)})
