"""The calibration subcommands: ``calibrate``, ``import-profile``, ``fit``, ``check-real``, and ``run --replay``.

Thin like :mod:`secmoe_sim.cli`, which registers them (:func:`add_calibration_commands`): parse
options, call the calibrate package, write files, print a summary. Every
:class:`~secmoe_sim.calibrate.CalibrationError` (torch missing, no CUDA device, a bad trace or
profile) becomes the command line's one-line usage error (exit code 2).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from secmoe_sim.calibrate import CalibrationError

DEFAULT_TRACE_NAME = "trace.csv"
DEFAULT_HARDWARE_NAME = "hardware.yaml"
BUSY_LOAD_PER_CORE = 0.5  # above this 1-minute load per core, warn that timings may be disturbed
REFERENCE_WARMUP = 3  # untimed forward passes of each reference layer before its first timed round


def _usage_errors(handler):
    """Run ``handler``; a CalibrationError becomes the CLI's one-line UsageError."""

    def wrapped(args: argparse.Namespace) -> int:
        from secmoe_sim.cli import UsageError

        try:
            return handler(args)
        except CalibrationError as error:
            raise UsageError(str(error)) from None

    wrapped.__doc__ = handler.__doc__
    return wrapped


def _warn_if_busy() -> None:
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > BUSY_LOAD_PER_CORE * cores:
        print(f"warning: load average {load:.2f} on {cores} cores: other processes may disturb the timings", file=sys.stderr)


def _measure(device_kind: str, quick: bool, threads: int | None, dtypes: str | None):
    from secmoe_sim.calibrate.microbench import grid_for, measure
    from secmoe_sim.calibrate.timing import make_device, set_threads

    device = make_device(device_kind)
    threads = set_threads(threads)
    chosen = tuple(d.strip() for d in dtypes.split(",")) if dtypes else device.default_dtypes
    _warn_if_busy()
    return device, threads, measure(device, grid_for(device.kind, quick), chosen, threads)


@_usage_errors
def cmd_calibrate(args: argparse.Namespace) -> int:
    """Microbenchmarks on the local device, written as a trace."""
    from secmoe_sim.calibrate.trace import write_trace

    started_at = time.perf_counter()
    _, _, trace = _measure(args.device, args.quick, args.threads, args.dtypes)
    out_dir = Path(args.out) if args.out else Path("reports") / "calibration" / args.device
    path = write_trace(trace, out_dir / DEFAULT_TRACE_NAME)
    counts = trace.rows.groupby("primitive").size()
    print(f"measured {len(trace.rows)} shapes ({', '.join(f'{n} {p}' for p, n in counts.items())}) on "
          f"{trace.metadata['device_name']} ({args.device}, threads: {trace.metadata['threads']}, "
          f"{', '.join(trace.metadata['dtypes'])}) in {time.perf_counter() - started_at:.0f} s")
    print(f"wrote {path}; next: secmoe-sim fit {path}")
    return 0


@_usage_errors
def cmd_import_profile(args: argparse.Namespace) -> int:
    """A torch.profiler Chrome trace into a calibration trace."""
    from secmoe_sim.calibrate.profile_import import import_profile
    from secmoe_sim.calibrate.trace import write_trace

    trace = import_profile(args.profile)
    out = Path(args.out) if args.out else Path(args.profile).with_suffix(".trace.csv")
    write_trace(trace, out)
    counts = trace.rows.groupby("primitive").size()
    meta = trace.metadata
    print(f"imported {meta['ops_imported']} ops as {len(trace.rows)} shapes ({', '.join(f'{n} {p}' for p, n in counts.items())}) "
          f"from a {meta['device']} profile; skipped {meta['ops_skipped_unsupported_dtype']} ops of unsupported dtypes, "
          f"{meta['kernels_unattributed']} kernels outside recognised ops")
    print(f"wrote {out}")
    return 0


