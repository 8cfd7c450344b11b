"""Splitting a dataset's videos among simulated clients (FedVSR, arXiv 2503.13745, section 5.1).

The paper builds 40 clients of six videos each in two set-ups: "less heterogeneous", where
videos are assigned to clients at random (``"random"``), and "more heterogeneous", where every
client's videos come from a single content class, e.g. only "archery" clips (``"by-class"``).
Two common non-IID schemes complete the set: ``"quantity-skew"`` (random content, client sizes
from a Dirichlet over clients) and ``"dirichlet"`` (label-distribution skew: each class split
among clients by Dirichlet proportions, Hsu et al. 2019, arXiv 1909.06335). ``"by-degradation"`` is
heterogeneity of the device rather than of the content: the videos are split exactly as ``"random"`` splits
them (the same draw), and each client's LR videos come from its own degradation, as real devices differ in
camera and codec (:func:`client_degradations`).

Whole videos are the unit, never frames, so a client owns complete clips as a real device
would. (The authors' public code, by contrast, splits the frame-level dataset into contiguous
equal slices for its "iid" case and into 600-frame class chunks for Kinetics.) Every result is
deterministic in all arguments: one ``numpy.random.default_rng(seed)`` drives every draw.
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np
import pyarrow as pa

PARTITIONS = ("random", "by-class", "quantity-skew", "dirichlet", "by-degradation")

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
    "by-degradation": the same split as "random" (the degradations are :func:`client_degradations`).
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
    if scheme in ("random", "by-degradation"):
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


def _by_class(labels: Sequence[str], clients: int, min_videos: int, rng: np.random.Generator) -> list[np.ndarray]:
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


def _quantity_skew(n: int, clients: int, beta: float, min_videos: int, rng: np.random.Generator) -> list[np.ndarray]:
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


# ----------------------------------------------------------------------------- by-degradation

#: the device kinds of ``by-degradation``, given to the clients in turn: client ``c`` gets kind ``c mod 4``
DEVICE_KINDS: tuple[str, ...] = ("bicubic", "blur", "h264", "hevc")
#: the parameter each kind draws and its range: blur's Gaussian sigma in HR pixels, uniform in [1.0, 2.0] and
#: rounded to 0.01 (FCA2: 1.5; BasicSR's BD: 1.6); H.264's CRF, an integer in 18..35 (FCA2 tests 15 / 25 / 35);
#: HEVC's QP, an integer in 22..37 (FCVSR's 22 / 27 / 32 / 37)
DEVICE_RANGES: dict[str, tuple[str, float, float]] = {
    "blur": ("sigma", 1.0, 2.0),
    "h264": ("crf", 18, 35),
    "hevc": ("qp", 22, 37),
}
#: the blur before H.264 (``h264`` is FCA2's degradation: Gaussian blur, every scale-th pixel, H.264), fixed
H264_SIGMA = 1.5
_DEVICE_STREAM = 0xDE6  # the stream of the data seed the device parameters are drawn from


@dataclass(frozen=True)
class Degradation:
    """One device's degradation: a :mod:`fedvsr.data.degrade` name and its parameters, as ``(key, value)`` pairs
    sorted by key (hashable, so a frozen video entry can carry it)."""

    name: str
    params: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, name: str, params: dict[str, Any] | None = None) -> Degradation:
        return cls(name, tuple(sorted((params or {}).items())))

    def __str__(self) -> str:
        """``"h264(crf=27, sigma=1.5)"``, ``"bicubic"``."""
        args = ", ".join(f"{k}={v}" for k, v in self.params)
        return f"{self.name}({args})" if args else self.name


def _device(kind: str, rng: np.random.Generator | None) -> Degradation:
    """Degradation of ``kind``, its parameter drawn from ``rng`` within :data:`DEVICE_RANGES`, or the middle of
    the range (integers rounded down) when ``rng`` is None."""
    if kind == "bicubic":
        return Degradation("bicubic")
    key, low, high = DEVICE_RANGES[kind]
    if isinstance(low, int):
        value: float | int = int(rng.integers(low, high + 1)) if rng is not None else (low + high) // 2
    else:
        value = round(float(rng.uniform(low, high)) if rng is not None else (low + high) / 2, 2)
    return Degradation.of(kind, {key: value, **({"sigma": H264_SIGMA} if kind == "h264" else {})})


def client_degradations(clients: int, seed: int) -> list[Degradation]:
    """``by-degradation``: client ``c``'s degradation, kind ``DEVICE_KINDS[c mod 4]`` (bicubic, blur, H.264, HEVC
    in turn), its parameter drawn from ``default_rng([seed, 0xDE6, c])`` within :data:`DEVICE_RANGES`. ``seed`` is
    the data seed (``data.seed``); a client's draw depends on (seed, c) only, not on the number of clients."""
    if isinstance(clients, bool) or not isinstance(clients, (int, np.integer)) or clients < 1:
        raise ValueError(f"clients must be an integer >= 1, got {clients!r}")
    return [
        _device(DEVICE_KINDS[c % len(DEVICE_KINDS)], np.random.default_rng([int(seed), _DEVICE_STREAM, c]))
        for c in range(int(clients))
    ]


