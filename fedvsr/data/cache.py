"""An on-disk cache of degraded LR videos (and small decoded HR ones), shared by the workers of a node.

A codec degradation re-encodes a whole video (and libx264 / libx265 are not even bit-reproducible
across processes, see :mod:`fedvsr.data.video`), so the LR clip of a (source video, degradation,
parameters, scale) is computed once per node and stored as ``<key>.npy`` in one folder:

* the key (:func:`cache_key`) hashes the source's absolute path, size and modification time (for a
  frame folder: those of every frame file), the pre-made LR twin's the same way when there is one, the
  degradation's own name (``blur-h264`` and ``h264`` share entries), every parameter, the scale and
  :data:`CACHE_VERSION`; an edited video gets a new key, so no entry is ever stale;
* an entry is written to a temporary file in the same folder and renamed over ``<key>.npy`` with
  ``os.replace``: a reader sees a whole file or none;
* an entry is built by one process of a node at a time (an exclusive ``flock`` on a lock file named by a hash of
  the entry's path, in :data:`LOCKS` in the node's temporary folder, so the cache folder holds entries only): two
  workers, or two sweep trials side by side, that need the same missing entry do not both encode it -- the
  second waits, then reads the first one's. This matters beyond the saved work: the codecs are not
  bit-reproducible across processes, so two builders would train on two different LR clips, and a trial's
  numbers would depend on which other trial ran beside it. Where no lock file can be made, it builds without;
* an entry is read with ``np.load(mmap_mode="c")`` (copy-on-write: the pages are shared through the page
  cache, writes stay private); an entry that cannot be read or has the wrong shape or dtype is deleted
  and rebuilt, never an error.

``data.lr_cache`` chooses the folder: ``''`` = ``$FEDVSR_CACHE/lr`` (``~/.cache/fedvsr/lr``); ``none`` = no
cache (``off`` too when given from Python: YAML reads a bare ``off`` as false); anything else = that folder.
On a multi-node cluster a node-local disk is the right place: each node builds its own entries.
:data:`STATS` counts this process's hits, misses, writes and rebuilt corrupt entries (``hr_hits`` and
``hr_misses`` for decoded HR entries).

Decoded HR videos are kept in the same folder (``<key>.hr.npy``, :func:`cached_decoded`) when they are small
enough (``data.hr_cache_mb``, default 64 MiB): PyAV decoding was 13% of a worker's time on many small
clients, while reading an entry back costs about nothing. Raw frames are large (a 720p frame is 2.6 MiB), so
bigger videos are decoded each time rather than filling the disk.

What a scan learnt by decoding a video (:mod:`fedvsr.data.probe`: its frame count and size, or why it cannot be
read) is kept there too, as ``<key>.probe.json`` (:func:`cached_probe`, keyed by the source's fingerprint like
a decoded HR entry), so a dataset is decoded once per node and later scans only read these answers.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

#: the lock files of entries being built (one per entry ever built on this node, empty files)
LOCKS = Path(tempfile.gettempdir()) / f"fedvsr-cache-locks-{os.getuid()}"

#: bumped whenever a degradation's output changes for the same parameters, so old entries are not used
CACHE_VERSION = 1

#: this process's ``hits``, ``misses``, ``writes`` and ``corrupt`` (entries deleted and rebuilt), ``hr_hits`` and
#: ``hr_misses`` (decoded HR entries read, and written), ``probe_hits`` and ``probe_misses`` (probe answers read,
#: and found by decoding)
STATS: Counter[str] = Counter()


def cache_dir() -> Path:
    """The folder of fedvsr's caches and built-in videos: ``$FEDVSR_CACHE``, else ``~/.cache/fedvsr``."""
    return Path(os.environ.get("FEDVSR_CACHE", Path.home() / ".cache" / "fedvsr"))


def cache_root(setting: str = "") -> Path | None:
    """The cache folder for ``data.lr_cache``: ``''`` -> ``$FEDVSR_CACHE/lr``, ``'none'`` / ``'off'`` -> None (no
    cache), else the path."""
    if setting in ("none", "off"):
        return None
    if setting:
        return Path(setting).expanduser()
    return cache_dir() / "lr"