@_usage_errors
def cmd_fit(args: argparse.Namespace) -> int:
    """Fit a hardware file to a trace and report the fit error per op class."""
    from secmoe_sim.calibrate.fit import fit_trace
    from secmoe_sim.calibrate.hardware_file import load_base, write_hardware
    from secmoe_sim.calibrate.trace import read_trace

    trace_path = Path(args.trace)
    trace = read_trace(trace_path)
    base = load_base(args.base) if args.base else None
    result = fit_trace(trace, base)
    out = Path(args.out) if args.out else trace_path.parent / DEFAULT_HARDWARE_NAME
    paths = write_hardware(result, trace, trace_path, out)
    print(result.errors.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    print(f"\nwrote {', '.join(str(p) for p in paths)}; include it in a scenario with `hardware: {out.name}`")
    return 0


def _check_inputs(args: argparse.Namespace, out_dir: Path):
    """Device, threads, trace (measured now unless ``--trace``) and fitted cluster (fitted now
    unless ``--hardware``) of a check-real run, with the paths of the trace and hardware files."""
    from secmoe_sim.calibrate.fit import fit_trace
    from secmoe_sim.calibrate.hardware_file import write_hardware
    from secmoe_sim.calibrate.timing import make_device, set_threads
    from secmoe_sim.calibrate.trace import read_trace, write_trace
    from secmoe_sim.scenario import load_cluster

    if args.trace:
        trace_path, trace = Path(args.trace), read_trace(args.trace)
        device, threads = make_device(args.device), set_threads(args.threads)
        if trace.metadata.get("device", device.kind) != device.kind:
            raise CalibrationError(f"{trace_path} was measured on {trace.metadata['device']}, but check-real runs on {device.kind}")
        _warn_if_busy()
    else:
        print("calibrating (no --trace given)", flush=True)
        device, threads, trace = _measure(args.device, args.quick, args.threads, None)
        trace_path = write_trace(trace, out_dir / DEFAULT_TRACE_NAME)
    if args.hardware:
        return device, threads, trace, trace_path, load_cluster(args.hardware), Path(args.hardware)
    fitted = fit_trace(trace)
    hardware_path = write_hardware(fitted, trace, trace_path, out_dir / DEFAULT_HARDWARE_NAME)[0]
    print(f"fitted {hardware_path}:\n{fitted.errors.to_string(index=False, float_format=lambda v: f'{v:.1f}')}", flush=True)
    return device, threads, trace, trace_path, fitted.cluster, hardware_path


@_usage_errors
def cmd_check_real(args: argparse.Namespace) -> int:
    """Time the reference sectional layer across E and compare with the calibrated simulator."""
    from secmoe_sim.calibrate import check_real
    from secmoe_sim.calibrate.timing import environment
    from secmoe_sim.calibrate.trace import file_sha256
    from secmoe_sim.report import write_json
    from secmoe_sim.scenario import load_scenario

    out_dir = Path(args.out) if args.out else Path("reports") / "calibration" / args.device
    out_dir.mkdir(parents=True, exist_ok=True)
    device, threads, trace, trace_path, cluster, hardware_path = _check_inputs(args, out_dir)
    workload = (load_scenario(args.scenario).workload.model_dump(mode="json") if args.scenario
                else check_real.default_workload(device.kind, args.quick))
    scenario = check_real.check_scenario(cluster, workload, f"check-real-{device.kind}{'-quick' if args.quick else ''}")

    print(f"timing the reference layer on {device.name} (threads: {threads}), every E in turn", flush=True)
    started = environment(device, threads)
    measured = check_real.measure_reference(device, scenario, REFERENCE_WARMUP, args.repeats)
    predicted, replay = check_real.predict(scenario, trace, trace_path)
    result = check_real.compare(measured, predicted)

    result.table.to_csv(out_dir / "check_real.csv", index=False)
    result.summary.to_csv(out_dir / "check_real_summary.csv", index=False)
    figure = check_real.plot(result, f"check-real on {device.name} ({device.kind}, threads: {threads})")
    figure.savefig(out_dir / "check_real.png", dpi=120)
    include = os.path.relpath(hardware_path, out_dir) if cluster.num_gpus == 1 else None
    (out_dir / "scenario.yaml").write_text(check_real.scenario_yaml(scenario, include), encoding="utf-8")
    write_json(out_dir / "check_real_metadata.json", {
        "command": "check-real", **started, "load_average_1min_after": os.getloadavg()[0], "warmup": REFERENCE_WARMUP,
        "repeats": args.repeats, "trace": str(trace_path), "trace_sha256": file_sha256(trace_path),
        "hardware": str(hardware_path), "hardware_sha256": file_sha256(hardware_path),
        "scenario": scenario.name, "scenario_sha256": scenario.content_hash(), "replay": replay.metadata(),
        "results": result.summary.to_dict("records"),
    })
    print("\n" + check_real.summary_text(result))
    print(f"\nwrote check_real.csv, check_real_summary.csv, check_real.png, scenario.yaml, check_real_metadata.json to {out_dir}/")
    return 0


def replayed_run(scenario, seed: int | None, trace_path: str):
    """``run --replay``: the results with replay columns, and the report of how ops were timed."""
    from secmoe_sim.calibrate.replay import replay_results
    from secmoe_sim.calibrate.trace import read_trace
    from secmoe_sim.cli import UsageError

    try:
        return replay_results(scenario, seed, read_trace(trace_path), Path(trace_path))
    except CalibrationError as error:
        raise UsageError(str(error)) from None


def _at_least_20(text: str) -> int:
    from secmoe_sim.calibrate.timing import MIN_REPEATS

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < MIN_REPEATS:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_REPEATS}, got {value}")
    return value


