"""Token routing for token-routed MoE: which experts each token goes to, and capacity drops.

Only uniform routing for now: every token picks ``top_k`` distinct experts uniformly at random,
drawn from the generator the caller passes (one child stream of the scenario seed).
"""

from __future__ import annotations

import numpy as np

ROUTING_CHUNK_TOKENS = 16384  # bounds the (tokens x experts) random matrix drawn at once


def uniform_top_k_counts(num_tokens: int, num_experts: int, top_k: int, rng: np.random.Generator) -> np.ndarray:
    """Tokens routed to each expert when each token picks ``top_k`` distinct experts uniformly.

    Returns an int array of length ``num_experts`` summing to ``num_tokens * top_k``.
    """
    counts = np.zeros(num_experts, dtype=np.int64)
    for start in range(0, num_tokens, ROUTING_CHUNK_TOKENS):
        chunk = min(ROUTING_CHUNK_TOKENS, num_tokens - start)
        if top_k == num_experts:
            counts += chunk
            continue
        keys = rng.random((chunk, num_experts))
        chosen = np.argpartition(keys, top_k - 1, axis=1)[:, :top_k]
        counts += np.bincount(chosen.ravel(), minlength=num_experts)
    return counts


def capacity_limited_counts(routed: np.ndarray, capacity: float) -> np.ndarray:
    """Tokens each (source, expert) pair keeps when each expert takes at most ``capacity`` tokens.

    ``routed[s, e]`` is the number of tokens source ``s`` sends to expert ``e``. An expert over
    capacity keeps tokens in source order (source 0 first), as a capacity check that processes
    the dispatch buffer in rank order does; the rest are dropped.
    """
    limit = int(np.floor(capacity))
    cumulative = np.cumsum(routed, axis=0)
    kept_cumulative = np.minimum(cumulative, limit)
    return np.diff(kept_cumulative, axis=0, prepend=0)
