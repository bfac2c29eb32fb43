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
    results = simulate(scenario, seed=args.seed)
    out_dir = Path(args.out) if args.out else Path("reports") / scenario.name
    paths = write_run_outputs(results, out_dir)
    print(run_table(results))
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

    report = commands.add_parser("report", help="regenerate the validation report of the shipped scenarios")
    report.add_argument("--out", help="output directory (default reports/validation/)")
    report.set_defaults(handler=cmd_report)
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
