"""Errors of a run that the ``fedvsr`` command turns into one line and an exit code (no Ray import here)."""

from __future__ import annotations

from typing import Any


class RunFailed(RuntimeError):
    """A run stopped because a round trained fewer clients than ``fl.min_clients``; the message names the round,
    the reasons counted and what was kept. ``row`` is the failed round's row of ``rounds.parquet``."""

    def __init__(self, message: str, row: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.row = row or {}
