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
in practice), and each pass is a few numpy operations over the unfrozen flows.

Flows are rows of ``flow_links`` (link indices, padded to a common width with a *sentinel* link of
infinite capacity). ``weights`` says how many identical flows a row stands for: a row of weight
``k`` counts ``k`` times on each of its links and gets the rate of one of them.
"""

from __future__ import annotations

import numpy as np


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
    unfrozen, links, flow_weights = np.arange(num_flows), flow_links, weights
    while True:
        # Every link an unfrozen flow crosses carries at least that flow (count > 0); a link emptied
        # by freezing, whose residual may have rounded below zero, is never looked at again.
        flow_share = residual[links] / count[links]
        flow_min = flow_share.min(axis=1)
        above_min = flow_share > flow_min[:, None]
        blocked = np.zeros(num_links, dtype=bool)
        blocked[links[above_min]] = True  # some flow on it is held lower by another link
        waiting = (blocked[links] | above_min).all(axis=1)  # no unblocked link at its minimum
        if not waiting.any():
            rates[unfrozen] = flow_min
            return rates
        freeze = ~waiting
        frozen_rates, frozen_weights = flow_min[freeze], flow_weights[freeze]
        rates[unfrozen[freeze]] = frozen_rates
        frozen_links = links[freeze].ravel()
        residual -= np.bincount(frozen_links, weights=np.repeat(frozen_rates * frozen_weights, width), minlength=num_links)
        count -= np.bincount(frozen_links, weights=np.repeat(frozen_weights, width), minlength=num_links)
        unfrozen, links, flow_weights = unfrozen[waiting], links[waiting], flow_weights[waiting]
