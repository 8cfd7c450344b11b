"""Splitting a dataset's videos among simulated clients (FedVSR, arXiv 2503.13745, section 5.1).

The paper builds 40 clients of six videos each in two set-ups: "less heterogeneous", where
videos are assigned to clients at random (``"random"``), and "more heterogeneous", where every
client's videos come from a single content class, e.g. only "archery" clips (``"by-class"``).
Two common non-IID schemes complete the set: ``"quantity-skew"`` (random content, client sizes
from a Dirichlet over clients) and ``"dirichlet"`` (label-distribution skew: each class split
among clients by Dirichlet proportions, Hsu et al. 2019, arXiv 1909.06335).

Whole videos are the unit, never frames, so a client owns complete clips as a real device
would. (The authors' public code, by contrast, splits the frame-level dataset into contiguous
equal slices for its "iid" case and into 600-frame class chunks for Kinetics.) Every result is
deterministic in all arguments: one ``numpy.random.default_rng(seed)`` drives every draw.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from numbers import Real

import numpy as np
import pyarrow as pa

PARTITIONS = ("random", "by-class", "quantity-skew", "dirichlet")

DIRICHLET_MAX_DRAWS = 1000  # "dirichlet": draws tried before giving up on min_videos


def partition_videos(
    labels: Sequence[str],
    clients: int,
    scheme: str,
    seed: int,
    dirichlet_beta: float = 0.5,
    min_videos: int = 1,
) -> list[list[int]]:
    """For each client 0..clients-1, the sorted indices (into ``labels``) of the videos it owns.

    ``labels[i]`` is video i's content class. No video belongs to two clients.
    "random": shuffle, then deal as evenly as possible (sizes differ by at most 1); all used.
    "by-class": client k gets class ``sorted(set(labels))[k % n_classes]``; clients sharing a
    class split its shuffled videos evenly; classes no client draws stay unused.
    "quantity-skew": all videos, shuffled, in blocks whose sizes are min_videos plus a
    Dirichlet(dirichlet_beta) share of the rest.
    "dirichlet": each class's videos split among all clients by Dirichlet(dirichlet_beta)
    proportions; redrawn (at most DIRICHLET_MAX_DRAWS times) until every client has at least
    min_videos.
    """
    n = len(labels)
    if scheme not in PARTITIONS:
        raise ValueError(f"partition must be one of {PARTITIONS}, got {scheme!r}")
    if isinstance(clients, bool) or not isinstance(clients, (int, np.integer)) or clients < 1:
        raise ValueError(f"clients must be an integer >= 1, got {clients!r}")
    if isinstance(min_videos, bool) or not isinstance(min_videos, (int, np.integer)) or min_videos < 1:
        raise ValueError(f"min_videos must be an integer >= 1, got {min_videos!r}")
    if not (isinstance(dirichlet_beta, Real) and np.isfinite(dirichlet_beta) and dirichlet_beta > 0):
        raise ValueError(f"dirichlet_beta must be > 0, got {dirichlet_beta!r}")
    if clients * min_videos > n:
        raise ValueError(
            f"partition {scheme!r}: clients={clients} with min_videos={min_videos} needs at least "
            f"{clients * min_videos} videos, but there are {n}"
        )
    clients, min_videos = int(clients), int(min_videos)
    rng = np.random.default_rng(seed)
    if scheme == "random":
        parts = np.array_split(rng.permutation(n), clients)
    elif scheme == "by-class":
        parts = _by_class(labels, clients, min_videos, rng)
    elif scheme == "quantity-skew":
        parts = _quantity_skew(n, clients, dirichlet_beta, min_videos, rng)
    else:
        parts = _dirichlet_label_skew(labels, clients, dirichlet_beta, min_videos, rng)
    return [sorted(int(i) for i in part) for part in parts]


def _class_indices(labels: Sequence[str]) -> dict[str, list[int]]:
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_class[str(label)].append(i)
    return dict(sorted(by_class.items()))


def _by_class(
    labels: Sequence[str], clients: int, min_videos: int, rng: np.random.Generator
) -> list[np.ndarray]:
    by_class = _class_indices(labels)
    classes = list(by_class)
    sharers: dict[str, list[int]] = defaultdict(list)
    for k in range(clients):
        sharers[classes[k % len(classes)]].append(k)
    parts: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * clients
    for cls, owners in sharers.items():
        videos = by_class[cls]
        if len(videos) // len(owners) < min_videos:
            raise ValueError(
                f"partition 'by-class': class {cls!r} has {len(videos)} videos but {len(owners)} of the "
                f"{clients} clients share it ({len(labels)} videos in {len(classes)} classes); every "
                f"client needs at least min_videos={min_videos}: use fewer clients"
            )
        for owner, chunk in zip(owners, np.array_split(rng.permutation(videos), len(owners)), strict=True):
            parts[owner] = chunk
    return parts


def _dirichlet(rng: np.random.Generator, k: int, beta: float) -> np.ndarray:
    p = np.nan_to_num(rng.dirichlet(np.full(k, beta)), nan=0.0, posinf=0.0, neginf=0.0)
    if p.sum() <= 0:  # numerically degenerate draw at a tiny beta: all mass on one client
        p = np.zeros(k)
        p[rng.integers(k)] = 1.0
    return p / p.sum()


def _quantity_skew(
    n: int, clients: int, beta: float, min_videos: int, rng: np.random.Generator
) -> list[np.ndarray]:
    extra = n - clients * min_videos
    share = _dirichlet(rng, clients, beta) * extra
    sizes = np.floor(share).astype(np.int64)
    leftover = extra - int(sizes.sum())
    # hand the rounding leftovers to the largest fractional parts (ties: lowest client id)
    sizes[np.argsort(-(share - sizes), kind="stable")[:leftover]] += 1
    sizes += min_videos
    return np.split(rng.permutation(n), np.cumsum(sizes)[:-1])


def _dirichlet_label_skew(
    labels: Sequence[str], clients: int, beta: float, min_videos: int, rng: np.random.Generator
) -> list[list[int]]:
    by_class = _class_indices(labels)
    for _ in range(DIRICHLET_MAX_DRAWS):
        parts: list[list[int]] = [[] for _ in range(clients)]
        for videos in by_class.values():
            shuffled = rng.permutation(videos)
            # rounded (not truncated) cut points, so neither the first nor the last client is favoured
            cuts = np.rint(np.cumsum(_dirichlet(rng, clients, beta))[:-1] * len(shuffled)).astype(np.int64)
            for k, chunk in enumerate(np.split(shuffled, cuts)):
                parts[k].extend(chunk.tolist())
        if min(len(part) for part in parts) >= min_videos:
            return parts
    raise ValueError(
        f"partition 'dirichlet': no draw in {DIRICHLET_MAX_DRAWS} gave each of {clients} clients at "
        f"least min_videos={min_videos} videos ({len(labels)} videos in {len(by_class)} classes, "
        f"dirichlet_beta={beta:g}); raise dirichlet_beta or lower clients or min_videos"
    )


def partition_table(parts: list[list[int]], labels: Sequence[str], names: Sequence[str]) -> pa.Table:
    """One row per (client, video): client (int32), video (name), video_index (int32), label."""
    if len(names) != len(labels):
        raise ValueError(f"partition_table: {len(names)} names for {len(labels)} labels")
    clients: list[int] = []
    indices: list[int] = []
    for client, part in enumerate(parts):
        for i in part:
            if not 0 <= i < len(labels):
                raise ValueError(
                    f"partition_table: client {client} has video index {i}, outside 0..{len(labels) - 1}"
                )
            clients.append(client)
            indices.append(int(i))
    return pa.table(
        {
            "client": pa.array(clients, type=pa.int32()),
            "video": pa.array([str(names[i]) for i in indices], type=pa.string()),
            "video_index": pa.array(indices, type=pa.int32()),
            "label": pa.array([str(labels[i]) for i in indices], type=pa.string()),
        }
    )


def partition_summary(parts: list[list[int]], labels: Sequence[str]) -> list[dict]:
    """Per client: {"client", "videos" (count), "classes" (sorted distinct labels), "n_classes"}."""
    summary = []
    for client, part in enumerate(parts):
        classes = sorted({str(labels[i]) for i in part})
        summary.append({"client": client, "videos": len(part), "classes": classes, "n_classes": len(classes)})
    return summary