def evaluation_degradations(videos: int) -> list[Degradation]:
    """``by-degradation``: evaluation video ``k`` (in the order of the evaluation videos) gets kind ``k mod 4`` at the
    middle of its range (blur sigma 1.5, H.264 CRF 26, HEVC QP 29), so the global model is judged on every kind of
    device, the same way whatever the seed."""
    return [_device(DEVICE_KINDS[k % len(DEVICE_KINDS)], None) for k in range(videos)]


def with_degradations(
    videos: Sequence[Any],
    client_videos: Sequence[Sequence[int]],
    eval_videos: Sequence[int],
    devices: Sequence[Degradation],
) -> list[Any]:
    """``videos`` (frozen video entries, :class:`fedvsr.data.video.VideoEntry`) with client ``c``'s videos
    (indices ``client_videos[c]``) carrying ``devices[c]`` and the evaluation videos carrying
    :func:`evaluation_degradations`; the others are unchanged. A carried degradation makes the LR video from the
    HR one, so a dataset's pre-made LR twin (made for ``data.degradation``) is dropped from those entries."""
    if len(devices) != len(client_videos):
        raise ValueError(f"with_degradations: {len(devices)} degradations for {len(client_videos)} clients")
    out = list(videos)

    def carry(i: int, device: Degradation) -> None:
        out[i] = dataclasses.replace(out[i], degradation=device.name, degradation_params=device.params, lr_path=None)

    for device, indices in zip(devices, client_videos, strict=True):
        for i in indices:
            carry(i, device)
    for i, device in zip(eval_videos, evaluation_degradations(len(eval_videos)), strict=True):
        carry(i, device)
    return out


def partition_table(
    parts: list[list[int]],
    labels: Sequence[str],
    names: Sequence[str],
    degradations: Sequence[Degradation] | None = None,
) -> pa.Table:
    """One row per (client, video): client (int32), video (name), video_index (int32), label; with
    ``degradations`` (one per client) also ``degradation`` (its name) and ``degradation_params`` (JSON)."""
    if len(names) != len(labels):
        raise ValueError(f"partition_table: {len(names)} names for {len(labels)} labels")
    if degradations is not None and len(degradations) != len(parts):
        raise ValueError(f"partition_table: {len(degradations)} degradations for {len(parts)} clients")
    clients: list[int] = []
    indices: list[int] = []
    for client, part in enumerate(parts):
        for i in part:
            if not 0 <= i < len(labels):
                raise ValueError(f"partition_table: client {client} has video index {i}, outside 0..{len(labels) - 1}")
            clients.append(client)
            indices.append(int(i))
    columns = {
        "client": pa.array(clients, type=pa.int32()),
        "video": pa.array([str(names[i]) for i in indices], type=pa.string()),
        "video_index": pa.array(indices, type=pa.int32()),
        "label": pa.array([str(labels[i]) for i in indices], type=pa.string()),
    }
    if degradations is not None:
        columns["degradation"] = pa.array([degradations[c].name for c in clients], type=pa.string())
        columns["degradation_params"] = pa.array(
            [json.dumps(dict(degradations[c].params), sort_keys=True) for c in clients], type=pa.string()
        )
    return pa.table(columns)


def partition_summary(parts: list[list[int]], labels: Sequence[str]) -> list[dict]:
    """Per client: {"client", "videos" (count), "classes" (sorted distinct labels), "n_classes"}."""
    summary = []
    for client, part in enumerate(parts):
        classes = sorted({str(labels[i]) for i in part})
        summary.append({"client": client, "videos": len(part), "classes": classes, "n_classes": len(classes)})
    return summary
