"""Where a sweep's points run: in this process, a local process pool, or a Dask cluster.

* ``serial``: in this process, one point after another (``--workers 1``);
* ``local``: a ``concurrent.futures.ProcessPoolExecutor``, one worker process per core by default;
* ``dask``: a ``dask.distributed`` cluster, either a ``LocalCluster`` started here or a running
  scheduler reached by its address. dask is an optional extra, imported only here and only then.

Every executor runs :func:`simulate_point` and yields ``(point, outcome)`` as points finish, in
any order; the rows depend only on each point's scenario, so every executor gives the same table.
Workers only simulate and return rows; the sweep process writes every file, so Dask workers need
no shared file system.

A local pool worker that dies (killed, out of memory) breaks a ``ProcessPoolExecutor``:
:class:`LocalPool` starts a fresh pool and retries the points that were running, one at a time,
so a point that kills its worker is identified and reported while the others complete. Dask
reschedules the tasks of a lost worker itself and gives up on a task after repeated losses.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import signal
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from secmoe_sim.analysis.analytical import (
    PER_DEVICE_VIEW,
    Overhead,
    cost_model,
    hardware_alpha_s,
    nearest_feasible,
    sectional_terms,
)
from secmoe_sim.simulation import simulate
from secmoe_sim.spec.scenario import Scenario
from secmoe_sim.spec.workload import SectionalMoEArchitecture
from secmoe_sim.sweep.spec import SweepError, SweepPoint
from secmoe_sim.sweep.store import POINT_KEY
from secmoe_sim.version import __version__

DASK_INSTALL_HINT = "pip install -e '.[dask]'"
PARENT_WATCH_INTERVAL_S = 0.5  # how often a pool worker checks that the sweep process is still alive
DASK_CONNECT_TIMEOUT_S = 10


# --- one point (runs in a worker) ------------------------------------------------------------


@dataclass(frozen=True)
class PointOutcome:
    """What a worker returns for one point: its rows, or the error that stopped its simulation."""

    key: str
    version: str
    rows: pd.DataFrame | None = None
    error: str | None = None
    traceback: str | None = None


def simulate_point(key: str, scenario: Scenario) -> PointOutcome:
    """Simulate one point; an exception of the simulation becomes a recorded error, not a crash."""
    try:
        summary = simulate(scenario).summary
        rows = pd.concat([summary, analytical_columns(scenario, summary)], axis=1)
        return PointOutcome(key=key, version=__version__, rows=rows.assign(**{POINT_KEY: key}))
    except Exception as error:  # noqa: BLE001 - a point's failure is data to record; the sweep goes on
        return PointOutcome(
            key=key, version=__version__, error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc()
        )


def analytical_columns(scenario: Scenario, summary: pd.DataFrame) -> pd.DataFrame:
    """Per summary row: the per-device analytical S(E) and E_opt with the hardware-estimated alpha.

    ``e_opt_analytical`` is the continuous optimum, ``e_opt_analytical_feasible`` the feasible E
    next to it with the lower S(E) (see :func:`secmoe_sim.analysis.analytical.nearest_feasible`); both are
    empty for baseline rows.
    """
    layer, cluster = scenario.workload.layer, scenario.hardware
    columns = pd.DataFrame(
        {
            "alpha_hardware_s": np.nan,
            "analytical_s": np.nan,
            "e_opt_analytical": np.nan,
            "e_opt_analytical_feasible": pd.array([pd.NA] * len(summary), dtype="Int64"),
        },
        index=summary.index,
    )
    for arch in scenario.workload.architectures:
        if not isinstance(arch, SectionalMoEArchitecture):
            continue
        overhead = Overhead(alpha_s=hardware_alpha_s(layer, cluster, scenario.stacks.for_entry(arch.name)))
        model = cost_model(sectional_terms(layer, arch, cluster), PER_DEVICE_VIEW, arch.sweep_mode, cluster.num_gpus)
        e_opt = model.e_opt(overhead)
        rows = summary["label"] == arch.name
        columns.loc[rows, "alpha_hardware_s"] = overhead.alpha_s
        columns.loc[rows, "analytical_s"] = [float(model.total_s(e, overhead)) for e in summary.loc[rows, "num_experts"]]
        columns.loc[rows, "e_opt_analytical"] = e_opt
        columns.loc[rows, "e_opt_analytical_feasible"] = nearest_feasible(
            e_opt, scenario.expert_counts(arch), model, overhead
        ).best
    return columns


# --- executors ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExecutorChoice:
    """Where the points run: ``serial``, a ``local`` process pool, or ``dask`` (local cluster or scheduler)."""

    kind: Literal["serial", "local", "dask"]
    workers: int | None = None  # processes for local and a Dask LocalCluster
    scheduler: str | None = None  # address of a running Dask scheduler

    @classmethod
    def from_options(cls, workers: int | None, dask_local: int | None, scheduler: str | None) -> ExecutorChoice:
        if scheduler is not None:
            return cls("dask", scheduler=scheduler)
        if dask_local is not None:
            return cls("dask", workers=dask_local)
        count = workers or available_cores()
        return cls("serial", workers=1) if count == 1 else cls("local", workers=count)

    def describe(self) -> str:
        if self.kind == "serial":
            return "this process (1 worker)"
        if self.kind == "local":
            return f"local process pool ({self.workers} workers)"
        if self.scheduler is not None:
            return f"Dask scheduler at {self.scheduler}"
        return f"Dask LocalCluster ({self.workers} worker processes)"


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells, else the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


Result = tuple[SweepPoint, PointOutcome | BaseException]


def run_serial(points: list[SweepPoint]) -> Iterator[Result]:
    for point in points:
        yield point, simulate_point(point.key, point.scenario)


class WorkerDied(Exception):
    """The worker process simulating a point died (killed, or out of memory)."""


def _watch_parent(parent_pid: int) -> None:
    """Pool worker start-up: leave Ctrl-C to the sweep process, and exit if the sweep process dies.

    A terminal sends SIGINT to the whole process group; the sweep process decides what happens.
    If the sweep process is killed outright, nothing would end its workers, so each checks.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_WATCH_INTERVAL_S)
        os._exit(1)

    threading.Thread(target=watch, name="secmoe-sim-parent-watch", daemon=True).start()


