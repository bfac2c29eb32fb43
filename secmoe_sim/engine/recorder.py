"""Frozen rows recording every kernel, collective and transfer of a simulated layer."""

from __future__ import annotations

from dataclasses import dataclass, fields

import pandas as pd

NO_GPU = -1  # src/dst of rows that are not transfers


@dataclass(frozen=True, slots=True)
class Row:
    """One op on one GPU stream, or one point-to-point transfer (``kind == "transfer"``).

    ``started_at``/``finished_at`` are simulation instants in seconds. A kernel row spans its
    launch overhead (``launch_s``) followed by its execution. A transfer row belongs to the sender's
    ``comm`` stream and spans from the moment its first link was acquired to its arrival.
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


class Recorder:
    """Collects rows during a run; turns them into a DataFrame at the end."""

    def __init__(self) -> None:
        self.rows: list[Row] = []

    def record(self, row: Row) -> None:
        self.rows.append(row)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([tuple(getattr(r, c) for c in ROW_COLUMNS) for r in self.rows], columns=ROW_COLUMNS)
