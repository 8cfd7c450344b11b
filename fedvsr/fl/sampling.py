"""Seeded per-round client sampling (FedVSR, arXiv 2503.13745, Algorithm 1 line 3; section 5.1).

Each round the server picks a random subset S_t of the N clients (the paper: 4 of 40 per round).
The draw for round t depends only on (seed, t), never on earlier draws, so a run resumed from a
checkpoint at round t samples exactly the clients the uninterrupted run would have. The seed of
a client's local training depends only on (seed, t, client), so it is the same whichever
worker trains the client and in whatever order.

Every other seeded draw of the federated policy derives from the same seed, with a salt (a constant added to
the generator's seed words) that keeps its stream apart from the others:

- sampling: ``default_rng([seed, round])`` (:func:`sample_clients`);
- local training: ``SeedSequence([seed, round, client])`` (:func:`client_seed`), then its epoch orders
  ``default_rng([client_seed, epoch])``;
- dropout (``fl.dropout``): ``default_rng([client_seed(seed, round, client), DROPOUT_SALT]).random()`` per sampled
  client: it does not report when the draw is below the rate (:func:`drops_out`);
- straggler speeds (``fl.stragglers`` = sigma): ``exp(sigma z)`` with ``z = default_rng([seed, SPEED_SALT])
  .standard_normal(clients)``, drawn once for all clients (:func:`client_speeds`).

A draw that depends on (seed, round, client) only is the same on resume, whichever worker trains the client.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np

_SEED_MASK = (1 << 63) - 1
#: the salt of the dropout draws (a client "drops" out: 0xD0)
DROPOUT_SALT = 0xD0
#: the salt of the straggler speeds ("speed": 0x5EED)
SPEED_SALT = 0x5EED


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


def drops_out(seed: int, round: int, client: int, rate: float) -> bool:
    """Whether sampled ``client`` fails to report in ``round`` (``fl.dropout`` = ``rate``): its draw
    ``default_rng([client_seed(seed, round, client), DROPOUT_SALT]).random()`` is below ``rate``; never at rate 0."""
    if rate <= 0:
        return False
    return bool(np.random.default_rng([client_seed(seed, round, client), DROPOUT_SALT]).random() < rate)


def client_speeds(seed: int, clients: int, sigma: float) -> np.ndarray:
    """Each client's speed (``fl.stragglers`` = ``sigma``): ``exp(sigma z_i)``, ``z = default_rng([seed,
    SPEED_SALT]).standard_normal(clients)``; all 1 at sigma 0."""
    if sigma <= 0:
        return np.ones(clients)
    return np.exp(sigma * np.random.default_rng([seed, SPEED_SALT]).standard_normal(clients))
