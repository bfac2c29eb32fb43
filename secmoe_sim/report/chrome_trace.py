"""Chrome / Perfetto trace export (``traceEvents`` JSON, microseconds).

One process per (architecture entry, E) configuration, pids from 1 (pid 0 is special to trace
processors); one thread per GPU stream: the host that issues its ops, compute, communication. Host
issues, kernels and collectives are complete events (``ph: "X"``); a collective's slice carries the
bytes it sent and how many peers it sent to. Each transfer is a flow arrow from the sender's
communication track to the receiver's, with an id unique in the whole file (viewers key flows
across processes); its start lies inside the sender's collective slice and its end inside the
receiver's (an arrival before the receiver reached the collective is drawn where its slice starts).
The GPU that finishes last is marked ``(critical)`` in its track names. Counter tracks
(``ph: "C"``) show the send rate of the busiest GPUs' outgoing links, in GB/s: each message counts at
its average rate (bytes over the time from its start to its arrival), so the counter's area is the
bytes the GPU sent. Open the file in https://ui.perfetto.dev or chrome://tracing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from secmoe_sim.spec.units import SIZE_UNITS, to_microseconds

MAX_TRACE_EVENTS = 200_000  # keeps trace.json small enough for a browser to open
STREAM_THREADS = {"host": 0, "compute": 1, "comm": 2}
FIRST_PID = 1
COUNTER_GPUS = 4  # send-rate counter tracks for this many of the GPUs that send the most bytes
BYTES_PER_GB = SIZE_UNITS["GB"]


def _thread_id(gpu: int, stream: str) -> int:
    return len(STREAM_THREADS) * gpu + STREAM_THREADS[stream]


Columns = dict[str, np.ndarray]


def _columns(frame: pd.DataFrame, names: list[str]) -> Columns:
    """The columns ``names`` of ``frame`` as numpy arrays, positions from 0: a trace reads a timeline through
    masks over these (pandas filters cost far more than the few hundred rows of a timeline take)."""
    return {name: frame[name].to_numpy() for name in names}


def _collective_traffic(rows: Columns) -> tuple[dict[int, tuple[float, int]], dict]:
    """Per collective row (by position): bytes sent and peers; and per (gpu, label) the collective rows' spans in
    time order, for the flow ends."""
    collective = np.flatnonzero(rows["kind"] == "collective")
    transfer = rows["kind"] == "transfer"
    spans: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]] = {}
    for position in collective[np.argsort(rows["started_at"][collective], kind="stable")].tolist():
        key = (int(rows["gpu"][position]), str(rows["label"][position]))
        starts, ends = spans.get(key, (np.array([]), np.array([])))
        spans[key] = (np.append(starts, rows["started_at"][position]), np.append(ends, rows["finished_at"][position]))
    traffic: dict[int, tuple[float, int]] = {}
    for position in collective.tolist():
        gpu, label = rows["gpu"][position], rows["label"][position]
        sent = transfer & (rows["src"] == gpu) & (rows["label"] == label)
        sent &= (rows["started_at"] >= rows["started_at"][position]) & (rows["started_at"] <= rows["finished_at"][position])
        traffic[position] = (float(sum(rows["bytes"][sent].tolist())), len(set(rows["dst"][sent].tolist())))
    return traffic, spans


def _flow_end_s(spans: dict, dst: int, label: str, arrival_s: float) -> float:
    """The arrival, moved into the receiver's collective slice of the same name if it came before it started."""
    found = spans.get((dst, label))
    if found is None:
        return arrival_s
    starts, ends = found
    position = int(np.searchsorted(ends, arrival_s, side="left"))
    if position >= len(starts):
        return arrival_s
    return max(arrival_s, float(starts[position]))


TIMELINE_COLUMNS = ["gpu", "stream", "kind", "label", "started_at", "finished_at", "launch_s", "flops", "bytes", "src", "dst"]


