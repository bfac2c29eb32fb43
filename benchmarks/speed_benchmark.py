"""Speed benchmark, in one run: the exact flow network against a from-scratch reference solver, the
batched network's CPU per flow, a ring all-reduce's CPU per message against a direct all-to-all's,
and the command line's start-up.

    .venv/bin/python benchmarks/speed_benchmark.py            # writes reports/benchmarks/speed.md
    .venv/bin/python benchmarks/speed_benchmark.py --quick    # smaller cases, prints only
    .venv/bin/python benchmarks/speed_benchmark.py --exact-512 --baseline DIR
        # adds the 512-GPU exact case (the engine alone: about six minutes) and measures the command
        # line of another checkout of the project in DIR (e.g. an older commit) in the same run
    .venv/bin/python benchmarks/speed_benchmark.py --exact-512 --reference-512
        # the 512-GPU case against the from-scratch reference as well (the reference: most of an hour)

Every time is CPU time of this process (``time.process_time``), so other jobs on a shared machine
blur it less than wall time; the load average at the start and end is recorded with the results.
Speed is compared as ratios measured in this one run, never asserted in the unit tests. The report and
the goals it reads the figures against are in ``speed_report.py``.

The rings and uniform all-to-alls run on ranks of one non-blocking switch (one GPU per node, a
400 Gb/s NIC each: the 1,024-rank case simulators are usually compared on). The exchange of the
exact and batched cases: every GPU of nodes of 8 H100 (NVSwitch, one 400 Gb/s NIC per GPU) sends
``4096 x 8`` tokens of hidden 7168 in bf16 to Zipf-popular destinations (the byte matrix of
``network_benchmark.py``), one direct all-to-all-v starting at one instant. Latencies and software
costs are zero, so the engine and the reference (``maxmin_reference.py``, progressive filling from
scratch at every flow's end) solve the same problem: the same routes and link capacities, and the
finish time of every message must agree to float rounding (the "agreement" column): the run stops with
an error when any differs by more than ``AGREEMENT_TOLERANCE`` (relative), as it does when the two
reference solvers disagree with each other ("scratch_agreement"; NaN where the textbook one was not run).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from maxmin_reference import finish_times_s
from network_benchmark import GPUS_PER_NODE, byte_matrix
from probe import python_loop_s
from speed_report import markdown

from secmoe_sim.engine import run_plan
from secmoe_sim.engine.network.maxmin import max_min_rates
from secmoe_sim.plan.steps import AllReduce, AllToAll, LayerPlan
from secmoe_sim.plan.topology import Topology
from secmoe_sim.spec.communication import Communication, HostStagedStack
from secmoe_sim.spec.hardware import Cluster
from secmoe_sim.spec.loading import load_scenario
from secmoe_sim.spec.network import NetworkOptions
from secmoe_sim.spec.units import SECOND_FACTORS, SIZE_UNITS

REPORT = Path(__file__).resolve().parents[1] / "reports" / "benchmarks" / "speed.md"
FREE = Communication(default=HostStagedStack(kind="host_staged", message_overhead=0.0))
RING_BYTES = 64 * SIZE_UNITS["MiB"]  # the all-reduce buffer of each rank
TEXTBOOK_MAX_GPUS = 128
REFERENCE_MAX_GPUS = 256  # beyond, unless asked: the from-scratch reference would take most of an hour (G^3.8)
# Largest relative finish-time difference accepted between the engine and the reference (and between the two
# reference solvers): float rounding over thousands of re-solves stays near 1e-14 (3.3e-14 at 256 GPUs in
# reports/benchmarks/speed.md); a wrong rate or a missed re-solve moves finish times by far more.
AGREEMENT_TOLERANCE = 1e-9
US = SECOND_FACTORS["us"]
NAN = float("nan")


def cluster_of(gpus: int) -> Cluster:
    hardware = load_scenario("h100-nvlink-8").hardware
    zero = {"latency": 0.0}
    return hardware.model_copy(
        update={
            "nodes": gpus // GPUS_PER_NODE,
            "gpus_per_node": GPUS_PER_NODE,
            "intra_node": hardware.intra_node.model_copy(update=zero),
            "inter_node": hardware.inter_node.model_copy(update=zero) if hardware.inter_node else None,
            "communication": None,
        }
    )


def one_switch(ranks: int) -> Cluster:
    """``ranks`` GPUs of one NIC each on one non-blocking switch (nodes of one GPU)."""
    return cluster_of(GPUS_PER_NODE).model_copy(update={"nodes": ranks, "gpus_per_node": 1})


def plan_of(cluster: Cluster, steps: list) -> LayerPlan:
    """Each collective of ``steps`` on the GPUs it names."""
    programs = [[step for step in steps if gpu in step.gpus] for gpu in range(cluster.num_gpus)]
    return LayerPlan.of_programs(cluster, programs, "bf16", "benchmark")


def engine_cpu(plan: LayerPlan, mode: str, tolerance: float) -> tuple[float, object]:
    gc.collect()
    started = time.process_time()
    run = run_plan(plan, network=NetworkOptions(mode=mode, tolerance=tolerance), communication=FREE)
    return time.process_time() - started, run


def exact_against_reference(gpus: int, reference_max_gpus: int = REFERENCE_MAX_GPUS) -> dict:
    """The exchange in exact mode and in the reference (up to ``reference_max_gpus``): CPU of each and the
    largest finish-time difference."""
    cluster = cluster_of(gpus)
    matrix = byte_matrix(gpus)
    exchange = AllToAll.from_matrix("dispatch", "dispatch", tuple(range(gpus)), matrix)
    cpu_s, run = engine_cpu(plan_of(cluster, [exchange]), "exact", 0.0)
    transfers = run.timeline[run.timeline["kind"] == "transfer"]
    topology = Topology(cluster)
    sentinel = topology.num_links
    routes = [topology.route(int(s), int(d))[0].links for s, d in zip(exchange.messages.src, exchange.messages.dst)]
    width = max(len(links) for links in routes)
    links = np.full((len(routes), width), sentinel, dtype=np.int64)
    for row, route in enumerate(routes):
        links[row, : len(route)] = route
    capacity = np.append(topology.capacity_bytes_per_s, np.inf)
    order = {(s, d): i for i, (s, d) in enumerate(zip(exchange.messages.src.tolist(), exchange.messages.dst.tolist()))}
    engine_finish = np.empty(len(routes))  # from the instant the exchange starts (after its host issue)
    durations = (transfers["finished_at"] - transfers["started_at"]).tolist()
    for s, d, duration in zip(transfers["src"].tolist(), transfers["dst"].tolist(), durations):
        engine_finish[order[(s, d)]] = duration
    row = {
        "gpus": gpus,
        "flows": len(routes),
        "engine_cpu_s": cpu_s,
        "recomputations": run.network_statistics.get("rate_recomputations", float("nan")),
        "recomputed_flows": run.network_statistics.get("recomputed_flows", float("nan")),
    }
    if gpus > reference_max_gpus:  # the engine alone; NaN: not measured
        return {
            **row,
            "textbook_cpu_s": NAN,
            "scratch_cpu_s": NAN,
            "ratio": NAN,
            "scratch_agreement": NAN,
            "solves": NAN,
            "agreement": NAN,
        }
    gc.collect()
    started = time.process_time()  # from scratch at every end, with the engine's own solver: the incremental state's worth
    scratch, solves = finish_times_s(links, exchange.messages.payload_bytes, capacity, solver=_engine_solver)
    scratch_cpu_s = time.process_time() - started
    textbook_cpu_s = scratch_agreement = NAN  # NaN: no textbook run to compare the reference with
    reference = scratch
    if gpus <= TEXTBOOK_MAX_GPUS:  # its CPU grows as G^5: beyond this it would take most of an hour
        started = time.process_time()
        reference, _ = finish_times_s(links, exchange.messages.payload_bytes, capacity)
        textbook_cpu_s = time.process_time() - started
        scratch_agreement = float(np.max(np.abs(scratch - reference) / reference))
    agreement = float(np.max(np.abs(engine_finish - reference) / reference))
    return {
        **row,
        "textbook_cpu_s": textbook_cpu_s,
        "scratch_cpu_s": scratch_cpu_s,
        "ratio": cpu_s / scratch_cpu_s,
        "scratch_agreement": scratch_agreement,
        "solves": solves,
        "agreement": agreement,
    }


def check_agreement(row: dict) -> None:
    """Stop the benchmark when the engine, or the from-scratch reference, disagrees beyond float rounding."""
    if np.isnan(row["scratch_cpu_s"]):
        return  # the engine alone was run: nothing to compare
    checks = (("agreement", "engine against reference", False), ("scratch_agreement", "reference against textbook", True))
    for key, what, may_be_nan in checks:  # scratch_agreement is NaN where the textbook solver was not run
        value = row[key]
        if value <= AGREEMENT_TOLERANCE or (may_be_nan and np.isnan(value)):  # a NaN agreement fails
            continue
        raise SystemExit(
            f"speed_benchmark: {what} finish times differ by {value:.3g} (relative) at {row['gpus']} GPUs, "
            f"over the tolerance {AGREEMENT_TOLERANCE:g}"
        )


def _engine_solver(links: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    return max_min_rates(links, np.ones(links.shape[0]), capacity)


def batched(gpus: int) -> dict:
    cluster = cluster_of(gpus)
    exchange = AllToAll.from_matrix("dispatch", "dispatch", tuple(range(gpus)), byte_matrix(gpus))
    cpu_s, _ = engine_cpu(plan_of(cluster, [exchange]), "batched", 0.05)
    return {"gpus": gpus, "flows": len(exchange.messages), "cpu_s": cpu_s, "us_per_flow": cpu_s / len(exchange.messages) / US}


def ring_against_all_to_all(gpus: int) -> dict:
    """CPU per message of one ring all-reduce of ``RING_BYTES`` per rank and of a uniform direct all-to-all of the
    same bytes per rank, on ``gpus`` ranks of one switch."""
    cluster = one_switch(gpus)
    members = tuple(range(gpus))
    ring_cpu_s, ring_run = engine_cpu(plan_of(cluster, [AllReduce("ring", "ring", members, RING_BYTES)]), "exact", 0.0)
    ring_messages = int((ring_run.timeline["kind"] == "transfer").sum())
    uniform = np.full((gpus, gpus), RING_BYTES / gpus)
    exchange = AllToAll.from_matrix("a2a", "a2a", members, uniform)
    a2a_cpu_s, a2a_run = engine_cpu(plan_of(cluster, [exchange]), "exact", 0.0)
    a2a_messages = int((a2a_run.timeline["kind"] == "transfer").sum())
    return {
        "gpus": gpus,
        "ring_messages": ring_messages,
        "ring_us_per_message": ring_cpu_s / ring_messages / US,
        "a2a_messages": a2a_messages,
        "a2a_us_per_message": a2a_cpu_s / a2a_messages / US,
    }


def start_up(checkout: Path | None = None) -> dict:
    """CPU of ``secmoe-sim --help`` in a fresh interpreter, and of ``run h100-nvlink-8`` split into simulation and the
    rest; of the project in ``checkout`` (another copy, e.g. an older commit) instead of this one when given."""
    environment = dict(os.environ)
    if checkout is not None:
        environment["PYTHONPATH"] = str(checkout)  # ahead of the installed copy on the import path
    command = [sys.executable, "-c", "import sys; from secmoe_sim.cli import main; sys.exit(main(['--help']))"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    elsewhere = tempfile.gettempdir()  # not the project's root, whose copy would shadow the one asked for
    subprocess.run(command, check=True, capture_output=True, env=environment, cwd=elsewhere)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    help_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    script = (
        "import time, io, contextlib, json, tempfile\n"
        "t0 = time.process_time()\n"
        "from secmoe_sim.cli import main\n"
        "import secmoe_sim.simulation as sim\n"
        "original, spent = sim.simulate, []\n"
        "def timed(*a, **k):\n"
        "    t = time.process_time(); r = original(*a, **k); spent.append(time.process_time() - t); return r\n"
        "sim.simulate = timed\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['run', 'h100-nvlink-8', '--out', tempfile.mkdtemp()])\n"
        "total = time.process_time() - t0\n"
        "print(json.dumps({'run_cpu_s': total, 'simulation_cpu_s': sum(spent), 'module': sim.__file__}))\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True, env=environment, cwd=elsewhere
    ).stdout
    measured = json.loads(output.strip().splitlines()[-1])
    if checkout is not None and not Path(measured["module"]).resolve().is_relative_to(checkout.resolve()):
        raise SystemExit(f"speed_benchmark: --baseline {checkout} was not the copy imported ({measured['module']})")
    return {
        "help_cpu_s": help_cpu,
        "run_cpu_s": measured["run_cpu_s"],
        "simulation_cpu_s": measured["simulation_cpu_s"],
        "non_simulation_cpu_s": measured["run_cpu_s"] - measured["simulation_cpu_s"],
    }


PROBE_ITERATIONS = 4_000_000
PROBE_REPEATS = 3


def machine_probe() -> float:
    """CPU seconds of a fixed pure-Python loop (``probe.python_loop_s``; the fastest of ``PROBE_REPEATS``): the
    machine's speed, which on a shared machine drifts by more than the changes measured here, so that reports are
    compared at equal speed."""
    return min(python_loop_s(PROBE_ITERATIONS, time.process_time) for _ in range(PROBE_REPEATS))


def commit_of(checkout: Path) -> str:
    """The commit a checkout is at (``unknown`` outside git)."""
    found = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], check=False, capture_output=True, text=True
    )
    return found.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small cases only; print, do not write the report")
    parser.add_argument("--exact-512", action="store_true", help="add the 512-GPU exact case (about half an hour)")
    parser.add_argument(
        "--reference-512", action="store_true", help="with --exact-512: run the reference at 512 GPUs too (most of an hour)"
    )
    parser.add_argument("--baseline", type=Path, help="another checkout whose command line is measured in the same run")
    options = parser.parse_args()
    if options.reference_512 and not options.exact_512:
        parser.error("--reference-512 needs --exact-512 (the 512-GPU case it measures the reference on)")
    exact_sizes = (64, 128) if options.quick else (64, 128, 256) + ((512,) if options.exact_512 else ())
    batched_sizes = (64, 128) if options.quick else (64, 128, 256, 512, 1024)
    ring_sizes = (64,) if options.quick else (64, 256, 1024)
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load_start = os.getloadavg()[0]
    probe_start = machine_probe()
    results: dict = {"exact": [], "batched": [], "rings": []}
    reference_max_gpus = 512 if options.reference_512 else REFERENCE_MAX_GPUS
    for gpus in exact_sizes:
        results["exact"].append(exact_against_reference(gpus, reference_max_gpus))
        print(results["exact"][-1], flush=True)
        check_agreement(results["exact"][-1])
    for gpus in batched_sizes:
        results["batched"].append(batched(gpus))
        print(results["batched"][-1], flush=True)
    for gpus in ring_sizes:
        results["rings"].append(ring_against_all_to_all(gpus))
        print(results["rings"][-1], flush=True)
    results["start_up"] = start_up()
    print(results["start_up"], flush=True)
    if options.baseline is not None:
        results["baseline"] = {**start_up(options.baseline), "commit": commit_of(options.baseline)}
        print(results["baseline"], flush=True)
    results["probe_s"] = (probe_start, machine_probe())
    text = markdown(results, started, load_start, os.getloadavg()[0], TEXTBOOK_MAX_GPUS, RING_BYTES)
    if options.quick:
        print(text)
    else:
        REPORT.write_text(text, encoding="utf-8")
        print(f"wrote {REPORT}")


if __name__ == "__main__":
    main()
