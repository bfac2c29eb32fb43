"""Token routing for token-routed MoE: how many tokens each source sends to each expert, and drops.

Random routings draw each token's ``top_k`` distinct experts by exponential keys (Efraimidis and
Spirakis 2006): an expert of popularity ``p`` gets the key ``X / p`` with ``X`` a standard exponential,
and the ``top_k`` smallest keys win, which samples without replacement in proportion to ``p`` (the
same distribution as the Gumbel-top-k trick, whose keys ``log p + G`` are ``-log`` of these). The
keys are 32-bit (the ties they could create have probability ~E^2 / 2^24 per token and only move
which of two tied experts wins; 64-bit when a popularity is so small that its key could overflow),
and the ``top_k`` smallest are found by ``top_k`` passes of argmin for small ``top_k``: together a tenth of the cost of 64-bit Gumbel keys and a partition. With equal
popularities the keys are the exponentials themselves, so Zipf with exponent 0 draws exactly what
uniform routing draws from the same stream. All randomness comes from the generator the caller
passes (a child stream of the scenario seed).

* ``uniform``: equal popularity.
* ``zipf``: popularity ``1 / rank^s``; ranks shuffled by the seed unless ``shuffle_ranks`` is off.
* ``grouped``: each token picks ``top_groups`` expert groups uniformly, then ``top_k`` experts among
  those groups' experts uniformly (DeepSeek-style node-limited routing).
* ``counts``: measured per-expert loads, scaled to ``tokens x top_k`` (largest-remainder rounding)
  and split over the sources in proportion to their tokens; no randomness.
"""

from __future__ import annotations

import numpy as np

from secmoe_sim.spec.workload import CountsRouting, GroupedRouting, Routing, ZipfRouting

ROUTING_CHUNK_TOKENS = 16384  # tokens drawn at once (the grouped draws interleave per chunk, so this fixes them)
ROUTING_CHUNK_CELLS = 2**22  # ... and at most this many (tokens x experts) keys at once: 32 MiB whatever E is


def _chunk_rows(num_experts: int) -> int:
    return max(1, min(ROUTING_CHUNK_TOKENS, ROUTING_CHUNK_CELLS // num_experts))


def popularity(routing: Routing, num_experts: int, rng: np.random.Generator) -> np.ndarray:
    """Relative popularity of each expert (sums to 1) for the random routings."""
    if isinstance(routing, ZipfRouting):
        weights = 1.0 / np.arange(1, num_experts + 1, dtype=float) ** routing.exponent
        if routing.shuffle_ranks:
            weights = weights[rng.permutation(num_experts)]
        return weights / weights.sum()
    return np.full(num_experts, 1.0 / num_experts)


ARGMIN_PASSES_MAX_K = 8  # up to this top_k, k passes of argmin beat a partition of every row
FLOAT32_KEY_HEADROOM = 1e3  # an exponential draw above 1,000 has probability e^-1000: a key X / p never overflows


def smallest_k(keys: np.ndarray, k: int) -> np.ndarray:
    """The column indices of the ``k`` smallest keys of every row (in any order); ``keys`` is overwritten."""
    if k > ARGMIN_PASSES_MAX_K:
        return np.argpartition(keys, k - 1, axis=1)[:, :k]
    rows = np.arange(keys.shape[0])
    chosen = np.empty((keys.shape[0], k), dtype=np.int64)
    for pick in range(k):
        chosen[:, pick] = keys.argmin(axis=1)
        keys[rows, chosen[:, pick]] = np.inf
    return chosen


def top_k_counts(num_tokens: int, weights: np.ndarray, top_k: int, rng: np.random.Generator) -> np.ndarray:
    """Tokens per expert when each token draws ``top_k`` distinct experts in proportion to ``weights``
    (exponential keys ``X / weight``, the ``top_k`` smallest win)."""
    num_experts = len(weights)
    counts = np.zeros(num_experts, dtype=np.int64)
    rows = _chunk_rows(num_experts)
    uniform = bool(np.all(weights == weights[0]))
    inverse = 1.0 / weights
    # 32-bit keys unless a popularity is so small that its key would overflow (a steep Zipf over many experts)
    key_dtype = np.float32 if inverse.max() * FLOAT32_KEY_HEADROOM < np.finfo(np.float32).max else np.float64
    inverse = inverse.astype(key_dtype)
    for start in range(0, num_tokens, rows):
        chunk = min(rows, num_tokens - start)
        if top_k == num_experts:
            counts += chunk
            continue
        keys = rng.standard_exponential(size=(chunk, num_experts), dtype=key_dtype)
        if not uniform:
            keys *= inverse
        counts += np.bincount(smallest_k(keys, top_k).ravel(), minlength=num_experts)
    return counts


def grouped_top_k_counts(
    num_tokens: int, num_experts: int, groups: int, top_groups: int, top_k: int, rng: np.random.Generator
) -> np.ndarray:
    """Tokens per expert when each token picks ``top_groups`` of ``groups`` groups, then ``top_k`` experts in them."""
    per_group = num_experts // groups
    counts = np.zeros(num_experts, dtype=np.int64)
    rows = _chunk_rows(num_experts)
    for start in range(0, num_tokens, rows):
        chunk = min(rows, num_tokens - start)
        group_keys = rng.standard_exponential(size=(chunk, groups), dtype=np.float32)
        chosen_groups = smallest_k(group_keys, top_groups)
        allowed = np.zeros((chunk, groups), dtype=bool)
        np.put_along_axis(allowed, chosen_groups, True, axis=1)
        keys = rng.standard_exponential(size=(chunk, num_experts), dtype=np.float32)
        keys[~np.repeat(allowed, per_group, axis=1)] = np.inf
        counts += np.bincount(smallest_k(keys, top_k).ravel(), minlength=num_experts)
    return counts


def largest_remainder(shares: np.ndarray, total: int) -> np.ndarray:
    """Integers proportional to ``shares`` that sum to ``total`` (Hamilton's method)."""
    exact = shares / shares.sum() * total
    floors = np.floor(exact).astype(np.int64)
    remainder = total - int(floors.sum())
    order = np.argsort(-(exact - floors), kind="stable")
    floors[order[:remainder]] += 1
    return floors


def route(
    routing: Routing, tokens_per_source: list[int], num_experts: int, top_k: int, groups: int, rng: np.random.Generator
) -> np.ndarray:
    """``routed[s, e]``: tokens that source ``s`` sends to expert ``e``; they sum to all tokens x top_k.

    Random routings give each source exactly its tokens x top_k; ``counts`` routing gives each
    expert exactly its scaled load and each source a share in proportion to its tokens.

    ``groups`` is the number of expert groups for grouped routing when the routing does not set it.
    """
    if isinstance(routing, CountsRouting):
        loads = largest_remainder(np.asarray(routing.counts, dtype=float), sum(tokens_per_source) * top_k)
        tokens = np.asarray(tokens_per_source, dtype=float)
        if tokens.sum() == 0:
            return np.zeros((len(tokens_per_source), num_experts), dtype=np.int64)
        return np.column_stack([largest_remainder(tokens, int(load)) for load in loads])
    if isinstance(routing, GroupedRouting):
        group_count = routing.groups or groups
        return np.array(
            [grouped_top_k_counts(t, num_experts, group_count, routing.top_groups, top_k, rng) for t in tokens_per_source]
        )
    weights = popularity(routing, num_experts, rng)
    return np.array([top_k_counts(t, weights, top_k, rng) for t in tokens_per_source])


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
