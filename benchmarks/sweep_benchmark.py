"""Sweep throughput on this machine: one worker, the local process pool and a Dask LocalCluster on the
same sweep, then a 1,000-point sweep of the H100 scenario; writes reports/benchmarks/sweep.md.

    .venv/bin/python benchmarks/sweep_benchmark.py [--workers 2] [--repeats 3] [--out reports/benchmarks/sweep.md]

Every executor runs the same sweep into a fresh directory; each is run ``--repeats`` times,
interleaved, and the fastest run of each counts (other processes on the machine only ever slow a
run down). Before every run a probe measures how many cores' worth of pure-Python work
``--workers`` processes get at that moment, so a run slowed by other load shows as such. Rates are
points per second of wall-clock: "end to end" from the moment the executor is asked for (process
pool or Dask cluster start included) to the last point written, "steady" without the start of the
executor.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import os
import platform
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import yaml
from probe import python_loop_s

from secmoe_sim.sweep.executors import ExecutorChoice, available_cores
from secmoe_sim.sweep.run import SweepReport, run_sweep
from secmoe_sim.sweep.spec import load_sweep
from secmoe_sim.version import __version__

POOL_GOAL = 1.6  # the local pool at least this many times one worker (on 2 cores)
DASK_GOAL = 0.85  # Dask at least this fraction of the pool's rate (within 15 %)
BURN_ITERATIONS = 10_000_000  # about a second of pure-Python work: the probe of the cores available

# The cheap architecture subset: the base's fixed_cluster sectional entry, token MoE and dense.
# Left out: the expert_per_gpu entry (its cluster grows to 64 GPUs, ~8x the cost of the rest)
# and dense-tp8.
ARCHITECTURES = [
    {
        "kind": "sectional_moe",
        "label": "sectional",
        "experts": "all_feasible",
        "pre_expert": {"enabled": True, "sequence_reduction": 4},
        "section_ffn": True,
        "min_section_width": 64,
        "sweep_mode": "fixed_cluster",
    },
    {"kind": "token_moe", "label": "token-moe", "num_experts": 8, "top_k": 2, "capacity_factor": 1.25},
    {"kind": "dense", "label": "dense"},
]
BANDWIDTHS = [f"{gb} GB/s" for gb in (50, 100, 150, 200, 300, 370, 450, 600, 750, 900)]
SEQ_LENS = [512 * k for k in range(1, 11)]
LAUNCH_PATH = "communication.default.protocols.0.launch"
LAUNCHES = [f"{us} us" for us in range(1, 11)]  # the NCCL LL launch of the base scenario's stack


def sweep_file(folder: Path, name: str, axes: list[dict], subset: bool = True) -> Path:
    document = {"schema_version": 1, "name": name, "base": "h100-nvlink-8", "axes": axes}
    if subset:
        document["overrides"] = {"workload.architectures": ARCHITECTURES}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


@dataclass(frozen=True)
class Timing:
    """One sweep run: its report and the CPU seconds this process and its (reaped) children spent."""

    report: SweepReport
    cpu_s: float

    @property
    def wall_s(self) -> float:
        return self.report.startup_s + self.report.run_s

    def rate(self, with_startup: bool = True) -> float:
        return self.report.computed / (self.wall_s if with_startup else self.report.run_s)

    @property
    def cores_used(self) -> float:
        return self.cpu_s / self.wall_s


def cpu_s() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(sweep_path: Path, choice: ExecutorChoice, folder: Path) -> Timing:
    out = Path(tempfile.mkdtemp(dir=folder))
    sweep = load_sweep(sweep_path)
    cpu_before = cpu_s()
    report = run_sweep(sweep, out, choice)
    if report.failed or report.interrupted or report.computed != report.total:
        raise SystemExit(f"benchmark sweep did not complete cleanly: {report.failed or 'interrupted'}")
    return Timing(report, cpu_s() - cpu_before)


def parallel_capacity(workers: int) -> float:
    """How many cores' worth of pure-Python work ``workers`` processes get from the machine right now:
    ``workers`` times the time of one burn alone over the time of ``workers`` burns at once."""
    with concurrent.futures.ProcessPoolExecutor(workers) as pool:
        list(pool.map(python_loop_s, [1] * workers))  # start every process first
        alone_s = pool.submit(python_loop_s, BURN_ITERATIONS).result()
        started = time.perf_counter()
        list(pool.map(python_loop_s, [BURN_ITERATIONS] * workers))
        return workers * alone_s / (time.perf_counter() - started)


def machine_lines() -> list[str]:
    cpuinfo = Path("/proc/cpuinfo")
    models = (
        [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        if cpuinfo.exists()
        else []
    )
    model = models[0] if models else platform.processor()
    try:
        dask_version = f"dask {version('dask')}, distributed {version('distributed')}"
    except PackageNotFoundError:
        dask_version = "dask not installed"
    return [
        f"- machine: {available_cores()} cores available ({os.cpu_count()} in the machine), {model}",
        f"- Python {platform.python_version()}, secmoe-sim {__version__}, {dask_version}, {platform.system()} {platform.release()}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="workers of the pool and of the Dask LocalCluster")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each executor; the fastest counts")
    parser.add_argument("--out", default="reports/benchmarks/sweep.md")
    args = parser.parse_args(argv)

    started = dt.datetime.now(dt.UTC)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        compare = sweep_file(
            folder,
            "executors-96",
            [
                {"path": "hardware.intra_node.bandwidth_per_direction", "values": BANDWIDTHS[:6]},
                {"path": "workload.layer.seq_len", "values": SEQ_LENS[:8]},
                {"path": LAUNCH_PATH, "values": LAUNCHES[4::5]},
            ],
        )
        choices = {
            "one worker (this process)": ExecutorChoice("serial", workers=1),
            f"local pool, {args.workers} workers": ExecutorChoice("local", workers=args.workers),
            f"Dask LocalCluster, {args.workers} workers": ExecutorChoice("dask", workers=args.workers),
        }
        runs: list[tuple[int, str, float, Timing]] = []  # repeat, executor, probed cores, timing
        for repeat in range(1, args.repeats + 1):
            for name, choice in choices.items():
                cores = parallel_capacity(args.workers)
                timing = timed(compare, choice, folder)
                runs.append((repeat, name, cores, timing))
                print(
                    f"run {repeat}: {name}: probe {cores:.2f} cores, start {timing.report.startup_s:.2f} s, "
                    f"run {timing.report.run_s:.2f} s, {timing.cores_used:.2f} cores used",
                    flush=True,
                )
        best = {name: max((t for _, n, _, t in runs if n == name), key=Timing.rate) for name in choices}

        large = sweep_file(
            folder,
            "h100-1000",
            [
                {"path": "hardware.intra_node.bandwidth_per_direction", "values": BANDWIDTHS},
                {"path": "workload.layer.seq_len", "values": SEQ_LENS},
                {"path": LAUNCH_PATH, "values": LAUNCHES},
            ],
        )
        load_started = time.perf_counter()
        points = len(load_sweep(large).points)
        validate_s = time.perf_counter() - load_started
        thousand = timed(large, ExecutorChoice("local", workers=args.workers), folder)
        print(f"1000-point sweep, local pool: {thousand.wall_s:.1f} s", flush=True)
        thousand_dask = timed(large, ExecutorChoice("dask", workers=args.workers), folder)
        print(f"1000-point sweep, Dask LocalCluster: {thousand_dask.wall_s:.1f} s", flush=True)

        full = sweep_file(folder, "h100-full-6", [{"path": "workload.layer.seq_len", "values": SEQ_LENS[:6]}], subset=False)
        full_timing = timed(full, ExecutorChoice("local", workers=args.workers), folder)
    load_after = os.getloadavg()

    one, pool, dask = (best[name] for name in choices)
    pool_ratio = pool.rate() / one.rate()
    dask_ratio = dask.rate() / pool.rate()
    dask_steady_ratio = dask.rate(with_startup=False) / pool.rate(with_startup=False)
    full_per_point_s = full_timing.wall_s / full_timing.report.computed
    lines = [
        "# Sweep throughput",
        "",
        (
            f"Measured by `benchmarks/sweep_benchmark.py` on {started:%Y-%m-%d %H:%M} UTC, in one run; regenerate with "
            "`.venv/bin/python benchmarks/sweep_benchmark.py`."
        ),
        "",
        *machine_lines(),
        f"- load average (1 min) {load_before[0]:.2f} before the run, {load_after[0]:.2f} after",
        "",
        "## Executors on the same sweep",
        "",
        (
            f"Base `h100-nvlink-8` with the architecture subset below, NVLink bandwidth ({', '.join(BANDWIDTHS[:6])}) x "
            f"seq_len ({', '.join(map(str, SEQ_LENS[:8]))}) x NCCL LL launch ({', '.join(LAUNCHES[4::5])}): "
            f"{one.report.total} points. Each executor ran {args.repeats} "
            'times, interleaved; the fastest run of each is shown (every run is listed at the end). "Cores used" is the '
            "CPU time of this process and its worker processes divided by the wall-clock: at most 1 for one worker, at most "
            f"{args.workers} for {args.workers} workers. The probe before each run measures the cores {args.workers} busy "
            f"processes get from the machine at that moment ({args.workers} x the time of a pure-Python loop alone / the "
            f"time of {args.workers} such loops at once): it caps what any executor can gain over one worker."
        ),
        "",
        (
            "| executor | points | executor start (s) | points run (s) | points/s end to end | points/s steady | cores used "
            "| vs one worker (end to end) |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, timing in best.items():
        lines.append(
            f"| {name} | {timing.report.computed} | {timing.report.startup_s:.2f} | {timing.report.run_s:.2f} "
            f"| {timing.rate():.2f} | {timing.rate(with_startup=False):.2f} | {timing.cores_used:.2f} "
            f"| {timing.rate() / one.rate():.2f}x |"
        )
    lines += [
        "",
        f"- local pool / one worker: **{pool_ratio:.2f}x** (goal at least {POOL_GOAL}x): "
        + (
            "met."
            if pool_ratio >= POOL_GOAL
            else f"missed by {POOL_GOAL - pool_ratio:.2f}x; the pool kept "
            f"{pool.cores_used:.2f} of {args.workers} cores busy, one worker {one.cores_used:.2f} of 1, while the probes "
            f"found {min(c for *_, c, _ in runs):.2f} to {max(c for *_, c, _ in runs):.2f} cores available to "
            f"{args.workers} processes."
        ),
        f"- Dask LocalCluster / local pool: **{dask_ratio:.2f}** end to end, {dask_steady_ratio:.2f} steady "
        f"(goal at least {DASK_GOAL}, i.e. within 15 %): "
        + ("met." if dask_ratio >= DASK_GOAL else f"missed by {DASK_GOAL - dask_ratio:.2f} end to end."),
        "",
        "## A 1,000-point sweep of the H100 scenario",
        "",
        (
            f"Base `h100-nvlink-8`, the same architecture subset, NVLink bandwidth ({', '.join(BANDWIDTHS)}) x seq_len "
            f"({', '.join(map(str, SEQ_LENS))}) x NCCL LL launch ({', '.join(LAUNCHES)}): {points} points, "
            f"{thousand.report.total} distinct, on the local pool of {args.workers} workers."
        ),
        "",
        f"- validating and expanding the 1,000 points: {validate_s:.2f} s",
        (
            f"- simulating and writing them on the local pool: **{thousand.wall_s:.1f} s** ({thousand.wall_s / 60:.1f} min, "
            f"{thousand.rate():.2f} points/s, {thousand.cores_used:.2f} cores used)"
        ),
        f"- the same 1,000 points on a Dask LocalCluster of {args.workers} workers: **{thousand_dask.wall_s:.1f} s** "
        f"({thousand_dask.rate():.2f} points/s end to end, cluster start {thousand_dask.report.startup_s:.2f} s, "
        f"{thousand_dask.cores_used:.2f} cores used): **{thousand_dask.rate() / thousand.rate():.2f}** of the pool's "
        f"rate at this scale (goal at least {DASK_GOAL}: "
        + ("met)" if thousand_dask.rate() / thousand.rate() >= DASK_GOAL else "missed)"),
        (
            f"- the full base scenario (all five entries, expert_per_gpu up to 64 GPUs), measured on "
            f"{full_timing.report.computed} points (seq_len {', '.join(map(str, SEQ_LENS[:6]))}) on the same pool: "
            f"{full_per_point_s:.2f} s per point, so 1,000 such points would take about {1000 * full_per_point_s / 60:.0f} min "
            "(extrapolated, not measured)"
        ),
        "",
        "## Every run",
        "",
        "| repeat | executor | probe (cores) | executor start (s) | points run (s) | points/s end to end | cores used |",
        "|---|---|---|---|---|---|---|",
        *[
            f"| {repeat} | {name} | {cores:.2f} | {t.report.startup_s:.2f} | {t.report.run_s:.2f} | {t.rate():.2f} "
            f"| {t.cores_used:.2f} |"
            for repeat, name, cores, t in runs
        ],
        "",
        "## Architecture subset",
        "",
        "Used above (`overrides: workload.architectures`):",
        "",
        "```yaml",
        yaml.safe_dump(ARCHITECTURES, sort_keys=False).rstrip(),
        "```",
        "",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
