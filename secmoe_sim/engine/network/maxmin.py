"""Max-min fair rates of flows sharing links (water-filling), vectorised with numpy.

Max-min fairness: no flow can get a higher rate without lowering the rate of a flow that already
has a lower or equal one. Equivalently, every flow crosses a *bottleneck* link: a saturated link on
which no flow has a higher rate. Progressive filling (water-filling) finds it: raise every rate
together; when a link saturates, freeze its flows at their current rate; continue with the rest.

The textbook loop freezes one saturation level at a time, so it needs as many passes as there are
distinct rate levels (thousands on a skewed all-to-all). This solver freezes, in each pass, every
link whose *fair share* (remaining capacity / unfrozen flows on it) is no larger than the fair share
of any other link that its unfrozen flows cross: such a link saturates at exactly its fair share
whatever happens elsewhere, because freezing a flow at a level no higher than a link's share never
lowers that link's share. Links whose shares are local minima are frozen together, so the number
of passes is the length of the longest chain of links whose shares depend on each other (a handful
on most problems), and each pass is a few numpy operations over the unfrozen flows.

Some problems have a long tail: on a skewed all-to-all of a thousand GPUs the passes can number in
the hundreds, each freezing a link or two while a hundred thousand flows wait, and every pass costs
all of them. Once a pass freezes under ``TAIL_FRACTION`` of the flows still waiting and at least
``TAIL_MIN_FLOWS`` wait, the rest is filled link by link, textbook style: a heap of link shares,
the smallest share is a bottleneck at exactly that share, its flows freeze, the links they cross
get their new shares. That costs one step per link and touches each flow once, where a pass costs
every waiting flow. Both give the max-min rates; they sum the frozen load on a link in different
orders, so they can differ in the last bits.

Flows are rows of ``flow_links`` (link indices, padded to a common width with a *sentinel* link of
infinite capacity). ``weights`` says how many identical flows a row stands for: a row of weight
``k`` counts ``k`` times on each of its links and gets the rate of one of them.
"""

from __future__ import annotations

import heapq

import numpy as np

TAIL_FRACTION = 0.1  # a pass that freezes less than this fraction of the waiting flows hands the rest to the heap
TAIL_MIN_FLOWS = 20_000  # ... when at least this many wait (below, a pass costs less than a step per link)


def max_min_rates(flow_links: np.ndarray, weights: np.ndarray, capacity_bytes_per_s: np.ndarray) -> np.ndarray:
    """Max-min fair rate of every flow (bytes/s of one flow of each row).

    ``flow_links``: (flows, width) indices into ``capacity_bytes_per_s``, the capacity available
    to these flows on each link (``inf`` for the padding sentinel); ``weights``: (flows,) identical
    flows per row.
    """
    num_flows, width = flow_links.shape
    num_links = capacity_bytes_per_s.shape[0]
    rates = np.empty(num_flows)
    residual = np.maximum(capacity_bytes_per_s, 0.0)
    count = np.bincount(flow_links.ravel(), weights=np.repeat(weights, width), minlength=num_links)
    unfrozen, flow_weights = np.arange(num_flows), weights
    columns = [np.ascontiguousarray(flow_links[:, j]) for j in range(width)]  # a flow's j-th link, per column
    while True:
        # Every link an unfrozen flow crosses carries at least that flow (count > 0); a link emptied
        # by freezing, whose residual may have rounded below zero, is never looked at again.
        # Column by column: numpy's reductions along a short axis cost many times a few elementwise ops.
        share = residual / np.where(count > 0, count, 1.0)
        shares = [share[column] for column in columns]
        flow_min = shares[0].copy()
        for column_share in shares[1:]:
            np.minimum(flow_min, column_share, out=flow_min)
        above = [column_share > flow_min for column_share in shares]
        held = np.bincount(columns[0], weights=above[0], minlength=num_links)  # not a masked scatter: a fraction of its time
        for column, column_above in zip(columns[1:], above[1:]):
            held += np.bincount(column, weights=column_above, minlength=num_links)
        blocked = held > 0  # some flow on it is held lower by another link
        waiting = blocked[columns[0]] | above[0]  # no unblocked link at its minimum
        for column, column_above in zip(columns[1:], above[1:]):
            waiting &= blocked[column] | column_above
        if not waiting.any():
            rates[unfrozen] = flow_min
            return rates
        freeze = ~waiting
        frozen_rates, frozen_weights = flow_min[freeze], flow_weights[freeze]
        rates[unfrozen[freeze]] = frozen_rates
        frozen_load, frozen_count = frozen_rates * frozen_weights, frozen_weights
        for column in columns:
            frozen_links = column[freeze]
            residual -= np.bincount(frozen_links, weights=frozen_load, minlength=num_links)
            count -= np.bincount(frozen_links, weights=frozen_count, minlength=num_links)
        unfrozen, flow_weights = unfrozen[waiting], flow_weights[waiting]
        columns = [column[waiting] for column in columns]
        if unfrozen.shape[0] >= TAIL_MIN_FLOWS and frozen_rates.shape[0] < TAIL_FRACTION * waiting.shape[0]:
            rates[unfrozen] = _fill_link_by_link(np.column_stack(columns), flow_weights, residual, count)
            return rates


def _fill_link_by_link(flow_links: np.ndarray, weights: np.ndarray, residual: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Max-min rates of the flows of ``flow_links`` in the links' ``residual`` capacity, ``count`` the weighted
    flows on each link (both consumed): progressive filling, one bottleneck link at a time from a heap of shares."""
    num_flows, width = flow_links.shape
    num_links = residual.shape[0]
    incidences = flow_links.ravel()  # flow i's links at i * width ...
    by_link = np.argsort(incidences.astype(np.uint16) if num_links <= 2**16 else incidences, kind="stable")
    flows_by_link = by_link // width
    bounds = np.zeros(num_links + 1, dtype=np.int64)
    np.cumsum(np.bincount(incidences, minlength=num_links), out=bounds[1:])
    rates = np.empty(num_flows)
    frozen = np.zeros(num_flows, dtype=bool)
    done = (count <= 0) | np.isinf(residual)  # the padding sentinel never holds a flow back
    share = np.divide(residual, count, out=np.full(num_links, np.inf), where=~done)
    heap = list(zip(share[~done].tolist(), np.flatnonzero(~done).tolist()))
    heapq.heapify(heap)
    while heap:
        level, link = heapq.heappop(heap)
        if done[link]:
            continue
        if level != share[link]:  # its share has risen since: back in at the new one
            heapq.heappush(heap, (float(share[link]), link))
            continue
        done[link] = True
        members = flows_by_link[bounds[link] : bounds[link + 1]]  # a flow twice on a link: twice, side by side
        members = members[~frozen[members] & np.append(True, members[1:] != members[:-1])]
        if members.shape[0] == 0:
            continue
        rates[members] = level
        frozen[members] = True
        crossed = flow_links[members].ravel()
        member_weights = np.repeat(weights[members], width)
        np.subtract.at(residual, crossed, level * member_weights)
        np.subtract.at(count, crossed, member_weights)
        # A link's share only rises as flows freeze at levels below it, so its entry in the heap stays a lower
        # bound: the share is updated here and the entry when it comes up.
        left = count[crossed] > 0
        share[crossed] = np.divide(residual[crossed], count[crossed], out=np.full(crossed.shape[0], np.inf), where=left)
        done[crossed[~left]] = True
    rates[~frozen] = np.inf  # flows on no link of finite capacity
    return rates
