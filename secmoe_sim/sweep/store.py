"""The files of a sweep directory, written so that no completed point is ever lost or half-written.

Layout of ``DIR``::

    points/<key>.parquet     one file per completed point: its summary rows and analytical columns
    failures/<key>.json      one file per failed point: the error and its traceback
    results.parquet          every completed point of the sweep, merged, with the swept values
    results.csv              the same table, on request (kept up to date once written)
    metadata.json            what produced the results (docs/sweeps.md)
    .lock                    held while a sweep writes into DIR

Each file is written to a temporary name in its final folder and moved into place with
``os.replace``, which is atomic: a reader (or a resumed sweep) sees the whole file or none of it,
whatever kills the writer and when. Point files are named by the point's key (its resolved
scenario and the tool version), so they never hold stale results and they hold nothing that
depends on the sweep file: the swept values are attached when the points are merged.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock, Timeout

from secmoe_sim.sweep.spec import Sweep, SweepError

POINTS = "points"
FAILURES = "failures"
RESULTS = "results.parquet"
RESULTS_CSV = "results.csv"
METADATA = "metadata.json"
LOCK = ".lock"
TEMPORARY_SUFFIX = ".tmp"
POINT_ID, POINT_KEY = "point_id", "point_key"


class SweepStore:
    """Reads and writes the files of one sweep directory."""

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.points_dir = self.out_dir / POINTS
        self.failures_dir = self.out_dir / FAILURES

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the directory's lock: two sweeps writing into one directory would race on results.

        An operating-system lock (``filelock``: ``flock`` on Linux and macOS, ``msvcrt`` on Windows)
        dies with its process, so a killed sweep never leaves the directory locked.
        """
        for folder in (self.points_dir, self.failures_dir):
            folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.out_dir / LOCK, timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise SweepError(str(self.out_dir), "", "another sweep is writing into this directory") from None
        try:
            yield
        finally:
            lock.release()

    def remove_temporary_files(self) -> None:
        """Delete the partial files of an earlier run that was killed while writing (call under the lock)."""
        for folder in (self.out_dir, self.points_dir, self.failures_dir):
            for leftover in folder.glob(f".*{TEMPORARY_SUFFIX}"):
                leftover.unlink(missing_ok=True)

    def point_path(self, key: str) -> Path:
        return self.points_dir / f"{key}.parquet"

    def failure_path(self, key: str) -> Path:
        return self.failures_dir / f"{key}.json"

    def completed_keys(self) -> set[str]:
        """The points whose result file reads back; a file that does not (truncated, corrupt) is removed,
        so its point counts as not done and is computed again."""
        done = set()
        for path in self.points_dir.glob("*.parquet"):
            try:
                pq.read_metadata(path)
            except (OSError, pa.ArrowException):
                path.unlink(missing_ok=True)
                continue
            done.add(path.stem)
        return done

    def write_point(self, key: str, rows: pd.DataFrame) -> None:
        """Record a completed point (atomically); a failure recorded for it earlier is removed."""
        _atomic_write(self.point_path(key), lambda handle: rows.to_parquet(handle, index=False))
        self.failure_path(key).unlink(missing_ok=True)

    def write_failure(self, key: str, record: dict) -> None:
        _atomic_write(self.failure_path(key), lambda handle: handle.write(_json_bytes(record)))

    def failure(self, key: str) -> dict | None:
        path = self.failure_path(key)
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def merge(self, sweep: Sweep) -> pd.DataFrame:
        """Every completed point of ``sweep`` in point order: point id and key, swept values, result rows."""
        points = pd.DataFrame(
            [{POINT_ID: p.point_id, POINT_KEY: p.key, **p.values} for p in sweep.points],
            columns=[POINT_ID, POINT_KEY, *sweep.columns],
        )
        completed = self.completed_keys()
        points = points[points[POINT_KEY].isin(completed)]
        keys = list(dict.fromkeys(points[POINT_KEY]))
        if not keys:
            return points
        rows = pa.concat_tables([pq.read_table(self.point_path(key)) for key in keys], promote_options="permissive").to_pandas()
        table = points.merge(rows, on=POINT_KEY, how="inner", sort=False)
        return table.sort_values(POINT_ID, kind="stable").reset_index(drop=True)

    def write_results(self, table: pd.DataFrame, csv: bool) -> list[Path]:
        """Write results.parquet, and results.csv when asked or when an earlier run wrote one (a resumed
        sweep without ``--csv`` must not leave a CSV of fewer points beside the parquet)."""
        paths = [self.out_dir / RESULTS]
        _atomic_write(paths[0], lambda handle: table.to_parquet(handle, index=False))
        if csv or (self.out_dir / RESULTS_CSV).exists():
            paths.append(self.out_dir / RESULTS_CSV)
            _atomic_write(paths[1], lambda handle: handle.write(table.to_csv(index=False, float_format="%.17g").encode()))
        return paths

    def write_metadata(self, document: dict) -> Path:
        path = self.out_dir / METADATA
        _atomic_write(path, lambda handle: handle.write(_json_bytes(document)))
        return path


def read_results(sweep_dir: Path) -> tuple[pd.DataFrame, dict]:
    """The merged table and the metadata of a sweep directory; :class:`SweepError` if they are missing or unreadable."""
    sweep_dir = Path(sweep_dir)
    results, metadata = sweep_dir / RESULTS, sweep_dir / METADATA
    for path in (results, metadata):
        if not path.is_file():
            raise SweepError(str(sweep_dir), "", f"no {path.name} here: not the output directory of `secmoe-sim sweep`")
    try:
        return pd.read_parquet(results), json.loads(metadata.read_text(encoding="utf-8"))
    except (OSError, ValueError, pa.ArrowException) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise SweepError(
            str(sweep_dir), "", f"cannot read the results ({reason}): run the sweep again into this directory to rebuild them"
        ) from None


def _json_bytes(document: dict) -> bytes:
    return (json.dumps(document, indent=2) + "\n").encode("utf-8")


def _atomic_write(path: Path, write) -> None:
    """Write through ``write(handle)`` to a temporary file beside ``path``, flush it to disk, move it into place.

    A write that fails (disk full, no permission) leaves nothing half-written and is a one-line
    :class:`SweepError`: what was completed stays, and running the sweep again resumes.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}{TEMPORARY_SUFFIX}")
    try:
        with open(temporary, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        raise SweepError(
            str(path), "", f"cannot write: {error.strerror or error}; completed points are kept, run again to resume"
        ) from None
    finally:
        temporary.unlink(missing_ok=True)
