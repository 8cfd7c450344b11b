"""Checkpoints: a round's whole state as one folder that appears by a rename, checked by a manifest on resume.

After round t the coordinator writes ``checkpoint/round-<t>/``: ``global.safetensors``, ``server_state.safetensors``
(tensors in safetensors, no pickle), ``state.json`` (the round and the run's fixed numbers), the result tables as of
round t (hard links to ``rounds.parquet`` and ``clients.parquet``, which are only ever replaced, never changed in
place) and ``manifest.json``, written last, naming every file with its size and sha256. The folder is built as
``checkpoint/.round-<t>.partial/``, each file and the folder fsynced, then renamed into place and the parent
fsynced: a crash leaves the round's folder whole or not there at all. :func:`latest_checkpoint` takes the newest
folder whose files match its manifest, else the one before (the two newest are kept), and says what it passed over.

Run folders of the older layout (``checkpoint/state.json`` beside the two tensor files) still load: that
checkpoint is taken when no round folder is complete, and removed once two round folders are.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from fedvsr.platform.results import atomic_write, fsync_dir, fsync_file

#: the checkpoints kept: the newest, and the one a resume falls back to when the newest does not verify
KEEP = 2
MANIFEST = "manifest.json"
TENSORS = ("global.safetensors", "server_state.safetensors")
_ROUND = re.compile(r"^round-(\d+)$")
_PARTIAL = re.compile(r"^\.round-\d+\.partial$")


def save_arrays(path: str | os.PathLike, arrays: dict[str, np.ndarray], durable: bool = True) -> None:
    data = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    atomic_write(Path(path), lambda tmp: save_file(data, tmp), durable=durable)


def load_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    return dict(load_file(str(path)))


@dataclass
class Checkpoint:
    """A checkpoint found by :func:`latest_checkpoint`."""

    round: int
    params: dict[str, np.ndarray]
    server_state: dict[str, np.ndarray]
    extra: dict[str, Any]  #: the rest of ``state.json`` (bicubic and initial scores)
    folder: Path  #: the round folder (or ``checkpoint/`` itself for the older layout)
    legacy: bool = False  #: the older layout: no manifest, no result tables inside


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def round_folder(ckpt_dir: str | os.PathLike, round: int) -> Path:
    return Path(ckpt_dir) / f"round-{round:05d}"


def save_checkpoint(
    ckpt_dir: str | os.PathLike,
    round: int,
    params: dict[str, np.ndarray],
    server_state: dict[str, np.ndarray],
    extra: dict[str, Any] | None = None,
    files: dict[str, Path] | None = None,
    before_publish: Callable[[], None] | None = None,
) -> Path:
    """Write round ``round``'s checkpoint folder (module docstring) and return it. ``files``: other files of the
    round (name in the folder -> its path now), hard-linked (copied where links are not allowed).
    ``before_publish()`` runs when the folder is complete and fsynced but not yet renamed (a testing hook)."""
    d = Path(ckpt_dir)
    d.mkdir(parents=True, exist_ok=True)
    final = round_folder(d, round)
    tmp = d / f".{final.name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_arrays(tmp / TENSORS[0], params, durable=False)
    save_arrays(tmp / TENSORS[1], server_state, durable=False)
    (tmp / "state.json").write_text(json.dumps({"round": round, **(extra or {})}, indent=2) + "\n")
    for name, src in (files or {}).items():
        try:
            os.link(src, tmp / name)
        except OSError:  # a file system without hard links (or another device): a copy
            shutil.copyfile(src, tmp / name)
    names = sorted(p.name for p in tmp.iterdir())
    for name in names:
        fsync_file(tmp / name)
    manifest = {
        "round": round,
        "files": {n: {"bytes": (tmp / n).stat().st_size, "sha256": _sha256(tmp / n)} for n in names},
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    fsync_file(tmp / MANIFEST)
    fsync_dir(tmp)
    if before_publish is not None:
        before_publish()
    if final.exists():  # a round redone after a crash that had published it: the new folder replaces it
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(d)
    return final


def _verify(folder: Path) -> str:
    """Why ``folder`` is not a complete checkpoint, or "" when every file matches its manifest."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        files = manifest["files"]
    except FileNotFoundError:
        return "no manifest.json (the round's checkpoint was not finished)"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"manifest.json cannot be read: {err}"
    missing = [n for n in (*TENSORS, "state.json") if n not in files]
    if missing:
        return f"manifest.json does not name {', '.join(missing)}"
    for name, want in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != want["bytes"] or _sha256(path) != want["sha256"]:
            return f"{name} does not match its sha256 in manifest.json"
    return ""


def checkpoint_rounds(ckpt_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """The round folders under ``ckpt_dir`` (complete or not), newest first."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    found = [(int(m[1]), p) for p in d.iterdir() if (m := _ROUND.match(p.name)) and p.is_dir()]
    return sorted(found, reverse=True)


def _legacy_round(d: Path) -> int | None:
    try:
        return int(json.loads((d / "state.json").read_text())["round"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def latest_checkpoint(
    ckpt_dir: str | os.PathLike, passed_over: list[tuple[str, str]] | None = None
) -> Checkpoint | None:
    """The newest complete checkpoint in ``ckpt_dir`` (module docstring), or None when there is none. The newer
    folders that did not verify are appended to ``passed_over`` as (path, why)."""
    d = Path(ckpt_dir)
    passed = passed_over if passed_over is not None else []
    for _, folder in checkpoint_rounds(d):
        why = _verify(folder)
        if why:
            passed.append((str(folder), why))
            continue
        state = json.loads((folder / "state.json").read_text())
        return Checkpoint(
            int(state.pop("round")), load_arrays(folder / TENSORS[0]), load_arrays(folder / TENSORS[1]), state, folder
        )
    if _legacy_round(d) is not None and all((d / n).is_file() for n in TENSORS):
        state = json.loads((d / "state.json").read_text())
        return Checkpoint(
            int(state.pop("round")), load_arrays(d / TENSORS[0]), load_arrays(d / TENSORS[1]), state, d, legacy=True
        )
    return None


def prune_checkpoints(ckpt_dir: str | os.PathLike, keep: int = KEEP) -> int:
    """Remove all but the ``keep`` newest round folders (and unfinished ``.partial`` ones, and the older layout's
    files once ``keep`` round folders exist); returns the oldest round a resume may still go back to."""
    d = Path(ckpt_dir)
    rounds = checkpoint_rounds(d)
    for _, folder in rounds[keep:]:
        (folder / MANIFEST).unlink(missing_ok=True)  # incomplete from here on, should the removal be cut short
        shutil.rmtree(folder, ignore_errors=True)
    for p in d.iterdir():
        if _PARTIAL.match(p.name):
            shutil.rmtree(p, ignore_errors=True)
    kept = [r for r, _ in rounds[:keep]]
    legacy = _legacy_round(d)
    if legacy is not None:
        if len(kept) >= keep:
            for name in ("state.json", *TENSORS):
                (d / name).unlink(missing_ok=True)
        else:
            kept.append(legacy)
    fsync_dir(d)
    return min(kept) if kept else 0


def latest_weights(ckpt_dir: str | os.PathLike) -> Path | None:
    """The global weights of the newest checkpoint in ``ckpt_dir`` with a manifest (either layout), unverified:
    for reading a run that has not finished."""
    d = Path(ckpt_dir)
    for _, folder in checkpoint_rounds(d):
        if (folder / MANIFEST).is_file() and (folder / TENSORS[0]).is_file():
            return folder / TENSORS[0]
    return d / TENSORS[0] if (d / TENSORS[0]).is_file() else None
