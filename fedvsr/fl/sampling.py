"""Seeded per-round client sampling (FedVSR, arXiv 2503.13745, Algorithm 1 line 3; section 5.1).

Each round the server picks a random subset S_t of the N clients (the paper: 4 of 40 per round).
The draw for round t depends only on (seed, t), never on earlier draws, so a run resumed from a
checkpoint at round t samples exactly the clients the uninterrupted run would have. The seed of
a client's local training depends only on (seed, t, client), so it is the same whichever
worker trains the client and in whatever order.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np

_SEED_MASK = (1 << 63) - 1


def _check_non_negative(**values: int) -> None:
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
            raise ValueError(f"{key} must be an integer >= 0, got {value!r}")


def sample_clients(seed: int, round: int, clients: int, per_round: int) -> list[int]:
    """Sorted distinct client ids drawn for ``round`` (1-based) without replacement.

    Uses ``np.random.default_rng([seed, round])``: the same (seed, round) always gives the same
    clients, independent of every other round.
    """
    _check_non_negative(seed=seed)
    if isinstance(round, bool) or not isinstance(round, Integral) or round < 1:
        raise ValueError(f"round must be an integer >= 1 (1-based), got {round!r}")
    if isinstance(clients, bool) or not isinstance(clients, Integral) or clients < 1:
        raise ValueError(f"clients must be an integer >= 1, got {clients!r}")
    if isinstance(per_round, bool) or not isinstance(per_round, Integral) or not 1 <= per_round <= clients:
        raise ValueError(f"clients_per_round must be in 1..clients={clients}, got {per_round!r}")
    rng = np.random.default_rng([int(seed), int(round)])
    chosen = rng.choice(int(clients), size=int(per_round), replace=False)
    return sorted(int(c) for c in chosen)


def client_seed(seed: int, round: int, client: int) -> int:
    """A 63-bit seed for ``client``'s local training in ``round``: SeedSequence([seed, round, client])."""
    _check_non_negative(seed=seed, round=round, client=client)
    state = np.random.SeedSequence([int(seed), int(round), int(client)]).generate_state(1, dtype=np.uint64)
    return int(state[0]) & _SEED_MASK
