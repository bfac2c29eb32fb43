"""The commands: each parses nothing itself, calls the library and hands the results to ``report``.

Every handler takes the parsed arguments and returns the exit code. Bad input raises a subclass of
:class:`~secmoe_sim.errors.InputError`, which :func:`secmoe_sim.cli.main` prints as one line with
exit code 2. Heavy modules (simpy, scipy, matplotlib, torch) are imported inside the handlers that
need them, so ``secmoe-sim --help`` starts fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from importlib import resources
from pathlib import Path

from secmoe_sim.errors import CalibrationError, UsageError
from secmoe_sim.simulation import check_work
from secmoe_sim.spec.loading import (
    SHIPPED_HARDWARE,
    SHIPPED_SCENARIOS,
    SHIPPED_STACKS,
    file_or_shipped,
    load_scenario,
    shipped_names,
    shipped_scenario_names,
    with_values,
)
from secmoe_sim.spec.scenario import Scenario

SHIPPED_KINDS = {  # what `list` and `show` cover: kind -> folder inside the package
    "scenario": (SHIPPED_SCENARIOS,),
    "hardware": (SHIPPED_HARDWARE,),
    "sweep": (SHIPPED_SCENARIOS, "sweeps"),
    "stack": (SHIPPED_STACKS,),
}

DEFAULT_OUT = Path("out")  # outputs land here unless --out says otherwise (ignored by git; reports/ is regenerated explicitly)
COMMITTED_REPORTS = Path("reports")
INTERRUPTED = 130  # the shell's code for a process ended by Ctrl-C (128 + SIGINT)
DEFAULT_TRACE_NAME = "trace.csv"
DEFAULT_HARDWARE_NAME = "hardware.yaml"
REFERENCE_WARMUP = 3  # untimed forward passes of each reference layer before its first timed round


def output_dir(option: str | None, default: Path) -> Path:
    """The output directory ``--out`` names (or ``default``), created now and checked writable, so a
    bad ``--out`` is a one-line error before any work, not a traceback after it."""
    path = Path(option) if option else default
    where = "--out" if option else "output directory"
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path} exists and is not a directory", where)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".secmoe-sim-write-check"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise UsageError(f"cannot write to {path}: {error.strerror or error}", where) from None
    return path


def output_file(option: str | None, default: Path) -> Path:
    """The output file ``--out`` names (or ``default``), its folder checked as :func:`output_dir` does."""
    path = Path(option) if option else default
    if path.is_dir():
        raise UsageError(f"{path} is a directory; give a file name", "--out")
    output_dir(str(path.parent), path.parent)
    return path


def scenario_of(args: argparse.Namespace) -> Scenario:
    """The command's scenario with its ``--set PATH=VALUE`` changes, validated as a scenario file is."""
    scenario = load_scenario(args.scenario)
    changes = dict(getattr(args, "set", None) or [])
    return with_values(scenario, changes, source=f"{args.scenario} (--set)") if changes else scenario


