"""Client partitions (FedVSR section 5.1: 40 clients x 6 videos; random vs one class per client)."""

import numpy as np
import pyarrow as pa
import pytest

from fedvsr.fl.partition import (
    DIRICHLET_MAX_DRAWS,
    PARTITIONS,
    partition_summary,
    partition_table,
    partition_videos,
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
        r"'dirichlet'\), got 'iid'",
    ):
        partition_videos(LABELS, 4, "iid", seed=0)
    with pytest.raises(ValueError, match="dirichlet_beta must be > 0, got 0"):
        partition_videos(LABELS, 4, "dirichlet", seed=0, dirichlet_beta=0)
    with pytest.raises(
        ValueError, match=("clients=241 with min_videos=1 needs at least 241 videos, but there are 240")
    ):
        partition_videos(LABELS, 241, "random", seed=0)
    with pytest.raises(
        ValueError, match=("clients=50 with min_videos=5 needs at least 250 videos, but there are 240")
    ):
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
