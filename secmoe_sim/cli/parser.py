"""The argument parser of ``secmoe-sim``: every command, option and argument type, and nothing else.

Option values are checked here, before any work starts (a duration has a unit, a count is a
whole number); each command's handler lives in :mod:`secmoe_sim.cli.commands` (the calibration
ones in :mod:`secmoe_sim.cli.calibration_commands`), named here as ``module.function`` and imported
only once a command runs, so ``secmoe-sim --help`` imports neither the models nor numpy.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from secmoe_sim.calibrate.host_allocator import DEFAULT_HOST_ALLOCATOR, HOST_ALLOCATORS
from secmoe_sim.version import __version__

SHIPPED_KINDS = ("scenario", "hardware", "sweep", "stack")  # what `list` and `show` cover (commands.SHIPPED_KINDS)
DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8")  # spec.hardware.Dtype, spelled out so --help imports no model
FIGURE_FORMATS = ("png", "svg", "pdf")  # report.outputs.FIGURE_FORMATS, spelled out so --help imports no matplotlib

USAGE_ERROR = 2


def _duration(text: str) -> float:
    """A duration with its unit (``'20 us'``): a bare number is refused, not read as seconds."""
    from secmoe_sim.spec.units import UnitError, parse_quantity

    if not any(character.isalpha() for character in text):
        raise argparse.ArgumentTypeError(f"give a unit, e.g. '{text} us' (a bare number is ambiguous)")
    try:
        value = parse_quantity(text, "duration")
    except UnitError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return value


SCHEDULER_ADDRESS = re.compile(r"^(?:(?:tcp|tls|inproc|ucx|ws|wss)://)?[A-Za-z0-9._\-\[\]:]+:\d{1,5}$")


def _scheduler(text: str) -> str:
    """A Dask scheduler address, ``[protocol://]host:port``."""
    if not SCHEDULER_ADDRESS.match(text):
        raise argparse.ArgumentTypeError(f"not a scheduler address: {text!r} (expected e.g. tcp://head:8786)")
    return text


MAX_SEED = 2**63 - 1


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be between 0 and 2**63 - 1, got {value}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _at_least_20(text: str) -> int:
    from secmoe_sim.calibrate.timing import MIN_REPEATS

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < MIN_REPEATS:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_REPEATS}, got {value}")
    return value


def _assignment(text: str) -> tuple[str, Any]:
    """``PATH=VALUE`` of ``--set``: a dotted scenario path and a YAML value (``8192``, ``200 GB/s``, ``[1, 2]``)."""
    import yaml

    from secmoe_sim.spec.paths import PATH_PATTERN
    from secmoe_sim.spec.yaml_input import parse_yaml

    path, equals, value = text.partition("=")
    path = path.strip()
    if not equals or not re.match(PATH_PATTERN, path):
        raise argparse.ArgumentTypeError(
            f"expected PATH=VALUE with a dotted field path (workload.layer.seq_len=8192), got {text!r}"
        )
    try:
        parsed, _ = parse_yaml(value)
    except yaml.YAMLError as error:
        raise argparse.ArgumentTypeError(
            f"{path}: value {value!r} is not valid YAML: {getattr(error, 'problem', error)}"
        ) from None
    return path, parsed


def _add_set(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--set",
        type=_assignment,
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="set one scenario field for this run (repeatable), validated as the file is: "
        "--set workload.layer.seq_len=8192 --set 'hardware.intra_node.bandwidth_per_direction=200 GB/s'",
    )


class OneLineErrorParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr and exit code 2, and which never guesses
    an option from its prefix (``--se`` is not ``--seed``)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="secmoe-sim",
        description="Simulate sectional MoE layers against token-routed MoE and dense baselines on a GPU cluster.",
    )
    parser.add_argument("--debug", action="store_true", help="on an internal error, print the traceback")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = subcommands.add_parser("run", help="simulate every architecture entry of a scenario and write tables, trace and plot")
    run.add_argument("scenario", help="scenario file, or the name of a shipped scenario (see `list`)")
    run.add_argument("--out", help="output directory (default out/<scenario name>/)")
    run.add_argument("--seed", type=_seed, help="random seed; overrides the scenario's")
    run.add_argument(
        "--trace-experts", type=_positive_int, metavar="E", help="trace each sectional entry at this E instead of its best"
    )
    run.add_argument("--gzip-trace", action="store_true", help="write trace.json.gz instead of trace.json")
    run.add_argument(
        "--replay",
        metavar="TRACE",
        help="take op times from a calibration trace instead of the roofline "
        "(interpolated between measured shapes; extrapolated ops flagged)",
    )
    run.add_argument("--allow-large", action="store_true", help="run even beyond the work budget (docs/model.md, section 9)")
    run.add_argument("--format", choices=FIGURE_FORMATS, default="png", help="file format of the figures (default png)")
    _add_set(run)
    run.set_defaults(handler="commands.cmd_run")

    analyze = subcommands.add_parser("analyze", help="the analytical model: parameters, FLOPs, S(E) and E_opt, no simulation")
    analyze.add_argument("scenario", help="scenario file, or the name of a shipped scenario")
    analyze.add_argument(
        "--alpha",
        type=_duration,
        help="overhead coefficient alpha as a duration (e.g. '20 us'); default: estimated from the hardware",
    )
    analyze.add_argument("--json", action="store_true", help="print the same content as one JSON object")
    _add_set(analyze)
    analyze.set_defaults(handler="commands.cmd_analyze")

    schema = subcommands.add_parser("schema", help="print the JSON Schema of scenario files (or of sweep or hardware files)")
    kind = schema.add_mutually_exclusive_group()
    kind.add_argument("--sweep", action="store_true", help="the schema of sweep files instead")
    kind.add_argument("--hardware", action="store_true", help="the schema of stand-alone hardware files instead")
    schema.set_defaults(handler="commands.cmd_schema")

    listing = subcommands.add_parser(
        "list", help="list the shipped scenarios, hardware files, sweeps and stacks with their paths"
    )
    listing.set_defaults(handler="commands.cmd_list")

    show = subcommands.add_parser("show", help="print a shipped file (scenario, hardware, sweep or stack) to copy")
    show.add_argument("name", metavar="NAME", help="a name that `list` shows")
    show.add_argument("--kind", choices=SHIPPED_KINDS, help="which kind, when a name is shipped as several")
    show.set_defaults(handler="commands.cmd_show")

    alpha = subcommands.add_parser("alpha", help="measure the empirical alpha: fit the simulated overhead against E")
    alpha.add_argument("scenario", help="scenario file, or the name of a shipped scenario")
    alpha.add_argument("--sweep-mode", choices=["fixed_cluster", "expert_per_gpu"], help="only this sweep mode (default: both)")
    alpha.add_argument("--out", help="output directory (default out/<scenario name>/alpha/)")
    alpha.add_argument("--seed", type=_seed, help="random seed; overrides the scenario's")
    alpha.add_argument("--json", action="store_true", help="print the same content as one JSON object")
    alpha.add_argument("--allow-large", action="store_true", help="run even beyond the work budget (docs/model.md, section 9)")
    _add_set(alpha)
    alpha.set_defaults(handler="commands.cmd_alpha")

    validate = subcommands.add_parser("validate", help="analytical against simulated E_opt across scenarios and layer sizes")
    validate.add_argument("scenarios", nargs="*", help="scenario files or names (default: every shipped scenario)")
    validate.add_argument("--no-variants", action="store_true", help="skip the half/double seq_len and d_model variants")
    validate.add_argument("--out", help="output directory (default out/validation/)")
    validate.add_argument("--allow-large", action="store_true", help="run even beyond the work budget (docs/model.md, section 9)")
    validate.set_defaults(handler="commands.cmd_validate")

    recommend = subcommands.add_parser("recommend", help="best E, expected wall-clock, baselines, confidence, what to change")
    recommend.add_argument("scenario", help="scenario file, or the name of a shipped scenario")
    recommend.add_argument("--seed", type=_seed, help="random seed; overrides the scenario's")
    recommend.add_argument("--json", action="store_true", help="print the same content as one JSON object")
    recommend.add_argument(
        "--allow-large", action="store_true", help="run even beyond the work budget (docs/model.md, section 9)"
    )
    _add_set(recommend)
    recommend.set_defaults(handler="commands.cmd_recommend")

    fidelity = subcommands.add_parser("fidelity", help="the simulator against published NCCL and DeepEP measurements")
    fidelity.add_argument("--out", help="output directory (default out/fidelity/)")
    fidelity.set_defaults(handler="commands.cmd_fidelity")

    report = subcommands.add_parser("report", help="regenerate the validation report of the shipped scenarios")
    report.add_argument("--out", help="output directory (default reports/validation/)")
    report.set_defaults(handler="commands.cmd_report")

    sweep = subcommands.add_parser("sweep", help="simulate a grid of what-if scenarios (resumable; local processes or Dask)")
    sweep.add_argument("sweep", metavar="SWEEP", help="sweep file, or the name of a shipped sweep (see docs/sweeps.md)")
    sweep.add_argument(
        "--out", metavar="DIR", help="output directory (default out/sweeps/<sweep name>/); re-running into it resumes"
    )
    where = sweep.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_positive_int, metavar="N", help="local worker processes (default: one per core)")
    where.add_argument("--dask-local", type=_positive_int, metavar="N", help="start a Dask LocalCluster of N worker processes")
    where.add_argument(
        "--scheduler", type=_scheduler, metavar="ADDRESS", help="run on a running Dask scheduler (e.g. tcp://host:8786)"
    )
    sweep.add_argument("--quiet", action="store_true", help="no progress bar and no header line")
    sweep.add_argument("--csv", action="store_true", help="also write results.csv")
    sweep.add_argument("--allow-large", action="store_true", help="run even beyond the work budget (docs/model.md, section 9)")
    sweep.set_defaults(handler="commands.cmd_sweep")

    plot = subcommands.add_parser("plot", help="heatmaps of best E and of speedup over token MoE, analytical vs simulated E_opt")
    plot.add_argument(
        "sweep_dir", metavar="SWEEP_DIR", help="output directory of `sweep` (holds results.parquet and metadata.json)"
    )
    plot.add_argument("--out", metavar="DIR", help="where to write the PNG files (default: SWEEP_DIR)")
    plot.add_argument("--x", metavar="AXIS", help="axis path across the heatmaps (default: the first grid dimension)")
    plot.add_argument("--y", metavar="AXIS", help="axis path up the heatmaps (default: the next grid dimension)")
    plot.add_argument(
        "--at",
        action="append",
        default=[],
        metavar="AXIS=VALUE",
        help="fix another grid dimension at a value as written in the sweep file (default: its first value)",
    )
    plot.add_argument("--format", choices=FIGURE_FORMATS, default="png", help="file format of the figures (default png)")
    plot.set_defaults(handler="commands.cmd_plot")

    _add_calibration_commands(subcommands)
    return parser