def cmd_run(args: argparse.Namespace) -> int:
    """Simulate every entry at every E; print the table; write the run's files."""
    from secmoe_sim.report.outputs import write_run_outputs
    from secmoe_sim.report.run_table import run_table
    from secmoe_sim.simulation import simulate

    scenario = scenario_of(args)
    check_work(scenario, args.allow_large, where=str(args.scenario))
    if args.replay and (scenario.model is not None or scenario.workload.layer.decoding):
        raise UsageError("replays one layer's forward or forward_backward; a model step or decode is simulated", "--replay")
    out_dir = output_dir(args.out, DEFAULT_OUT / scenario.name)
    replay = None
    model = None
    if args.replay:
        from secmoe_sim.calibrate.replay import replay_results
        from secmoe_sim.calibrate.trace import read_trace

        results, replay = replay_results(scenario, args.seed, read_trace(args.replay), Path(args.replay))
    elif scenario.model is not None:
        from secmoe_sim.analysis.model_step import layer_scenario, simulate_model

        results = simulate(layer_scenario(scenario), seed=args.seed)
        model = simulate_model(scenario, seed=args.seed, layers=results)
    else:
        results = simulate(scenario, seed=args.seed)
    changes = {path: value for path, value in args.set}
    paths = write_run_outputs(
        results,
        out_dir,
        trace_experts=args.trace_experts,
        gzip_trace=args.gzip_trace,
        figure_format=args.format,
        extra_metadata={"set": changes} if changes else None,
        scenario=scenario,
    )
    print(run_table(results))
    if model is not None:
        from secmoe_sim.report.model_table import model_table
        from secmoe_sim.report.outputs import write_csv

        write_csv(model.summary, out_dir / "model_summary.csv")
        paths.append(out_dir / "model_summary.csv")
        print(model_table(model))
    if replay is not None:
        from secmoe_sim.report.calibration import replay_text, replay_warning, write_replay

        write_replay(replay, out_dir)
        print(replay_text(replay))
        warning = replay_warning(replay)
        if warning:
            print(warning, file=sys.stderr)
    print(f"\nwrote {', '.join(p.name for p in paths)} to {out_dir}/")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    """The analytical model of every entry; no simulation."""
    from secmoe_sim.analysis.overview import overview, overview_document
    from secmoe_sim.report.analyze import analyze_text
    from secmoe_sim.report.text import as_json

    found = overview(scenario_of(args), alpha_s=args.alpha)
    print(as_json(overview_document(found)) if args.json else analyze_text(found))
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    if args.sweep:
        from secmoe_sim.sweep.spec import SweepSpec

        print(json.dumps(SweepSpec.model_json_schema(), indent=2))
    elif args.hardware:
        from secmoe_sim.spec.file_schema import hardware_file_schema

        print(json.dumps(hardware_file_schema(), indent=2))
    else:
        from secmoe_sim.spec.file_schema import scenario_file_schema

        print(json.dumps(scenario_file_schema(), indent=2))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """Every shipped file by kind: name, what it is (its description or first comment line), path."""
    from secmoe_sim.report.text import table_text, wrapped

    for kind, folder in SHIPPED_KINDS.items():
        paths = [(name, file_or_shipped(name, *folder)) for name in shipped_names(*folder)]
        rows = [(name, _what_it_is(path)) for name, path in paths if path is not None]
        where = Path(str(resources.files("secmoe_sim").joinpath(*folder)))
        print(f"{kind} files (in {where}):")
        print(table_text(["name", "what it is"], rows))
        print()
    print(
        wrapped(
            "Use a scenario or sweep by name (`secmoe-sim run h100-nvlink-8`), hardware as `hardware: NAME` in a "
            "scenario, a stack as `default: NAME` in `communication`; `secmoe-sim show NAME` prints a file to copy."
        )
    )
    return 0


