"""Chrome / Perfetto trace export (``traceEvents`` JSON, microseconds).

One process per (architecture entry, E) configuration, one thread per GPU stream (the host that
issues its ops, compute, communication); host issues, kernels and collectives are complete events (``ph: "X"``) and each transfer is a flow arrow from the sender's
communication track to the receiver's. Open the file in https://ui.perfetto.dev or
chrome://tracing.
"""

from __future__ import annotations

import pandas as pd

from secmoe_sim.spec.units import to_microseconds

MAX_TRACE_EVENTS = 200_000  # keeps trace.json small enough for a browser to open
STREAM_THREADS = {"host": 0, "compute": 1, "comm": 2}


def _thread_id(gpu: int, stream: str) -> int:
    return len(STREAM_THREADS) * gpu + STREAM_THREADS[stream]


def trace_events(timeline: pd.DataFrame, process_id: int, process_name: str, budget: int) -> list[dict]:
    """Trace events of one configuration's timeline, at most ``budget`` of them."""
    events: list[dict] = [{"ph": "M", "name": "process_name", "pid": process_id, "args": {"name": process_name}}]
    for gpu in sorted(timeline["gpu"].unique()):
        for stream in STREAM_THREADS:
            events.append(
                {
                    "ph": "M",
                    "name": "thread_name",
                    "pid": process_id,
                    "tid": _thread_id(int(gpu), stream),
                    "args": {"name": f"GPU {gpu} {stream}"},
                }
            )
    ops = timeline[timeline["kind"] != "transfer"]
    for row in ops.to_dict("records"):
        if len(events) >= budget:
            return events
        events.append(
            {
                "ph": "X",
                "name": row["label"],
                "cat": row["kind"],
                "pid": process_id,
                "tid": _thread_id(row["gpu"], row["stream"]),
                "ts": to_microseconds(row["started_at"]),
                "dur": to_microseconds(row["finished_at"] - row["started_at"]),
                "args": {"flops": row["flops"], "bytes": row["bytes"], "launch_us": to_microseconds(row["launch_s"])},
            }
        )
    for flow_id, row in enumerate(timeline[timeline["kind"] == "transfer"].to_dict("records")):
        if len(events) + 2 > budget:
            break
        common = {"name": row["label"], "cat": "transfer", "pid": process_id, "id": flow_id}
        events.append(
            {
                **common,
                "ph": "s",
                "tid": _thread_id(row["src"], "comm"),
                "ts": to_microseconds(row["started_at"]),
                "args": {"bytes": row["bytes"], "dst": row["dst"]},
            }
        )
        events.append(
            {**common, "ph": "f", "bp": "e", "tid": _thread_id(row["dst"], "comm"), "ts": to_microseconds(row["finished_at"])}
        )
    return events


def chrome_trace(timelines: list[tuple[str, pd.DataFrame]], max_events: int = MAX_TRACE_EVENTS) -> dict:
    """A trace document holding one process per named timeline, capped at ``max_events`` events."""
    events: list[dict] = []
    for process_id, (name, timeline) in enumerate(timelines):
        events += trace_events(timeline, process_id, name, max_events - len(events))
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": {"capped_at_events": max_events}}