class LocalPool:
    """A process pool that survives the death of a worker process.

    At most one point per worker is in flight, so when the pool breaks, the points in flight are
    exactly those that were running. They are retried in a fresh pool one at a time: a point that
    breaks the pool while running alone is the cause and is reported as :class:`WorkerDied`.
    """

    def __init__(self, workers: int):
        self.workers = workers
        self.pool: concurrent.futures.ProcessPoolExecutor | None = None

    def _start(self) -> concurrent.futures.ProcessPoolExecutor:
        self.pool = concurrent.futures.ProcessPoolExecutor(self.workers, initializer=_watch_parent, initargs=(os.getpid(),))
        return self.pool

    def run(self, points: list[SweepPoint]) -> Iterator[Result]:
        pool = self._start()
        queue: deque[SweepPoint] = deque(points)
        suspects: deque[SweepPoint] = deque()
        in_flight: dict[concurrent.futures.Future, SweepPoint] = {}
        while queue or suspects or in_flight:
            try:
                while suspects and not in_flight:  # isolate the points that were running when a worker died
                    future = pool.submit(simulate_point, suspects[0].key, suspects[0].scenario)
                    in_flight[future] = suspects.popleft()  # taken off only once the pool accepted it
                while queue and not suspects and len(in_flight) < self.workers:
                    future = pool.submit(simulate_point, queue[0].key, queue[0].scenario)
                    in_flight[future] = queue.popleft()
                done, _ = concurrent.futures.wait(in_flight, return_when=concurrent.futures.FIRST_COMPLETED)
                broken = any(isinstance(future.exception(), BrokenProcessPool) for future in done)
            except BrokenProcessPool:  # a worker died between two results: the pool refuses new points
                broken = True
            if broken:
                concurrent.futures.wait(in_flight)  # every future ends once the pool breaks
                alone = len(in_flight) == 1
                for future, point in list(in_flight.items()):
                    outcome = future.exception() or future.result()
                    if not isinstance(outcome, BrokenProcessPool):
                        yield point, outcome
                    elif alone:
                        yield (
                            point,
                            WorkerDied("the worker process died while simulating this point alone (killed, or out of memory)"),
                        )
                    else:
                        suspects.append(point)
                in_flight.clear()
                pool.shutdown(wait=True)
                pool = self._start()
                continue
            for future in done:
                yield in_flight.pop(future), future.exception() or future.result()

    def close(self, now: bool) -> None:
        """Shut the pool down; ``now`` abandons the points in flight by ending the worker processes."""
        if self.pool is None:
            return
        if now:
            # Python 3.14 has ProcessPoolExecutor.terminate_workers(); before it, the processes are
            # reachable only through the private _processes mapping.
            processes = list((getattr(self.pool, "_processes", None) or {}).values())
            self.pool.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                process.terminate()
        self.pool.shutdown(wait=True, cancel_futures=True)


