"""The calibration commands: microbenchmarks, profiler and table imports, fitting, predicting, check-real.

Like :mod:`secmoe_sim.cli.commands`, each handler takes the parsed arguments and returns the exit code;
torch is imported only inside the handlers that measure.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from secmoe_sim.cli.commands import DEFAULT_OUT, output_dir, output_file
from secmoe_sim.errors import CalibrationError
from secmoe_sim.spec.loading import load_scenario

DEFAULT_TRACE_NAME = "trace.csv"
DEFAULT_HARDWARE_NAME = "hardware.yaml"
REFERENCE_WARMUP = 3  # untimed forward passes of each reference layer before its first timed round


def _warn_if_busy() -> None:
    from secmoe_sim.calibrate.check_real import loaded_machine

    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if loaded_machine([load], cores):
        print(f"warning: load average {load:.2f} on {cores} cores: other processes may disturb the timings", file=sys.stderr)


def _measuring_process(device_kind: str, threads: int | None, allocator: str):
    """The device, thread count and host allocator (its description) this process measures with, set up."""
    from secmoe_sim.calibrate.host_allocator import set_host_allocator
    from secmoe_sim.calibrate.timing import make_device, set_threads

    return make_device(device_kind), set_threads(threads), set_host_allocator(allocator)


def _measure(device_kind: str, quick: bool, threads: int | None, dtypes: str | None, allocator: str):
    from secmoe_sim.calibrate.microbench import grid_for, measure

    device, threads, _ = _measuring_process(device_kind, threads, allocator)
    chosen = tuple(d.strip() for d in dtypes.split(",")) if dtypes else device.default_dtypes
    _warn_if_busy()
    return device, threads, measure(device, grid_for(device.kind, quick), chosen, threads)


def _warn_if_allocators_differ(trace_path: Path, trace_metadata: dict, checking_with: str) -> None:
    """Warn when a check times its layer with another host allocator than its trace was measured with:
    page faults then enter one side only (docs/calibration.md, section 3)."""
    from secmoe_sim.calibrate.host_allocator import allocator_kind

    measured_with = trace_metadata.get("host_allocator", "system (not recorded)")
    if allocator_kind(measured_with) != allocator_kind(checking_with):
        print(
            f"warning: {trace_path} was measured with host allocator {measured_with}, this check runs with "
            f"{checking_with}: op times may differ by page faults alone",
            file=sys.stderr,
        )


def _shape_counts(trace) -> str:
    """``"12 gemm, 4 attention"``: how many shapes of each primitive a trace holds."""
    counts = trace.rows.groupby("primitive").size()
    return ", ".join(f"{n} {primitive}" for primitive, n in counts.items())


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Microbenchmarks on the local device, written as a trace."""
    from secmoe_sim.calibrate.trace import write_trace

    out_dir = output_dir(args.out, DEFAULT_OUT / "calibration" / args.device)
    started_at = time.perf_counter()
    _, _, trace = _measure(args.device, args.quick, args.threads, args.dtypes, args.host_allocator)
    path = write_trace(trace, out_dir / DEFAULT_TRACE_NAME)
    print(
        f"measured {len(trace.rows)} shapes ({_shape_counts(trace)}) on "
        f"{trace.metadata['device_name']} ({args.device}, threads: {trace.metadata['threads']}, "
        f"{', '.join(trace.metadata['dtypes'])}) in {time.perf_counter() - started_at:.0f} s"
    )
    print(f"wrote {path}; next: secmoe-sim fit {path}")
    return 0


