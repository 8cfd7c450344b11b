"""Client partitions (FedVSR section 5.1: 40 clients x 6 videos; random vs one class per client)."""

import numpy as np
import pyarrow as pa
import pytest

from fedvsr.data.video import VideoEntry
from fedvsr.fl.partition import (
    DEVICE_KINDS,
    DEVICE_RANGES,
    DIRICHLET_MAX_DRAWS,
    PARTITIONS,
    Degradation,
    client_degradations,
    evaluation_degradations,
    partition_summary,
    partition_table,
    partition_videos,
    with_degradations,
)

# the paper's Kinetics set-up: 40 classes x 6 videos = 240 videos, interleaved on purpose
LABELS = [f"class{i % 40:02d}" for i in range(240)]


def flat(parts):
    return [i for part in parts for i in part]


def label_sets(parts, labels=LABELS):
    return [{labels[i] for i in part} for part in parts]


@pytest.mark.parametrize("scheme", PARTITIONS)
def test_deterministic_sorted_disjoint(scheme):
    a = partition_videos(LABELS, 40, scheme, seed=3)
    b = partition_videos(LABELS, 40, scheme, seed=3)
    assert a == b
    assert len(a) == 40
    assert all(part == sorted(part) and len(part) >= 1 for part in a)
    everything = flat(a)
    assert len(everything) == len(set(everything))  # no video owned twice
    assert all(isinstance(i, int) and 0 <= i < 240 for i in everything)
    if scheme != "by-class":  # one whole class per client leaves nothing to chance
        assert partition_videos(LABELS, 40, scheme, seed=4) != a


def test_random_is_the_papers_less_heterogeneous_split():
    parts = partition_videos(LABELS, 40, "random", seed=0)
    assert [len(p) for p in parts] == [6] * 40  # 240 / 40
    assert sorted(flat(parts)) == list(range(240))
    # random content: with 40 classes, clients almost never hold a single class
    assert np.mean([len(s) for s in label_sets(parts)]) > 4


def test_random_uneven_sizes_differ_by_at_most_one():
    parts = partition_videos(LABELS, 7, "random", seed=1)
    sizes = sorted(len(p) for p in parts)
    assert sizes == [34, 34, 34, 34, 34, 35, 35]  # 240 = 7 * 34 + 2
    assert sorted(flat(parts)) == list(range(240))


def test_by_class_one_class_per_client_like_the_paper():
    parts = partition_videos(LABELS, 40, "by-class", seed=0)
    sets = label_sets(parts)
    assert all(len(s) == 1 for s in sets)
    # round-robin over sorted class names: client k has class k
    assert [s.pop() for s in sets] == [f"class{k:02d}" for k in range(40)]
    assert [len(p) for p in parts] == [6] * 40
    assert sorted(flat(parts)) == list(range(240))


def test_by_class_more_clients_than_classes_share_and_split_evenly():
    parts = partition_videos(LABELS, 80, "by-class", seed=0)
    assert all(len(s) == 1 for s in label_sets(parts))
    assert [len(p) for p in parts] == [3] * 80  # each class's 6 videos shared by 2 clients
    assert LABELS[parts[5][0]] == LABELS[parts[45][0]] == "class05"
    assert set(parts[5]).isdisjoint(parts[45])
    parts = partition_videos(LABELS, 100, "by-class", seed=0)  # classes 0..19: 3 sharers of 2
    assert len(parts[0]) == len(parts[40]) == len(parts[80]) == 2 and len(parts[20]) == 3


def test_by_class_fewer_clients_than_classes_uses_first_sorted_classes():
    parts = partition_videos(LABELS, 10, "by-class", seed=0)
    assert [LABELS[p[0]] for p in parts] == [f"class{k:02d}" for k in range(10)]
    assert len(flat(parts)) == 60


def test_by_class_error_when_a_client_would_be_empty():
    labels = ["a"] + ["b"] * 10  # clients 0 and 2 share class 'a', which has 1 video
    with pytest.raises(
        ValueError,
        match=r"class 'a' has 1 videos but 2 of the 3 clients share it "
        r"\(11 videos in 2 classes\)",
    ):
        partition_videos(labels, 3, "by-class", seed=0)