def _add_host_allocator(command) -> None:
    """``--host-allocator``: whether freed host memory stays in the process while it measures."""
    command.add_argument(
        "--host-allocator",
        choices=HOST_ALLOCATORS,
        default=DEFAULT_HOST_ALLOCATOR,
        help="caching: freed host memory is kept for reuse, so timings are the kernels' and not page faults' "
        "(default); system: the C library's defaults; recorded (docs/calibration.md, section 3)",
    )


def _add_calibration_commands(subcommands) -> None:
    """Register ``calibrate``, ``import-profile``, ``fit`` and ``check-real`` on the CLI's subparsers."""
    calibrate = subcommands.add_parser("calibrate", help="torch microbenchmarks of this machine, written as a calibration trace")
    calibrate.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="what to measure (default cpu)")
    calibrate.add_argument("--quick", action="store_true", help="a small grid (under a minute on 2 CPU cores)")
    calibrate.add_argument("--out", help="output directory (default out/calibration/<device>/); writes trace.csv")
    calibrate.add_argument(
        "--threads", type=_positive_int, help="torch intra-op threads (default: torch's, one per core); recorded"
    )
    calibrate.add_argument("--dtypes", help="comma-separated dtypes (default: fp32 on cpu; bf16,fp16 on cuda)")
    _add_host_allocator(calibrate)
    calibrate.set_defaults(handler="calibration_commands.cmd_calibrate")

    importer = subcommands.add_parser(
        "import-profile", help="a torch.profiler Chrome trace (record_shapes=True) as a calibration trace"
    )
    importer.add_argument("profile", help="the profiler's export_chrome_trace JSON (.json or .json.gz)")
    importer.add_argument("--out", help="trace file to write, .csv or .parquet (default: beside the profile, .trace.csv)")
    importer.set_defaults(handler="calibration_commands.cmd_import_profile")

    table = subcommands.add_parser(
        "import-table", help="a CSV of measured shapes and times (m,k,n,time_s for GEMMs) as a calibration trace"
    )
    table.add_argument(
        "table", metavar="TABLE", help="CSV with the op's shape columns and time_s (docs/calibration.md, section 4)"
    )
    table.add_argument("--op", choices=["gemm", "attention", "memory"], required=True, help="what the table measured")
    table.add_argument("--dtype", choices=DTYPES, default="bf16", help="its dtype (default bf16)")
    table.add_argument("--out", help="trace file to write, .csv or .parquet (default: beside the table, .trace.csv)")
    table.set_defaults(handler="calibration_commands.cmd_import_table")

    predict = subcommands.add_parser(
        "predict", help="predicted op times of a list of shapes, and the roofline term that bound each"
    )
    predict.add_argument("target", metavar="SCENARIO_OR_HARDWARE", help="a scenario or hardware file, or a shipped name")
    predict.add_argument("--shapes", required=True, help="CSV: an op column (gemm, attention, memory) and its shape columns")
    predict.add_argument("--dtype", choices=DTYPES, help="default: the scenario's, or bf16")
    predict.add_argument("--out", help="also write the predictions as CSV")
    predict.set_defaults(handler="calibration_commands.cmd_predict")

    fit = subcommands.add_parser(
        "fit", help="fit a hardware file to a calibration trace; fit error per op class on held-out shapes"
    )
    fit.add_argument("trace", help="calibration trace (.csv or .parquet)")
    fit.add_argument("--out", help="hardware file to write (default hardware.yaml beside the trace)")
    fit.add_argument(
        "--base",
        metavar="SCENARIO_OR_HARDWARE",
        help="take what the trace does not measure (node shape, fabrics) from this scenario or hardware file",
    )
    fit.set_defaults(handler="calibration_commands.cmd_fit")

    check = subcommands.add_parser(
        "check-real", help="time a real torch sectional layer across E against the calibrated simulator"
    )
    check.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where to run the layer (default cpu)")
    check.add_argument("--quick", action="store_true", help="a smaller layer (and the quick grid if it calibrates)")
    check.add_argument("--out", help="output directory (default out/calibration/<device>/)")
    check.add_argument("--trace", help="calibration trace to use (default: calibrate now and write trace.csv)")
    check.add_argument("--hardware", help="fitted hardware file to use (default: fit the trace and write hardware.yaml)")
    check.add_argument("--scenario", help="take the layer and sectional entries from this scenario (default: the built-in check)")
    check.add_argument(
        "--attention",
        choices=["flash", "materialized"],
        help="the layer's attention: torch's fused path (flash) or the math path that writes the scores (materialized); "
        "default: the scenario's, flash for the built-in check",
    )
    check.add_argument("--threads", type=_positive_int, help="torch intra-op threads (default: torch's); recorded")
    check.add_argument("--repeats", type=_at_least_20, default=25, help="timed forward passes per E (default 25, at least 20)")
    _add_host_allocator(check)
    check.set_defaults(handler="calibration_commands.cmd_check_real")