def worker_version() -> str:
    """Run on a Dask worker: importing this module loads the simulator; the version says which."""
    return __version__


def require_dask():
    """The ``distributed`` module, or a one-line :class:`SweepError` saying how to install it."""
    try:
        import distributed
    except ImportError:
        raise SweepError("--dask-local/--scheduler", "", f"dask is not installed: {DASK_INSTALL_HINT}") from None
    return distributed


class DaskExecutor:
    """Points as tasks of a dask.distributed cluster: a LocalCluster started here, or a running scheduler."""

    def __init__(self, choice: ExecutorChoice):
        distributed = require_dask()
        self.distributed = distributed
        self.cluster = None
        if choice.scheduler is None:
            import dask

            # The workers' statistical profiler samples every task's stack 100 times a second, a few
            # per cent of a pure-Python simulation's time; nothing here reads the profiles.
            with dask.config.set({"distributed.worker.profile.enabled": False}):
                self.cluster = distributed.LocalCluster(
                    n_workers=choice.workers,
                    processes=True,
                    threads_per_worker=1,
                    dashboard_address=None,
                    silence_logs=logging.ERROR,
                )
        self.futures: dict = {}
        try:
            address = self.cluster if self.cluster is not None else choice.scheduler
            self.client = distributed.Client(address, timeout=DASK_CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as error:
            self.close(now=True)
            raise SweepError(str(choice.scheduler), "", f"cannot connect to the Dask scheduler: {error}") from None
        self._check_workers(choice)

    def _check_workers(self, choice: ExecutorChoice) -> None:
        """Load the simulator on every connected worker now, and check that it is this version.

        Loading it here, all workers at once, keeps the import out of the first points; a worker
        that cannot import secmoe_sim, or has another version, is reported before anything runs.
        Workers that join later are checked point by point (see ``PointOutcome.version``).
        """
        try:
            versions = self.client.run(worker_version)
        except Exception as error:  # noqa: BLE001 - whatever a worker raised while importing secmoe_sim
            self.close(now=True)
            raise SweepError(
                str(choice.scheduler or "--dask-local"),
                "",
                f"a Dask worker cannot load secmoe_sim: {type(error).__name__}: {error}",
            ) from None
        mismatched = {worker: version for worker, version in versions.items() if version != __version__}
        if mismatched:
            self.close(now=True)
            worker, version = next(iter(mismatched.items()))
            raise SweepError(
                str(choice.scheduler or "--dask-local"),
                "",
                f"{len(mismatched)} Dask worker(s) run another secmoe-sim (e.g. {worker}: {version}; "
                f"this process: {__version__}): install the same version everywhere",
            )

    def run(self, points: list[SweepPoint]) -> Iterator[Result]:
        self.futures = {
            self.client.submit(simulate_point, point.key, point.scenario, key=f"secmoe-sim-point-{point.key}"): point
            for point in points
        }
        for future in self.distributed.as_completed(list(self.futures)):
            point = self.futures.pop(future)
            if future.status == "finished":
                outcome = future.result()
            elif future.status == "error":  # e.g. KilledWorker: the task lost its worker too often
                outcome = future.exception()
            else:
                outcome = RuntimeError(f"the Dask task ended as {future.status!r}")
            future.release()
            yield point, outcome

    def close(self, now: bool) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            if self.futures:
                client.cancel(list(self.futures))
            client.close()
        if self.cluster is not None:
            self.cluster.close()