def test_quantity_skew_sizes():
    parts = partition_videos(LABELS, 40, "quantity-skew", seed=0, dirichlet_beta=0.1, min_videos=2)
    sizes = [len(p) for p in parts]
    assert sorted(flat(parts)) == list(range(240))  # every video used
    assert min(sizes) >= 2 and sum(sizes) == 240
    assert max(sizes) >= 5 * min(sizes)  # some clients hold many videos, some few
    even = partition_videos(LABELS, 40, "quantity-skew", seed=0, dirichlet_beta=1e4)
    assert max(len(p) for p in even) - min(len(p) for p in even) <= 3  # huge beta: nearly even


def test_dirichlet_label_skew_min_size_and_skew():
    for seed in range(3):
        parts = partition_videos(LABELS, 40, "dirichlet", seed=seed, dirichlet_beta=0.1, min_videos=2)
        assert min(len(p) for p in parts) >= 2
        assert sorted(flat(parts)) == list(range(240))
        # cut points are rounded, not truncated: the last client is not handed ~0.5 video per class
        assert len(parts[-1]) < 20
    skewed = np.mean([len(s) for s in label_sets(parts)])
    random = np.mean([len(s) for s in label_sets(partition_videos(LABELS, 40, "random", seed=2))])
    assert skewed < random


def test_dirichlet_gives_up_with_a_clear_error():
    labels = ["a"] * 5 + ["b"] * 5
    message = (
        rf"no draw in {DIRICHLET_MAX_DRAWS} gave each of 5 clients at least "
        r"min_videos=2 videos \(10 videos in 2 classes, dirichlet_beta=0.001\)"
    )
    with pytest.raises(ValueError, match=message):
        partition_videos(labels, 5, "dirichlet", seed=0, dirichlet_beta=1e-3, min_videos=2)


def test_errors():
    with pytest.raises(ValueError, match="clients must be an integer >= 1, got 0"):
        partition_videos(LABELS, 0, "random", seed=0)
    with pytest.raises(
        ValueError,
        match=r"partition must be one of \('random', 'by-class', 'quantity-skew', "
        r"'dirichlet', 'by-degradation'\), got 'iid'",
    ):
        partition_videos(LABELS, 4, "iid", seed=0)
    with pytest.raises(ValueError, match="dirichlet_beta must be > 0, got 0"):
        partition_videos(LABELS, 4, "dirichlet", seed=0, dirichlet_beta=0)
    with pytest.raises(
        ValueError, match=("clients=241 with min_videos=1 needs at least 241 videos, but there are 240")
    ):
        partition_videos(LABELS, 241, "random", seed=0)
    with pytest.raises(ValueError, match=("clients=50 with min_videos=5 needs at least 250 videos, but there are 240")):
        partition_videos(LABELS, 50, "quantity-skew", seed=0, min_videos=5)
    with pytest.raises(ValueError, match="min_videos must be an integer >= 1, got 0"):
        partition_videos(LABELS, 4, "random", seed=0, min_videos=0)


def test_partition_table_and_summary():
    labels = ["cat", "dog", "cat", "owl"]
    names = ["v0", "v1", "v2", "v3"]
    parts = [[0, 2], [1, 3]]
    table = partition_table(parts, labels, names)
    assert table.schema == pa.schema(
        [("client", pa.int32()), ("video", pa.string()), ("video_index", pa.int32()), ("label", pa.string())]
    )
    assert table.to_pydict() == {
        "client": [0, 0, 1, 1],
        "video": ["v0", "v2", "v1", "v3"],
        "video_index": [0, 2, 1, 3],
        "label": ["cat", "cat", "dog", "owl"],
    }
    assert partition_summary(parts, labels) == [
        {"client": 0, "videos": 2, "classes": ["cat"], "n_classes": 1},
        {"client": 1, "videos": 2, "classes": ["dog", "owl"], "n_classes": 2},
    ]
    with pytest.raises(ValueError, match="3 names for 4 labels"):
        partition_table(parts, labels, names[:3])
    with pytest.raises(ValueError, match=r"client 1 has video index 9, outside 0..3"):
        partition_table([[0], [9]], labels, names)


# ----------------------------------------------------------------------------- by-degradation


def test_by_degradation_splits_videos_as_random_does():
    """The same draw as "random": the two partitions differ only in the clients' degradations."""
    for seed in (0, 5):
        assert partition_videos(LABELS, 7, "by-degradation", seed) == partition_videos(LABELS, 7, "random", seed)