def add_calibration_commands(commands) -> None:
    """Register ``calibrate``, ``import-profile``, ``fit`` and ``check-real`` on the CLI's subparsers."""
    calibrate = commands.add_parser("calibrate", help="torch microbenchmarks of this machine, written as a calibration trace")
    calibrate.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="what to measure (default cpu)")
    calibrate.add_argument("--quick", action="store_true", help="a small grid (under a minute on 2 CPU cores)")
    calibrate.add_argument("--out", help="output directory (default reports/calibration/<device>/); writes trace.csv")
    calibrate.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's, one per core); recorded")
    calibrate.add_argument("--dtypes", help="comma-separated dtypes (default: fp32 on cpu; bf16,fp16 on cuda)")
    calibrate.set_defaults(handler=cmd_calibrate)

    importer = commands.add_parser("import-profile", help="a torch.profiler Chrome trace (record_shapes=True) as a calibration trace")
    importer.add_argument("profile", help="the profiler's export_chrome_trace JSON (.json or .json.gz)")
    importer.add_argument("--out", help="trace file to write, .csv or .parquet (default: beside the profile, .trace.csv)")
    importer.set_defaults(handler=cmd_import_profile)

    fit = commands.add_parser("fit", help="fit a hardware file to a calibration trace; fit error per op class on held-out shapes")
    fit.add_argument("trace", help="calibration trace (.csv or .parquet)")
    fit.add_argument("--out", help="hardware file to write (default hardware.yaml beside the trace)")
    fit.add_argument("--base", metavar="SCENARIO_OR_HARDWARE",
                     help="take what the trace does not measure (node shape, fabrics) from this scenario or hardware file")
    fit.set_defaults(handler=cmd_fit)

    check = commands.add_parser("check-real", help="time a real torch sectional layer across E against the calibrated simulator")
    check.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where to run the layer (default cpu)")
    check.add_argument("--quick", action="store_true", help="a smaller layer (and the quick grid if it calibrates)")
    check.add_argument("--out", help="output directory (default reports/calibration/<device>/)")
    check.add_argument("--trace", help="calibration trace to use (default: calibrate now and write trace.csv)")
    check.add_argument("--hardware", help="fitted hardware file to use (default: fit the trace and write hardware.yaml)")
    check.add_argument("--scenario", help="take the layer and sectional entries from this scenario (default: the built-in check)")
    check.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's); recorded")
    check.add_argument("--repeats", type=_at_least_20, default=25, help="timed forward passes per E (default 25, at least 20)")
    check.set_defaults(handler=cmd_check_real)
