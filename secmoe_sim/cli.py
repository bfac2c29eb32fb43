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
