"""Checkpoints: tensors in safetensors (no pickle), progress in JSON, each file written atomically.

``checkpoint/state.json`` is written last, so it only ever names a round whose tensors are complete."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from fedvsr.platform.results import atomic_write, write_json_atomic


def save_arrays(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    data = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    atomic_write(Path(path), lambda tmp: save_file(data, tmp))


def load_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    return dict(load_file(str(path)))


def save_checkpoint(ckpt_dir: str | os.PathLike, round: int, params: dict[str, np.ndarray],
                    server_state: dict[str, np.ndarray], extra: dict[str, Any] | None = None) -> None:
    d = Path(ckpt_dir)
    save_arrays(d / "global.safetensors", params)
    save_arrays(d / "server_state.safetensors", server_state)
    write_json_atomic(d / "state.json", {"round": round, **(extra or {})})


def load_checkpoint(ckpt_dir: str | os.PathLike) -> tuple[int, dict[str, np.ndarray], dict[str, np.ndarray], dict]:
    d = Path(ckpt_dir)
    state_path = d / "state.json"
    if not state_path.exists():
        raise FileNotFoundError(f"no checkpoint in {str(d)!r} (state.json is missing)")
    state = json.loads(state_path.read_text())
    params = load_arrays(d / "global.safetensors")
    server_state = load_arrays(d / "server_state.safetensors")
    return int(state.pop("round")), params, server_state, state
