"""The messages in flight on the flow network, as columns of numpy arrays: no Python object per message.

A message occupies a row (its *id*) from the moment it is sent until it arrives; rows of arrived
messages are reused. A row holds the message's endpoints, its payload and wire bytes, its posting
cost, when its bytes started, the stage it is at, its whole route (every stage's links, padded with
the flow table's sentinel link, and latency), who is told of its arrival (a *sink* and the sender's
*tag* for it), its label, and the next message that shares its flow (identical flows are merged).
"""

from __future__ import annotations

import numpy as np

from secmoe_sim.engine.network.slots import SlotPool, extended
from secmoe_sim.plan.topology import RouteArrays

INITIAL_ROWS = 1024
NO_MESSAGE = -1
ARRIVAL_COLUMNS = ("src", "dst", "label", "sink", "tag")  # what an arrival reads, one matrix: one gather for all


class MessageTable:
    """Rows of messages in flight; see the module docstring."""

    def __init__(self, max_stages: int, width: int, sentinel: int):
        self.sentinel = sentinel
        self.max_stages, self.width = max_stages, width
        rows = INITIAL_ROWS
        self.arrival = np.zeros((rows, len(ARRIVAL_COLUMNS)), dtype=np.int64)  # columns ARRIVAL_COLUMNS
        self.payload_bytes = np.zeros(rows)
        self.wire_bytes = np.zeros(rows)
        self.post_s = np.zeros(rows)
        self.started_at = np.zeros(rows)
        self.stage = np.zeros(rows, dtype=np.int64)
        self.stages = np.zeros(rows, dtype=np.int64)
        self.next_in_flow = np.full(rows, NO_MESSAGE, dtype=np.int64)
        self.links = np.full((rows, max_stages, width), sentinel, dtype=np.int64)
        self.latency_s = np.zeros((rows, max_stages))
        self._rows = SlotPool(rows, self._grow)

    def add(
        self,
        src: np.ndarray,
        dst: np.ndarray,
        payload_bytes: np.ndarray,
        wire_bytes: np.ndarray,
        post_s: np.ndarray,
        routes: RouteArrays,
        sink: int,
        tags: np.ndarray,
        label: int,
    ) -> np.ndarray:
        """Rows for new messages at their first stage; returns their ids."""
        ids = self._rows.take(src.shape[0])
        self.arrival[ids] = np.column_stack([src, dst, np.full_like(src, label), np.full_like(src, sink), tags])
        self.payload_bytes[ids], self.wire_bytes[ids], self.post_s[ids] = payload_bytes, wire_bytes, post_s
        self.stage[ids], self.stages[ids] = 0, routes.stages
        self.links[ids], self.latency_s[ids] = routes.links, routes.latency_s
        self.next_in_flow[ids] = NO_MESSAGE
        return ids

    def release(self, ids: np.ndarray) -> None:
        """The messages ``ids`` have arrived: their rows are free for new messages."""
        self._rows.give_back(ids.tolist())

    def release_one(self, message: int) -> None:
        """``release`` for one message."""
        self._rows.give_back([message])

    def current_links(self, ids: np.ndarray) -> np.ndarray:
        """The links of each message's current stage (rows padded with the sentinel)."""
        if self.max_stages == 1:
            return self.links[ids, 0]
        return self.links[ids, self.stage[ids]]

    def current_latency_s(self, ids: np.ndarray) -> np.ndarray:
        if self.max_stages == 1:
            return self.latency_s[ids, 0]
        return self.latency_s[ids, self.stage[ids]]

    def _grow(self, rows: int) -> None:
        for name in ("arrival", "payload_bytes", "wire_bytes", "post_s", "started_at", "stage", "stages", "latency_s"):
            setattr(self, name, extended(getattr(self, name), rows))
        self.next_in_flow = extended(self.next_in_flow, rows, NO_MESSAGE)
        self.links = extended(self.links, rows, self.sentinel)