def _fingerprint(path: str | os.PathLike) -> dict[str, object]:
    """Absolute path, size and mtime_ns of a file; of a frame folder, those of every file in it."""
    p = Path(path).resolve()
    if p.is_dir():
        files = sorted((f for f in p.iterdir() if f.is_file()), key=lambda f: f.name)
        listing = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
        return {"path": str(p), "files": hashlib.sha256(json.dumps(listing).encode()).hexdigest()}
    st = p.stat()
    return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def cache_key(
    source: str | os.PathLike,
    degradation: str,
    scale: int,
    params: dict[str, object],
    lr_source: str | os.PathLike | None = None,
) -> str:
    """SHA-256 (hex) naming the LR clip of ``source`` under ``degradation`` with ``params`` at ``scale``."""
    from fedvsr.data.degrade import canonical

    record = {
        "version": CACHE_VERSION,
        "source": _fingerprint(source),
        "lr_source": None if lr_source is None else _fingerprint(lr_source),
        "degradation": canonical(degradation),
        "scale": scale,
        "params": {k: params[k] for k in sorted(params)},
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def decoded_key(source: str | os.PathLike) -> str:
    """SHA-256 (hex) naming the decoded frames of ``source`` (its fingerprint and :data:`CACHE_VERSION`)."""
    record = {"version": CACHE_VERSION, "decoded": _fingerprint(source)}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def cached_decoded(
    root: Path | None, source: str | os.PathLike, decode: Callable[[], np.ndarray], max_bytes: float
) -> np.ndarray:
    """The decoded frames of ``source`` (``decode()``), kept under ``root`` as ``<key>.hr.npy`` when they take at
    most ``max_bytes`` (``data.hr_cache_mb``): an entry is read like an LR one (shared pages, corrupt entries
    rebuilt); a larger video is decoded every time, nothing is written."""
    if root is None or max_bytes <= 0:
        return decode()
    try:
        path = Path(root) / f"{decoded_key(source)}.hr.npy"
    except OSError:  # a missing or unreadable source: decoding it says so in its own words
        return decode()
    return _cached(path, decode, None, "hr_", keep=lambda arr: arr.nbytes <= max_bytes)


def _cached(
    path: Path,
    build: Callable[[], np.ndarray],
    shape: tuple[int, ...] | None,
    prefix: str = "",
    keep: Callable[[np.ndarray], bool] = lambda arr: True,
) -> np.ndarray:
    """The entry at ``path``, or ``build()``, stored there when ``keep`` says so (a write that fails costs the
    saving, not the result); counted in :data:`STATS` as ``<prefix>hits`` / ``<prefix>misses``."""
    arr = _read(path, shape)
    if arr is not None:
        STATS[f"{prefix}hits"] += 1
        return arr
    with _building(path):  # one builder per entry: the others wait here and read its entry (module docstring)
        arr = _read(path, shape)
        if arr is not None:
            STATS[f"{prefix}hits"] += 1
            STATS["waited"] += 1
            return arr
        arr = build()
        if keep(arr):
            STATS[f"{prefix}misses"] += 1
            try:
                _write(path, arr)
            except OSError:
                STATS["write_errors"] += 1
    return arr


@contextmanager
def _building(path: Path) -> Iterator[None]:
    """Hold the exclusive lock of the entry ``path`` (released when the process dies). Where the lock file cannot
    be made, nothing is held."""
    name = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]
    try:
        LOCKS.mkdir(parents=True, exist_ok=True)
        fd = os.open(LOCKS / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock; the lock file stays (removing it would race with a waiter)


def _read(path: Path, shape: tuple[int, ...] | None) -> np.ndarray | None:
    """The entry at ``path``, or None when missing; a corrupt entry is deleted (and None returned)."""
    try:
        arr = np.load(path, mmap_mode="c", allow_pickle=False)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, EOFError):
        arr = None
    if arr is not None and arr.dtype == np.uint8 and arr.ndim == 4 and (shape is None or arr.shape == shape):
        return np.asarray(arr)  # a plain ndarray over the copy-on-write mapping
    STATS["corrupt"] += 1
    path.unlink(missing_ok=True)
    return None


def _write(path: Path, arr: np.ndarray) -> None:
    """Save ``arr`` as ``path`` atomically: a temporary file in the same folder, then ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.stem}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(arr), allow_pickle=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    STATS["writes"] += 1


def cached_lr(
    root: Path | None, key: str, build: Callable[[], np.ndarray], shape: tuple[int, ...] | None = None
) -> np.ndarray:
    """The cached array ``key`` under ``root``, or ``build()`` stored there first.

    ``shape`` is what the entry must hold (``(T, h, w, 3)``); an entry of another shape or dtype, or one
    that cannot be read, is deleted and rebuilt. ``root = None`` builds every time. A cache folder that
    cannot be written (read-only, full disk) costs the saving, not the result.
    """
    if root is None:
        return build()
    return _cached(Path(root) / f"{key}.npy", build, shape)


def probe_key(source: str | os.PathLike) -> str:
    """SHA-256 (hex) naming what a probe learnt about ``source`` (its fingerprint and :data:`CACHE_VERSION`)."""
    record = {"version": CACHE_VERSION, "probe": _fingerprint(source)}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def cached_probe(
    root: Path | None, source: str | os.PathLike, probe: Callable[[], tuple[dict[str, object], bool]]
) -> dict[str, object]:
    """The probe answer of ``source`` kept under ``root`` as ``<key>.probe.json``, or ``probe()``'s, stored there
    when ``probe`` says it may be (``(answer, keep)``: an error that may pass, such as a permission, is not
    kept). ``root = None``, or a source that cannot be fingerprinted, probes every time; an entry that cannot be
    read as a JSON object is deleted and probed again; one that cannot be written costs the saving."""
    try:
        path = None if root is None else Path(root) / f"{probe_key(source)}.probe.json"
    except OSError:  # a missing or unreadable source: the probe says so in its own words
        path = None
    answer = None if path is None else _read_json(path)
    if answer is not None:
        STATS["probe_hits"] += 1
        return answer
    answer, keep = probe()
    STATS["probe_misses"] += 1
    if path is not None and keep:
        try:
            _write_text(path, json.dumps(answer, sort_keys=True))
        except OSError:
            STATS["write_errors"] += 1
    return answer


def _read_json(path: Path) -> dict[str, object] | None:
    """The JSON object at ``path``, or None when missing; anything else there is deleted (and None returned)."""
    try:
        answer = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        answer = None
    if isinstance(answer, dict):
        return answer
    STATS["corrupt"] += 1
    path.unlink(missing_ok=True)
    return None


def _write_text(path: Path, text: str) -> None:
    """Save ``text`` as ``path`` atomically (a temporary file in the same folder, then ``os.replace``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.stem}.{uuid.uuid4().hex}.tmp"
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