def test_client_degradations_kinds_in_turn_within_their_ranges():
    devices = client_degradations(400, seed=3)
    assert [d.name for d in devices] == [DEVICE_KINDS[c % 4] for c in range(400)]
    assert DEVICE_KINDS == ("bicubic", "blur", "h264", "hevc")
    assert all(d.params == () for d in devices[0::4])
    sigmas = [dict(d.params)["sigma"] for d in devices[1::4]]
    crfs = [dict(d.params)["crf"] for d in devices[2::4]]
    qps = [dict(d.params)["qp"] for d in devices[3::4]]
    assert 1.0 <= min(sigmas) and max(sigmas) <= 2.0 and all(s == round(s, 2) for s in sigmas)
    assert sorted(set(crfs)) == list(range(18, 36))  # 100 draws reach every integer of 18..35 (and no other)
    assert sorted(set(qps)) == list(range(22, 38))
    assert all(isinstance(v, int) for v in crfs + qps)
    assert {dict(d.params)["sigma"] for d in devices[2::4]} == {1.5}  # H.264 is FCA2's: blur 1.5 first
    assert DEVICE_RANGES == {"blur": ("sigma", 1.0, 2.0), "h264": ("crf", 18, 35), "hevc": ("qp", 22, 37)}


def test_client_degradations_are_seeded_by_the_data_seed_and_client():
    """Client c's draw is default_rng([seed, 0xDE6, c]): the same whatever the number of clients."""
    devices = client_degradations(8, seed=0)
    assert [str(d) for d in devices] == [
        "bicubic",
        "blur(sigma=1.38)",
        "h264(crf=30, sigma=1.5)",
        "hevc(qp=36)",
        "bicubic",
        "blur(sigma=1.54)",
        "h264(crf=27, sigma=1.5)",
        "hevc(qp=34)",
    ]
    assert dict(devices[1].params)["sigma"] == round(float(np.random.default_rng([0, 0xDE6, 1]).uniform(1, 2)), 2)
    assert dict(devices[2].params)["crf"] == int(np.random.default_rng([0, 0xDE6, 2]).integers(18, 36))
    assert client_degradations(8, seed=0) == devices  # deterministic
    assert client_degradations(5, seed=0) == devices[:5]  # more clients do not move the first ones
    assert client_degradations(8, seed=1) != devices
    with pytest.raises(ValueError, match="clients must be an integer >= 1, got 0"):
        client_degradations(0, seed=0)


def test_evaluation_degradations_every_kind_at_the_middle_of_its_range():
    assert [str(d) for d in evaluation_degradations(6)] == [
        "bicubic",
        "blur(sigma=1.5)",
        "h264(crf=26, sigma=1.5)",
        "hevc(qp=29)",
        "bicubic",
        "blur(sigma=1.5)",
    ]
    assert evaluation_degradations(0) == []


def test_with_degradations_carries_each_clients_device():
    videos = [VideoEntry(f"/v{i}.mkv", "a", f"v{i}", lr_path=f"/lr{i}" if i == 2 else None) for i in range(6)]
    devices = [Degradation.of("blur", {"sigma": 1.25}), Degradation.of("hevc", {"qp": 30})]
    out = with_degradations(videos, [[0, 2], [3]], [4, 1], devices)
    assert [(v.degradation, v.degradation_params) for v in out] == [
        ("blur", (("sigma", 1.25),)),
        ("blur", (("sigma", 1.5),)),
        ("blur", (("sigma", 1.25),)),
        ("hevc", (("qp", 30),)),
        ("bicubic", ()),
        ("", ()),
    ]
    assert out[2].lr_path is None  # made from the HR video by its device's degradation, not the dataset's twin
    assert out[5] is videos[5] and videos[0].degradation == ""  # untouched: neither a client's nor evaluated
    assert out[2].segment(0, 3).whole() == out[2]  # a segment keeps its video's degradation
    with pytest.raises(ValueError, match="2 degradations for 1 clients"):
        with_degradations(videos, [[0]], [], devices)


def test_partition_table_records_each_clients_degradation():
    devices = [Degradation.of("h264", {"sigma": 1.5, "crf": 27}), Degradation.of("bicubic")]
    table = partition_table([[0, 2], [1]], ["a", "b", "a"], ["v0", "v1", "v2"], devices).to_pydict()
    assert table["degradation"] == ["h264", "h264", "bicubic"]
    assert table["degradation_params"] == ['{"crf": 27, "sigma": 1.5}'] * 2 + ["{}"]
    with pytest.raises(ValueError, match="1 degradations for 2 clients"):
        partition_table([[0, 2], [1]], ["a", "b", "a"], ["v0", "v1", "v2"], devices[:1])
