"""Running a sweep: simulate the points not yet done, record each as it finishes, merge the table.

A point is written the moment it finishes (see :mod:`secmoe_sim.sweep.store`), so an interruption
loses at most the points in flight: Ctrl-C stops the workers at once and merges what is done; a
point whose simulation raises is recorded with its error while the others go on. Re-running the
same sweep into the same directory skips the completed points and retries the failed ones.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from secmoe_sim.sweep.executors import (
    DaskExecutor,
    ExecutorChoice,
    LocalPool,
    PointOutcome,
    Result,
    require_dask,
    run_serial,
)
from secmoe_sim.sweep.spec import Sweep, SweepPoint
from secmoe_sim.sweep.store import SweepStore
from secmoe_sim.version import __version__


@dataclass
class SweepReport:
    """How a sweep run went, for the command line and the metadata."""

    sweep: Sweep
    out_dir: Path
    executor: str
    total: int
    reused: int = 0
    computed: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # point key -> error, for points with no result
    interrupted: bool = False
    startup_s: float = 0.0
    run_s: float = 0.0
    written: list[Path] = field(default_factory=list)

    @property
    def completed(self) -> int:
        return self.reused + self.computed

    @property
    def not_run(self) -> int:
        """Points neither completed nor failed: an interrupted run did not reach them."""
        return self.total - self.completed - len(self.failed)


def run_sweep(sweep: Sweep, out_dir: Path, choice: ExecutorChoice, progress: bool = False, csv: bool = False) -> SweepReport:
    """Simulate every point not yet completed in ``out_dir``, record each as it finishes, merge the table.

    Ctrl-C (KeyboardInterrupt) ends the run early but cleanly: the points done are merged and the
    report says ``interrupted``.
    """
    if choice.kind == "dask":
        require_dask()
    store = SweepStore(out_dir)
    with store.locked():
        store.remove_temporary_files()
        completed = store.completed_keys()
        unique = list({point.key: point for point in sweep.points}.values())
        pending = [point for point in unique if point.key not in completed]
        report = SweepReport(
            sweep=sweep, out_dir=Path(out_dir), executor=choice.describe(), total=len(unique), reused=len(unique) - len(pending)
        )
        if pending:
            _compute(pending, store, choice, report, progress)
        completed = store.completed_keys()
        for point in unique:
            record = None if point.key in completed else store.failure(point.key)
            if record is not None:
                report.failed[point.key] = record["error"]
        table = store.merge(sweep)
        report.written = store.write_results(table, csv)
        report.written.append(store.write_metadata(sweep_metadata(report)))
    return report


def _compute(pending: list[SweepPoint], store: SweepStore, choice: ExecutorChoice, report: SweepReport, progress: bool) -> None:
    started_at = time.perf_counter()
    executor: DaskExecutor | LocalPool | None = None
    bar = tqdm(
        total=report.total,
        initial=report.reused,
        unit="point",
        desc=report.sweep.spec.name,
        disable=not progress,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    try:
        results: Iterable[Result]
        if choice.kind == "dask":
            dask = DaskExecutor(choice)
            executor, results = dask, dask.run(pending)
        elif choice.kind == "local":
            pool = LocalPool(choice.workers or 1)
            executor, results = pool, pool.run(pending)
        else:
            results = run_serial(pending)
        report.startup_s = time.perf_counter() - started_at
        for point, outcome in results:
            _record(store, point, outcome, report)
            bar.update(1)
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        bar.close()
        if executor is not None:
            executor.close(now=report.interrupted)
        report.run_s = time.perf_counter() - started_at - report.startup_s


def _record(store: SweepStore, point: SweepPoint, outcome: PointOutcome | BaseException, report: SweepReport) -> None:
    if isinstance(outcome, PointOutcome) and outcome.version != __version__:
        outcome = PointOutcome(
            key=point.key,
            version=outcome.version,
            error=f"the worker runs secmoe-sim {outcome.version}, this process {__version__}: "
            "install the same version everywhere",
        )
    if isinstance(outcome, PointOutcome) and outcome.rows is not None:
        store.write_point(point.key, outcome.rows)
        report.computed += 1
        return
    if isinstance(outcome, PointOutcome):
        error, details = outcome.error, outcome.traceback
    else:
        error, details = f"{type(outcome).__name__}: {outcome}", None
    store.write_failure(
        point.key,
        {
            "point_key": point.key,
            "point_id": point.point_id,
            "values": point.written,
            "error": error,
            "traceback": details,
            "version": __version__,
            "scenario_sha256": point.scenario.content_hash(),
            "failed_at": _now(),
        },
    )


def sweep_metadata(report: SweepReport) -> dict:
    """metadata.json of a sweep directory: what produced the results (docs/sweeps.md)."""
    sweep = report.sweep
    by_key = {point.key: point for point in sweep.points}
    return {
        "tool": "secmoe-sim",
        "version": __version__,
        "command": "sweep",
        "sweep": sweep.spec.name,
        "sweep_file": _shown_path(sweep.path),
        "sweep_sha256": sweep.content_hash(),
        "description": sweep.spec.description,
        "base_scenario": sweep.base.name,
        "base_scenario_file": _shown_path(sweep.base_path),
        "base_scenario_sha256": sweep.base.content_hash(),
        "seed": sweep.base.seed,
        "sweep_modes": sorted({getattr(a, "sweep_mode", "fixed_cluster") for a in sweep.base.workload.architectures}),
        "overrides": sweep.spec.overrides,
        "axes": [
            {"path": axis.path, "values": axis.values, "resolved": sweep.resolved[axis.path]}
            for entry in sweep.spec.axes
            for axis in entry.axes
        ],
        "grid": sweep.grid,
        "points": len(sweep.points),
        "distinct_points": report.total,
        "completed": report.completed,
        "computed_this_run": report.computed,
        "failed": [{"point_key": key, "values": by_key[key].written, "error": error} for key, error in report.failed.items()],
        "not_run": report.not_run,
        "interrupted": report.interrupted,
        "executor": report.executor,
        "run_s": round(report.startup_s + report.run_s, 3),
        "created_at": _now(),
    }


def _shown_path(path: Path) -> str:
    """A path relative to the working directory when it lies below it (shipped files: inside the package)."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(Path.cwd())) if resolved.is_relative_to(Path.cwd()) else str(resolved)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def report_lines(report: SweepReport, max_failures: int = 10) -> list[str]:
    """What the command line prints after a sweep: counts, rate, failures, written files, how to resume."""
    computed_rate = f", {report.computed / report.run_s:.3g} points/s" if report.computed and report.run_s > 0 else ""
    lines = [
        (
            f"{report.total} distinct points: {report.computed} computed, {report.reused} already done, {len(report.failed)} failed"
            f" ({report.executor}, {report.startup_s + report.run_s:.1f} s{computed_rate})"
        )
    ]
    by_key = {point.key: point for point in report.sweep.points}
    for key, error in list(report.failed.items())[:max_failures]:
        point = by_key[key]
        lines.append(
            f"failed: point {point.point_id} ({point.describe()}): {error} [see {report.out_dir / 'failures' / key}.json]"
        )
    if len(report.failed) > max_failures:
        lines.append(f"... and {len(report.failed) - max_failures} more failed points in {report.out_dir / 'failures'}/")
    lines.append(f"wrote {', '.join(path.name for path in report.written)} to {report.out_dir}/")
    if report.interrupted:
        lines.append(
            f"interrupted: {report.completed} of {report.total} points done and saved; run the same command again to resume"
        )
    elif report.failed:
        lines.append("failed points are retried when the same command runs again")
    return lines