def _what_it_is(path: Path, width: int = 72) -> str:
    """A shipped file's ``description``, else its first comment line, cut to ``width`` characters."""
    text = path.read_text(encoding="utf-8")
    described = next((line.partition(":")[2].strip() for line in text.splitlines() if line.startswith("description:")), "")
    comment = next((line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#")), "")
    found = described or comment
    return found if len(found) <= width else found[: width - 3].rstrip() + "..."


def cmd_show(args: argparse.Namespace) -> int:
    """Print a shipped file as it is, comments and sources included, to copy and edit."""
    kinds = [args.kind] if args.kind else list(SHIPPED_KINDS)
    found = {
        kind: file_or_shipped(args.name, *SHIPPED_KINDS[kind])
        for kind in kinds
        if args.name in shipped_names(*SHIPPED_KINDS[kind])
    }
    if not found:
        raise UsageError(f"no shipped {args.kind or 'file'} named {args.name!r} (see `secmoe-sim list`)", "NAME")
    if len(found) > 1:
        raise UsageError(f"{args.name!r} is shipped as {' and '.join(found)}: choose one with --kind", "NAME")
    path = next(iter(found.values()))
    assert path is not None
    sys.stdout.write(path.read_text(encoding="utf-8"))
    return 0


def cmd_alpha(args: argparse.Namespace) -> int:
    from secmoe_sim.analysis.alpha import SWEEP_MODES, measure_alpha
    from secmoe_sim.report.validation import alpha_summary_lines, write_alpha

    scenario = scenario_of(args)
    check_work(scenario, args.allow_large, where=str(args.scenario))
    modes = (args.sweep_mode,) if args.sweep_mode else SWEEP_MODES
    seed = scenario.seed if args.seed is None else args.seed
    out_dir = output_dir(args.out, DEFAULT_OUT / scenario.name / "alpha")
    measurements, _ = measure_alpha(scenario, modes, seed=seed)
    paths = write_alpha(measurements, scenario, seed, out_dir)
    if args.json:
        from secmoe_sim.report.text import as_json
        from secmoe_sim.report.validation import alpha_document

        print(as_json(alpha_document(measurements, scenario, seed)))
        return 0
    print(f"alpha of {scenario.name} (first sectional entry, every feasible E; overhead = wall-clock - compute):")
    print("\n".join(alpha_summary_lines(measurements)))
    print(f"\nwrote {', '.join(p.name for p in paths)} to {out_dir}/")
    return 0


def _scenarios_or_shipped(names: list[str]) -> list[Scenario]:
    return [load_scenario(name) for name in (names or shipped_scenario_names())]


def cmd_validate(args: argparse.Namespace) -> int:
    from secmoe_sim.analysis.validation import run_validation
    from secmoe_sim.report.validation import markdown_table, write_validation

    scenarios = _scenarios_or_shipped(args.scenarios)
    for scenario in scenarios:
        check_work(scenario, args.allow_large, where=scenario.name)
    out_dir = output_dir(args.out, DEFAULT_OUT / "validation")
    validation = run_validation(scenarios, with_variants=not args.no_variants, progress=sys.stderr.isatty())
    paths = write_validation(validation, out_dir, scenarios)
    print(markdown_table(validation.table))
    print(f"\nwrote {len(paths)} files to {out_dir}/")
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from secmoe_sim.analysis.recommend import recommend
    from secmoe_sim.report.recommend import recommendation_text
    from secmoe_sim.report.text import as_json

    scenario = scenario_of(args)
    check_work(scenario, args.allow_large, where=str(args.scenario))
    found = recommend(scenario, seed=args.seed)
    print(as_json(found.document()) if args.json else recommendation_text(found))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from secmoe_sim.report.validation_report import write_validation_report

    scenarios = _scenarios_or_shipped([])
    out_dir = output_dir(args.out, COMMITTED_REPORTS / "validation")
    readme = write_validation_report(scenarios, out_dir, progress=sys.stderr.isatty())
    print(f"wrote {readme}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from secmoe_sim.sweep.executors import require_dask
    from secmoe_sim.sweep.run import ExecutorChoice, report_lines, run_sweep
    from secmoe_sim.sweep.spec import load_sweep

    try:
        sweep = load_sweep(args.sweep)
        for point in sweep.points:  # every point is checked before any runs
            check_work(point.scenario, args.allow_large, where=f"{sweep.path} point {point.point_id} ({point.describe()})")
        choice = ExecutorChoice.from_options(args.workers, args.dask_local, args.scheduler)
        if choice.kind == "dask":
            require_dask()  # before anything is written
        out_dir = output_dir(args.out, DEFAULT_OUT / "sweeps" / sweep.spec.name)
        if not args.quiet:
            print(
                f"sweep {sweep.spec.name}: {len(sweep.points)} points over {sweep.base.name}, on {choice.describe()}", flush=True
            )
        report = run_sweep(sweep, out_dir, choice, progress=not args.quiet and sys.stderr.isatty(), csv=args.csv)
    except KeyboardInterrupt:
        print("secmoe-sim: interrupted", file=sys.stderr)
        return INTERRUPTED
    print("\n".join(report_lines(report)))
    return INTERRUPTED if report.interrupted else (1 if report.failed else 0)


def cmd_plot(args: argparse.Namespace) -> int:
    from secmoe_sim.sweep.figures import write_sweep_figures

    figures_dir = output_dir(args.out, Path(args.sweep_dir)) if args.out else None
    written, notes = write_sweep_figures(Path(args.sweep_dir), figures_dir, args.x, args.y, args.at, figure_format=args.format)
    for note in notes:
        print(note)
    print(f"wrote {', '.join(p.name for p in written)} to {written[0].parent}/")
    return 0


def cmd_fidelity(args: argparse.Namespace) -> int:
    from secmoe_sim.analysis.fidelity import fidelity_table
    from secmoe_sim.report.fidelity import summary_markdown, write_fidelity

    out_dir = output_dir(args.out, DEFAULT_OUT / "fidelity")
    fidelity = fidelity_table()
    paths = write_fidelity(fidelity, out_dir)
    table = fidelity.table
    shown = table.drop(columns=["source"]).assign(rel_error=table["rel_error"].map(lambda v: f"{v:.1%}"))
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print()
    print(summary_markdown(fidelity))
    print(f"wrote {', '.join(p.name for p in paths)} to {out_dir}/")
    return 0


# --- calibration -----------------------------------------------------------------------------


def _warn_if_busy() -> None:
    from secmoe_sim.calibrate.check_real import BUSY_LOAD_PER_CORE

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


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Microbenchmarks on the local device, written as a trace."""
    from secmoe_sim.calibrate.trace import write_trace

    out_dir = output_dir(args.out, DEFAULT_OUT / "calibration" / args.device)
    started_at = time.perf_counter()
    _, _, trace = _measure(args.device, args.quick, args.threads, args.dtypes)
    path = write_trace(trace, out_dir / DEFAULT_TRACE_NAME)
    counts = trace.rows.groupby("primitive").size()
    print(
        f"measured {len(trace.rows)} shapes ({', '.join(f'{n} {p}' for p, n in counts.items())}) on "
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
    counts = trace.rows.groupby("primitive").size()
    meta = trace.metadata
    print(
        f"imported {meta['ops_imported']} ops as {len(trace.rows)} shapes ({', '.join(f'{n} {p}' for p, n in counts.items())}) "
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
    """The GPU of a scenario (and its dtype) or of a hardware file, by path or shipped name."""
    from secmoe_sim.errors import ScenarioError
    from secmoe_sim.spec.loading import load_cluster

    try:
        scenario = load_scenario(target)
        return scenario.hardware.gpu, dtype or scenario.workload.layer.dtype, f"scenario {scenario.name}"
    except ScenarioError as as_scenario:
        try:
            cluster = load_cluster(target)
        except ScenarioError:
            raise as_scenario from None
        return cluster.gpu, dtype or "bf16", f"hardware {cluster.name}"


def _check_inputs(args: argparse.Namespace, out_dir: Path):
    """Device, threads, trace (measured now unless ``--trace``) and fitted cluster (fitted now
    unless ``--hardware``) of a check-real run, with the paths of the trace and hardware files."""
    from secmoe_sim.calibrate.fit import fit_trace
    from secmoe_sim.calibrate.hardware_file import write_hardware
    from secmoe_sim.calibrate.timing import make_device, set_threads
    from secmoe_sim.calibrate.trace import read_trace, write_trace
    from secmoe_sim.spec.loading import load_cluster

    if args.trace:
        trace_path, trace = Path(args.trace), read_trace(args.trace)
        device, threads = make_device(args.device), set_threads(args.threads)
        if trace.metadata.get("device", device.kind) != device.kind:
            raise CalibrationError(
                f"{trace_path} was measured on {trace.metadata['device']}, but check-real runs on {device.kind}"
            )
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
    scenario = check_real.check_scenario(cluster, workload, f"check-real-{device.kind}{'-quick' if args.quick else ''}")

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