def trace_events(timeline: pd.DataFrame, process_id: int, process_name: str, budget: int, first_flow_id: int = 0) -> list[dict]:
    """Trace events of one configuration's timeline, at most ``budget`` of them; flow ids from ``first_flow_id``."""
    events: list[dict] = [{"ph": "M", "name": "process_name", "pid": process_id, "args": {"name": process_name}}]
    rows = _columns(timeline, TIMELINE_COLUMNS)
    gpus, gpu_index = np.unique(rows["gpu"], return_inverse=True)
    ends = np.full(gpus.shape[0], -np.inf)
    np.maximum.at(ends, gpu_index, rows["finished_at"])
    critical = int(gpus[ends.argmax()]) if gpus.size else -1
    for gpu in gpus.tolist():
        for stream in STREAM_THREADS:
            mark = " (critical)" if gpu == critical else ""
            events.append(
                {
                    "ph": "M",
                    "name": "thread_name",
                    "pid": process_id,
                    "tid": _thread_id(gpu, stream),
                    "args": {"name": f"GPU {gpu} {stream}{mark}"},
                }
            )
    traffic, spans = _collective_traffic(rows)
    transfer = rows["kind"] == "transfer"
    ops = np.flatnonzero(~transfer)
    op_columns = ["label", "kind", "gpu", "stream", "started_at", "finished_at", "flops", "bytes", "launch_s"]
    for position, values in zip(ops.tolist(), zip(*(rows[name][ops].tolist() for name in op_columns))):
        if len(events) >= budget:
            return events
        row = dict(zip(op_columns, values))
        args = {"flops": row["flops"], "bytes": row["bytes"], "launch_us": to_microseconds(row["launch_s"])}
        if position in traffic:
            args["bytes"], args["peers"] = traffic[position]
        events.append(
            {
                "ph": "X",
                "name": row["label"],
                "cat": row["kind"],
                "pid": process_id,
                "tid": _thread_id(row["gpu"], row["stream"]),
                "ts": to_microseconds(row["started_at"]),
                "dur": to_microseconds(row["finished_at"] - row["started_at"]),
                "args": args,
            }
        )
    flow_id = first_flow_id
    transfer_columns = ["label", "src", "dst", "started_at", "finished_at", "bytes"]
    for values in zip(*(rows[name][transfer].tolist() for name in transfer_columns)):
        if len(events) + 2 > budget:
            break
        row = dict(zip(transfer_columns, values))
        common = {"name": row["label"], "cat": "transfer", "pid": process_id, "id": flow_id}
        flow_id += 1
        events.append(
            {
                **common,
                "ph": "s",
                "tid": _thread_id(row["src"], "comm"),
                "ts": to_microseconds(row["started_at"]),
                "args": {"bytes": row["bytes"], "dst": row["dst"]},
            }
        )
        end_s = _flow_end_s(spans, int(row["dst"]), str(row["label"]), row["finished_at"])
        events.append({**common, "ph": "f", "bp": "e", "tid": _thread_id(row["dst"], "comm"), "ts": to_microseconds(end_s)})
    return events


def egress_counters(timeline: pd.DataFrame, process_id: int, gpus: int = COUNTER_GPUS) -> list[dict]:
    """Counter events of the send rate (GB/s) of the ``gpus`` GPUs that send the most bytes."""
    transfers = timeline[timeline["kind"] == "transfer"]
    if transfers.empty:
        return []
    busiest = transfers.groupby("src")["bytes"].sum().sort_values(ascending=False, kind="stable").index[:gpus]
    sent_by = _columns(transfers, ["src", "started_at", "finished_at", "bytes"])
    events = []
    for gpu in busiest:
        mine = sent_by["src"] == gpu
        starts, ends = sent_by["started_at"][mine].astype(float), sent_by["finished_at"][mine].astype(float)
        rates = np.where(ends > starts, sent_by["bytes"][mine].astype(float) / np.maximum(ends - starts, 1e-300), 0.0)
        times = np.concatenate([starts, ends])
        order = np.argsort(times, kind="stable")
        level = np.cumsum(np.concatenate([rates, -rates])[order])
        times = times[order]
        last_at_each_time = np.append(times[1:] != times[:-1], True)
        for at_s, rate in zip(times[last_at_each_time], level[last_at_each_time]):
            events.append(
                {
                    "ph": "C",
                    "name": f"GPU {gpu} send rate",
                    "pid": process_id,
                    "ts": to_microseconds(float(at_s)),
                    "args": {"GB/s": max(float(rate), 0.0) / BYTES_PER_GB},
                }
            )
    return events


def chrome_trace(timelines: list[tuple[str, pd.DataFrame]], max_events: int = MAX_TRACE_EVENTS) -> dict:
    """A trace document holding one process per named timeline, capped at ``max_events`` events."""
    events: list[dict] = []
    next_flow_id = 0
    for process_id, (name, timeline) in enumerate(timelines, start=FIRST_PID):
        new = trace_events(timeline, process_id, name, max_events - len(events), first_flow_id=next_flow_id)
        next_flow_id += sum(1 for event in new if event.get("ph") == "s")
        events += new
        counters = egress_counters(timeline, process_id)
        events += counters[: max(max_events - len(events), 0)]
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": {"capped_at_events": max_events}}
