"""The commands: each parses nothing itself, calls the library and hands the results to ``report``.

Every handler takes the parsed arguments and returns the exit code. Bad input raises a subclass of
:class:`~secmoe_sim.errors.InputError`, which :func:`secmoe_sim.cli.main` prints as one line with
exit code 2. Heavy modules (simpy, scipy, matplotlib, torch) are imported inside the handlers that
need them, so ``secmoe-sim --help`` starts fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib import resources
from pathlib import Path

from secmoe_sim.errors import UsageError
from secmoe_sim.simulation import check_work
from secmoe_sim.spec.loading import (
    SHIPPED_HARDWARE,
    SHIPPED_SCENARIOS,
    SHIPPED_STACKS,
    SHIPPED_SWEEPS,
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
    "sweep": SHIPPED_SWEEPS,
    "stack": (SHIPPED_STACKS,),
}

DEFAULT_OUT = Path("out")  # outputs land here unless --out says otherwise (ignored by git; reports/ is regenerated explicitly)
COMMITTED_REPORTS = Path("reports")
INTERRUPTED = 130  # the shell's code for a process ended by Ctrl-C (128 + SIGINT)


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
    changes = set_changes(args)
    return with_values(scenario, changes, source=f"{args.scenario} (--set)") if changes else scenario


def set_changes(args: argparse.Namespace) -> dict:
    """The command's ``--set PATH=VALUE`` changes, path to value (none when the command has no --set)."""
    return dict(getattr(args, "set", None) or [])


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
    changes = set_changes(args)
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
    """Every shipped file by kind: name and what it is (its description or first comment line), under the
    folder that holds them."""
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