def cmd_import_profile(args: argparse.Namespace) -> int:
    """A torch.profiler Chrome trace into a calibration trace."""
    from secmoe_sim.calibrate.profile_import import import_profile
    from secmoe_sim.calibrate.trace import write_trace

    trace = import_profile(args.profile)
    out = output_file(args.out, Path(args.profile).with_suffix(".trace.csv"))
    write_trace(trace, out)
    meta = trace.metadata
    print(
        f"imported {meta['ops_imported']} ops as {len(trace.rows)} shapes ({_shape_counts(trace)}) "
        f"from a {meta['device']} profile; skipped {meta['ops_skipped_unsupported_dtype']} ops of unsupported dtypes, "
        f"{meta['kernels_unattributed']} kernels outside recognised ops"
    )
    print(f"wrote {out}")
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    """Fit a hardware file to a trace and report the fit error per op class."""
    from secmoe_sim.calibrate.fit import fit_trace
    from secmoe_sim.calibrate.hardware_file import load_base, write_hardware
    from secmoe_sim.calibrate.trace import read_trace

    trace_path = Path(args.trace)
    trace = read_trace(trace_path)
    base = load_base(args.base) if args.base else None
    result = fit_trace(trace, base)
    out = output_file(args.out, trace_path.parent / DEFAULT_HARDWARE_NAME)
    paths = write_hardware(result, trace, trace_path, out)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(result.errors.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    print(f"\nwrote {', '.join(str(p) for p in paths)}; include it in a scenario with `hardware: {out.name}`")
    return 0


def cmd_import_table(args: argparse.Namespace) -> int:
    """A table of measured shapes and times as a calibration trace."""
    from secmoe_sim.calibrate.table_import import import_table
    from secmoe_sim.calibrate.trace import write_trace

    trace = import_table(Path(args.table), args.op, args.dtype)
    out = output_file(args.out, Path(args.table).with_suffix(".trace.csv"))
    write_trace(trace, out)
    print(
        f"imported {len(trace.rows)} {args.op} shapes ({args.dtype}) from {args.table}; wrote {out}; next: secmoe-sim fit {out}"
    )
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Predicted op times of a list of shapes on a scenario's or a hardware file's GPU."""
    from secmoe_sim.calibrate.table_import import predict_shapes
    from secmoe_sim.report.calibration import prediction_text

    gpu, dtype, where = _gpu_of(args.target, args.dtype)
    table = predict_shapes(Path(args.shapes), gpu, dtype)
    print(f"predicted op times on {gpu.name} ({dtype}, from {where}):")
    print(prediction_text(table))
    if args.out:
        out = output_file(args.out, Path(args.out))
        table.to_csv(out, index=False)
        print(f"wrote {out}")
    return 0


def _gpu_of(target: str, dtype: str | None):
    """The GPU of a scenario (and its dtype) or of a hardware file (and the layer's default dtype), by
    path or shipped name."""
    from secmoe_sim.spec.loading import load_scenario_or_cluster
    from secmoe_sim.spec.scenario import Scenario
    from secmoe_sim.spec.workload import Layer

    found = load_scenario_or_cluster(target)
    if isinstance(found, Scenario):
        return found.hardware.gpu, dtype or found.workload.layer.dtype, f"scenario {found.name}"
    return found.gpu, dtype or str(Layer.model_fields["dtype"].default), f"hardware {found.name}"


def _check_inputs(args: argparse.Namespace, out_dir: Path):
    """Device, threads, trace (measured now unless ``--trace``) and fitted cluster (fitted now
    unless ``--hardware``) of a check-real run, with the paths of the trace and hardware files."""
    from secmoe_sim.calibrate.fit import fit_trace
    from secmoe_sim.calibrate.hardware_file import write_hardware
    from secmoe_sim.calibrate.trace import read_trace, write_trace
    from secmoe_sim.spec.loading import load_cluster

    if args.trace:
        trace_path, trace = Path(args.trace), read_trace(args.trace)
        device, threads, allocator = _measuring_process(args.device, args.threads, args.host_allocator)
        if trace.metadata.get("device", device.kind) != device.kind:
            raise CalibrationError(
                f"{trace_path} was measured on {trace.metadata['device']}, but check-real runs on {device.kind}"
            )
        _warn_if_allocators_differ(trace_path, trace.metadata, allocator)
        _warn_if_busy()
    else:
        print("calibrating (no --trace given)", flush=True)
        device, threads, trace = _measure(args.device, args.quick, args.threads, None, args.host_allocator)
        trace_path = write_trace(trace, out_dir / DEFAULT_TRACE_NAME)
    if args.hardware:
        return device, threads, trace, trace_path, load_cluster(args.hardware), Path(args.hardware)
    fitted = fit_trace(trace)
    hardware_path = write_hardware(fitted, trace, trace_path, out_dir / DEFAULT_HARDWARE_NAME)[0]
    print(f"fitted {hardware_path}:\n{fitted.errors.to_string(index=False, float_format=lambda v: f'{v:.1f}')}", flush=True)
    return device, threads, trace, trace_path, fitted.cluster, hardware_path


def cmd_check_real(args: argparse.Namespace) -> int:
    """Time the reference sectional layer across E and compare with the calibrated simulator."""
    from secmoe_sim.calibrate import check_real
    from secmoe_sim.calibrate.timing import environment
    from secmoe_sim.calibrate.trace import file_sha256
    from secmoe_sim.report.calibration import check_real_figure, check_real_text
    from secmoe_sim.report.outputs import write_json

    out_dir = output_dir(args.out, DEFAULT_OUT / "calibration" / args.device)
    out_dir.mkdir(parents=True, exist_ok=True)
    device, threads, trace, trace_path, cluster, hardware_path = _check_inputs(args, out_dir)
    workload = (
        load_scenario(args.scenario).workload.model_dump(mode="json")
        if args.scenario
        else check_real.default_workload(device.kind, args.quick)
    )
    if args.attention:
        workload = {**workload, "layer": {**workload["layer"], "attention": args.attention}}
    materialized = workload["layer"].get("attention") == "materialized"
    name = f"check-real-{device.kind}{'-quick' if args.quick else ''}{'-materialized' if materialized else ''}"
    scenario = check_real.check_scenario(cluster, workload, name)

    print(f"timing the reference layer on {device.name} (threads: {threads}), every E in turn", flush=True)
    started = environment(device, threads)
    measured = check_real.measure_reference(device, scenario, REFERENCE_WARMUP, args.repeats)
    predicted, replay = check_real.predict(scenario, trace, trace_path)
    result = check_real.compare(measured, predicted)

    result.table.to_csv(out_dir / "check_real.csv", index=False)
    result.summary.to_csv(out_dir / "check_real_summary.csv", index=False)
    figure = check_real_figure(result, f"check-real on {device.name} ({device.kind}, threads: {threads})")
    figure.savefig(out_dir / "check_real.png", dpi=120)
    include = os.path.relpath(hardware_path, out_dir) if cluster.num_gpus == 1 else None
    (out_dir / "scenario.yaml").write_text(check_real.scenario_yaml(scenario, include), encoding="utf-8")
    load_after = os.getloadavg()[0]
    cores = os.cpu_count() or 1
    loaded = check_real.loaded_machine([started["load_average_1min"], load_after], cores)
    write_json(
        out_dir / "check_real_metadata.json",
        {
            "command": "check-real",
            **started,
            "load_average_1min_after": load_after,
            "cpu_count": cores,
            "loaded_machine": loaded,
            "targets": {"median_abs_error_pct": check_real.TARGET_MEDIAN_ERROR_PCT, "regret_pct": check_real.TARGET_REGRET_PCT},
            "warmup": REFERENCE_WARMUP,
            "repeats": args.repeats,
            "trace": str(trace_path),
            "trace_sha256": file_sha256(trace_path),
            "hardware": str(hardware_path),
            "hardware_sha256": file_sha256(hardware_path),
            "scenario": scenario.name,
            "scenario_sha256": scenario.content_hash(),
            "replay": replay.metadata(),
            "results": result.summary.to_dict("records"),
        },
    )
    print("\n" + check_real_text(result))
    if loaded:
        print(
            f"warning: LOADED MACHINE: 1-minute load {started['load_average_1min']:.2f} before and {load_after:.2f} after on "
            f"{cores} cores (above {check_real.BUSY_LOAD_PER_CORE} per core): other processes disturbed the timings, so "
            "errors and regrets include that disturbance; rerun on an idle machine before trusting a miss",
            file=sys.stderr,
        )
    print(
        f"\nwrote check_real.csv, check_real_summary.csv, check_real.png, scenario.yaml, check_real_metadata.json to {out_dir}/"
    )
    return 0
