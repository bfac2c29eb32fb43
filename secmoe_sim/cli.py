"""Command line: parse arguments, call the library, write files. Nothing else lives here.

Every user error (a bad scenario, a bad option value) prints one line on stderr and exits with 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from secmoe_sim.scenario import Scenario, ScenarioError, load_scenario, shipped_scenario_names
from secmoe_sim.units import UnitError, parse_quantity

USAGE_ERROR = 2
INTERRUPTED = 130  # the shell's code for a process ended by Ctrl-C (128 + SIGINT)


class UsageError(Exception):
    """A command-line value that cannot be used; the message is one line."""


def _duration(text: str) -> float:
    try:
        return parse_quantity(text, "duration")
    except UnitError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def cmd_run(args: argparse.Namespace) -> int:
    from secmoe_sim.report import write_run_outputs
    from secmoe_sim.simulation import simulate
    from secmoe_sim.console import run_table

    scenario = load_scenario(args.scenario)
    replay = None
    if args.replay:
        from secmoe_sim.calibrate.commands import replayed_run

        results, replay = replayed_run(scenario, args.seed, args.replay)
    else:
        results = simulate(scenario, seed=args.seed)
    out_dir = Path(args.out) if args.out else Path("reports") / scenario.name
    paths = write_run_outputs(results, out_dir)
    print(run_table(results))
    if replay is not None:
        replay.write(out_dir)
        print(replay.text())
    print(f"\nwrote {', '.join(p.name for p in paths)} to {out_dir}/")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from secmoe_sim.console import analyze_text

    scenario = load_scenario(args.scenario)
    print(analyze_text(scenario, alpha_s=args.alpha))
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(Scenario.model_json_schema(), indent=2))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    for name in shipped_scenario_names():
        scenario = load_scenario(name)
        print(f"{name:20s} {scenario.description}")
    return 0


def cmd_alpha(args: argparse.Namespace) -> int:
    from secmoe_sim.alpha import SWEEP_MODES, measure_alpha
    from secmoe_sim.validate import alpha_summary_lines, write_alpha

    scenario = load_scenario(args.scenario)
    modes = (args.sweep_mode,) if args.sweep_mode else SWEEP_MODES
    seed = scenario.seed if args.seed is None else args.seed
    measurements, _ = measure_alpha(scenario, modes, seed=seed)
    out_dir = Path(args.out) if args.out else Path("reports") / scenario.name / "alpha"
    paths = write_alpha(measurements, scenario, seed, out_dir)
    print(f"alpha of {scenario.name} (first sectional entry, every feasible E; overhead = wall-clock - compute):")
    print("\n".join(alpha_summary_lines(measurements)))
    print(f"\nwrote {', '.join(p.name for p in paths)} to {out_dir}/")
    return 0


def _scenarios_or_shipped(names: list[str]) -> list[Scenario]:
    return [load_scenario(name) for name in (names or shipped_scenario_names())]


def cmd_validate(args: argparse.Namespace) -> int:
    from secmoe_sim.validate import markdown_table, run_validation, write_validation

    scenarios = _scenarios_or_shipped(args.scenarios)
    validation = run_validation(scenarios, with_variants=not args.no_variants, progress=sys.stderr.isatty())
    out_dir = Path(args.out) if args.out else Path("reports") / "validation"
    paths = write_validation(validation, out_dir, scenarios)
    print(markdown_table(validation.table))
    print(f"\nwrote {len(paths)} files to {out_dir}/")
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from secmoe_sim.recommend import recommendation

    print(recommendation(load_scenario(args.scenario), seed=args.seed))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from secmoe_sim.validation_report import write_validation_report

    scenarios = _scenarios_or_shipped([])
    out_dir = Path(args.out) if args.out else Path("reports") / "validation"
    readme = write_validation_report(scenarios, out_dir, progress=sys.stderr.isatty())
    print(f"wrote {readme}")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def cmd_sweep(args: argparse.Namespace) -> int:
    from secmoe_sim.sweep import load_sweep
    from secmoe_sim.sweep_run import ExecutorChoice, report_lines, run_sweep

    try:
        sweep = load_sweep(args.sweep)
        choice = ExecutorChoice.from_options(args.workers, args.dask_local, args.scheduler)
        out_dir = Path(args.out) if args.out else Path("reports") / "sweeps" / sweep.spec.name
        if not args.quiet:
            print(f"sweep {sweep.spec.name}: {len(sweep.points)} points over {sweep.base.name}, on {choice.describe()}", flush=True)
        report = run_sweep(sweep, out_dir, choice, progress=not args.quiet and sys.stderr.isatty(), csv=args.csv)
    except KeyboardInterrupt:
        print("secmoe-sim: interrupted", file=sys.stderr)
        return INTERRUPTED
    print("\n".join(report_lines(report)))
    return INTERRUPTED if report.interrupted else (1 if report.failed else 0)


def cmd_plot(args: argparse.Namespace) -> int:
    from secmoe_sim.sweep_report import write_sweep_figures

    written, notes = write_sweep_figures(Path(args.sweep_dir), Path(args.out) if args.out else None, args.x, args.y, args.at)
    for note in notes:
        print(note)
    print(f"wrote {', '.join(p.name for p in written)} to {written[0].parent}/")
    return 0


def cmd_fidelity(args: argparse.Namespace) -> int:
    from secmoe_sim.fidelity import fidelity_table, write_fidelity

    table, efficiency = fidelity_table()
    out_dir = Path(args.out) if args.out else Path("reports") / "fidelity"
    paths = write_fidelity(table, efficiency, out_dir)
    shown = table.drop(columns=["source"]).assign(rel_error=table["rel_error"].map(lambda v: f"{v:.1%}"))
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"\nefficiency factors: NVLink {efficiency.nvlink:.3f}, RDMA {efficiency.rdma:.3f} of line rate")
    print(f"wrote {', '.join(p.name for p in paths)} to {out_dir}/")
    return 0


class OneLineErrorParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr and exit code 2."""

    def error(self, message: str):
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="secmoe-sim",
        description="Simulate sectional MoE layers against token-routed MoE and dense baselines on a GPU cluster.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="simulate every architecture entry of a scenario and write tables, trace and plot")
    run.add_argument("scenario", help="scenario file, or the name of a shipped scenario (see `list`)")
    run.add_argument("--out", help="output directory (default reports/<scenario name>/)")
    run.add_argument("--seed", type=int, help="random seed; overrides the scenario's")
    run.add_argument("--replay", metavar="TRACE", help="take op times from a calibration trace instead of the roofline "
                     "(interpolated between measured shapes; extrapolated ops flagged)")
    run.set_defaults(handler=cmd_run)

    analyze = commands.add_parser("analyze", help="the analytical model: parameters, FLOPs, S(E) and E_opt, no simulation")
    analyze.add_argument("scenario", help="scenario file, or the name of a shipped scenario")
    analyze.add_argument("--alpha", type=_duration, help="overhead coefficient alpha as a duration (e.g. '20 us'); "
                         "default: estimated from the hardware")
    analyze.set_defaults(handler=cmd_analyze)

    schema = commands.add_parser("schema", help="print the JSON Schema of scenario files")
    schema.set_defaults(handler=cmd_schema)

    listing = commands.add_parser("list", help="list the shipped scenarios")
    listing.set_defaults(handler=cmd_list)

    alpha = commands.add_parser("alpha", help="measure the empirical alpha: fit the simulated overhead against E")
    alpha.add_argument("scenario", help="scenario file, or the name of a shipped scenario")
    alpha.add_argument("--sweep-mode", choices=["fixed_cluster", "expert_per_gpu"], help="only this sweep mode (default: both)")
    alpha.add_argument("--out", help="output directory (default reports/<scenario name>/alpha/)")
    alpha.add_argument("--seed", type=int, help="random seed; overrides the scenario's")
    alpha.set_defaults(handler=cmd_alpha)

    validate = commands.add_parser("validate", help="analytical against simulated E_opt across scenarios and layer sizes")
    validate.add_argument("scenarios", nargs="*", help="scenario files or names (default: every shipped scenario)")
    validate.add_argument("--no-variants", action="store_true", help="skip the half/double seq_len and d_model variants")
    validate.add_argument("--out", help="output directory (default reports/validation/)")
    validate.set_defaults(handler=cmd_validate)

    recommend = commands.add_parser("recommend", help="best E, expected wall-clock, baselines, confidence, what to change")
    recommend.add_argument("scenario", help="scenario file, or the name of a shipped scenario")
    recommend.add_argument("--seed", type=int, help="random seed; overrides the scenario's")
    recommend.set_defaults(handler=cmd_recommend)

    fidelity = commands.add_parser("fidelity", help="the simulator against published NCCL and DeepEP measurements")
    fidelity.add_argument("--out", help="output directory (default reports/fidelity/)")
    fidelity.set_defaults(handler=cmd_fidelity)

    report = commands.add_parser("report", help="regenerate the validation report of the shipped scenarios")
    report.add_argument("--out", help="output directory (default reports/validation/)")
    report.set_defaults(handler=cmd_report)

    sweep = commands.add_parser("sweep", help="simulate a grid of what-if scenarios (resumable; local processes or Dask)")
    sweep.add_argument("sweep", metavar="SWEEP", help="sweep file, or the name of a shipped sweep (see docs/sweeps.md)")
    sweep.add_argument("--out", metavar="DIR", help="output directory (default reports/sweeps/<sweep name>/); re-running into it resumes")
    where = sweep.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_positive_int, metavar="N", help="local worker processes (default: one per core)")
    where.add_argument("--dask-local", type=_positive_int, metavar="N", help="start a Dask LocalCluster of N worker processes")
    where.add_argument("--scheduler", metavar="ADDRESS", help="run on a running Dask scheduler (e.g. tcp://host:8786)")
    sweep.add_argument("--quiet", action="store_true", help="no progress bar and no header line")
    sweep.add_argument("--csv", action="store_true", help="also write results.csv")
    sweep.set_defaults(handler=cmd_sweep)

    plot = commands.add_parser("plot", help="heatmaps of best E and of speedup over token MoE, analytical vs simulated E_opt")
    plot.add_argument("sweep_dir", metavar="SWEEP_DIR", help="output directory of `sweep` (holds results.parquet and metadata.json)")
    plot.add_argument("--out", metavar="DIR", help="where to write the PNG files (default: SWEEP_DIR)")
    plot.add_argument("--x", metavar="AXIS", help="axis path across the heatmaps (default: the first grid dimension)")
    plot.add_argument("--y", metavar="AXIS", help="axis path up the heatmaps (default: the next grid dimension)")
    plot.add_argument("--at", action="append", default=[], metavar="AXIS=VALUE",
                      help="fix another grid dimension at a value as written in the sweep file (default: its first value)")
    plot.set_defaults(handler=cmd_plot)

    from secmoe_sim.calibrate.commands import add_calibration_commands

    add_calibration_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (ScenarioError, UsageError) as error:
        print(f"secmoe-sim: error: {error}", file=sys.stderr)
        return USAGE_ERROR


if __name__ == "__main__":
    sys.exit(main())
