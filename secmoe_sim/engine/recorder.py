"""Frozen rows recording every kernel, collective and transfer of a simulated layer.

Kernels and collectives are recorded as :class:`Row` objects. Transfers can number in the
millions on a large cluster, so they are recorded as arrays of messages that arrived together, or
as plain numbers for a message that arrived alone; the frame keeps the order in which everything
was recorded.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields

import numpy as np
import pandas as pd
import pyarrow as pa

from secmoe_sim.engine.numbering import Numbering

NO_GPU = -1  # src/dst of rows that are not transfers


@dataclass(frozen=True, slots=True)
class Row:
    """One op on one GPU stream, or one point-to-point transfer (``kind == "transfer"``).

    ``started_at``/``finished_at`` are simulation instants in seconds. A kernel row spans its
    launch overhead (``launch_s``) followed by its execution. A transfer row belongs to the sender's
    ``comm`` stream and spans from the moment the network starts on it (the sender starts posting
    it on the flow network; its first port is acquired on the port network) to its arrival.
    """

    gpu: int
    stream: str
    kind: str
    label: str
    started_at: float
    finished_at: float
    launch_s: float = 0.0
    flops: float = 0.0
    bytes: float = 0.0
    src: int = NO_GPU
    dst: int = NO_GPU
    group: str = ""


ROW_COLUMNS = [f.name for f in fields(Row)]


COLUMN_DTYPES = {f.name: {"int": np.int64, "float": float, "str": object}[str(f.type)] for f in fields(Row)}
# What every transfer row holds beyond its own columns: the sender's comm stream, and Row's defaults.
TRANSFER_CONSTANTS = {
    **{f.name: f.default for f in fields(Row) if f.default is not MISSING},
    "stream": "comm",
    "kind": "transfer",
}
# A recorded transfer's fields, in the order of a chunk's arrays and of a single transfer's numbers.
TRANSFER_FIELDS = ("src", "dst", "label", "started_at", "finished_at", "bytes", "sequence")


class Recorder:
    """Collects rows during a run; turns them into a DataFrame at the end."""

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self._row_sequence: list[int] = []
        self._labels: Numbering[str] = Numbering()  # transfer labels recorded by number (record_transfers)
        # arrays of messages recorded together (TRANSFER_FIELDS: finished_at one instant, the first sequence number)
        self._transfer_chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float, np.ndarray, int]] = []
        # messages recorded one at a time, TRANSFER_FIELDS as plain numbers (no arrays of one to make and join)
        self._single_transfers: list[tuple[int, int, int, float, float, float, int]] = []
        self._next = 0

    def record(self, row: Row) -> None:
        self.rows.append(row)
        self._row_sequence.append(self._next)
        self._next += 1

    def record_transfer(
        self, src: int, dst: int, label: str, started_at: float, finished_at: float, payload_bytes: float
    ) -> None:
        """One message from ``src`` to ``dst``: a transfer row on the sender's ``comm`` stream."""
        self.record_numbered_transfer(src, dst, self.transfer_label(label), started_at, finished_at, payload_bytes)

    def record_numbered_transfer(
        self, src: int, dst: int, label: int, started_at: float, finished_at: float, payload_bytes: float
    ) -> None:
        """``record_transfer`` with the label by its number (:meth:`transfer_label`)."""
        self._single_transfers.append((src, dst, label, started_at, finished_at, payload_bytes, self._next))
        self._next += 1

    def transfer_label(self, label: str) -> int:
        """The number ``record_transfers`` knows ``label`` by."""
        return self._labels.number(label)

    def record_transfers(
        self,
        src: np.ndarray,
        dst: np.ndarray,
        labels: np.ndarray,
        started_at: np.ndarray,
        finished_at: float,
        payload_bytes: np.ndarray,
    ) -> None:
        """Messages that arrived together at ``finished_at``, in order: ``record_transfer`` for arrays, each label by
        its number (:meth:`transfer_label`)."""
        self._transfer_chunks.append((src, dst, labels, started_at, finished_at, payload_bytes, self._next))
        self._next += src.shape[0]

    def _transfer_columns(self) -> dict[str, np.ndarray]:
        """Every recorded transfer's columns (``label``: the labels' numbers) and its ``position``: its sequence number,
        which is its row in the frame (each record takes the next numbers)."""
        chunks = self._transfer_chunks
        counts = np.array([chunk[0].shape[0] for chunk in chunks], dtype=np.int64)
        singles = np.array(self._single_transfers, dtype=float).reshape(-1, len(TRANSFER_FIELDS))  # below 2**53: exact
        field = {name: index for index, name in enumerate(TRANSFER_FIELDS)}
        columns = {}
        for name in ("src", "dst", "label", "started_at", "bytes"):
            dtype = np.int64 if name == "label" else COLUMN_DTYPES[name]  # labels by number
            columns[name] = np.concatenate([*(chunk[field[name]] for chunk in chunks), singles[:, field[name]]]).astype(dtype)
        chunk_finished = np.repeat(np.array([chunk[field["finished_at"]] for chunk in chunks], dtype=float), counts)
        columns["finished_at"] = np.concatenate([chunk_finished, singles[:, field["finished_at"]]])
        within = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
        first = np.array([chunk[field["sequence"]] for chunk in chunks], dtype=np.int64)
        columns["position"] = np.concatenate([np.repeat(first, counts) + within, singles[:, field["sequence"]].astype(np.int64)])
        return columns

    def frame(self) -> pd.DataFrame:
        """Every recorded row in the order recorded. Each record takes the next sequence numbers, so a row's number is
        its position: kernel rows and transfers go straight to theirs, column by column (no sort).
        Text columns are built in arrow from a few distinct strings and their codes (a million Python strings, or
        pandas converting them, take a large part of a big run's time)."""
        if not self._transfer_chunks and not self._single_transfers:
            return pd.DataFrame([tuple(getattr(r, c) for c in ROW_COLUMNS) for r in self.rows], columns=ROW_COLUMNS)
        transfers = self._transfer_columns()
        transfers["gpu"] = transfers["src"]
        at_rows = np.asarray(self._row_sequence, dtype=np.int64)
        at_transfers = transfers["position"]
        total = at_rows.shape[0] + at_transfers.shape[0]
        columns: dict[str, pa.Array] = {}
        for name in ROW_COLUMNS:
            row_values = [getattr(row, name) for row in self.rows]
            if COLUMN_DTYPES[name] is object:
                texts = self._labels.values if name == "label" else [TRANSFER_CONSTANTS[name]]
                code_of = {text: code for code, text in enumerate(texts)}
                codes = np.empty(total, dtype=np.int32)
                codes[at_transfers] = transfers["label"] if name == "label" else 0
                codes[at_rows] = [code_of.setdefault(text, len(code_of)) for text in row_values]
                dictionary = pa.array(list(code_of), type=pa.string())
                columns[name] = pa.DictionaryArray.from_arrays(codes, dictionary).cast(pa.string())
            else:
                column = np.empty(total, dtype=COLUMN_DTYPES[name])
                column[at_transfers] = transfers[name] if name in transfers else TRANSFER_CONSTANTS[name]
                column[at_rows] = row_values
                columns[name] = pa.array(column)
        return pa.table(columns).to_pandas()
