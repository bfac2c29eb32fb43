"""The command line, thin: parse arguments, call the library, hand results to ``report``.

:func:`main` is the one error path: the project's input errors (:class:`~secmoe_sim.errors.InputError`)
become ``secmoe-sim: error: FILE:LINE: field.path: reason`` and exit code 2; anything else is an
internal error, one line and exit code 1, with the traceback only under ``--debug``.
"""

from __future__ import annotations

import sys
import traceback

from secmoe_sim.errors import InputError

USAGE_ERROR = 2
INTERNAL_ERROR = 1


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (2 for any bad input, 1 for an internal error)."""
    from secmoe_sim.cli.parser import build_parser

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, --version, or a bad option (already printed as one line)
        return stop.code if isinstance(stop.code, int) else USAGE_ERROR
    try:
        import importlib

        module, _, function = args.handler.rpartition(".")
        return int(getattr(importlib.import_module(f"secmoe_sim.cli.{module}"), function)(args))
    except InputError as error:
        print(f"secmoe-sim: error: {error}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print("secmoe-sim: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - the one place where a bug becomes a message instead of a traceback
        if args.debug:
            traceback.print_exc()
        reason = str(error).splitlines()[0] if str(error) else ""
        print(
            f"secmoe-sim: internal error: {type(error).__name__}: {reason} "
            f"(a bug, not your input: rerun with --debug and report the traceback)",
            file=sys.stderr,
        )
        return INTERNAL_ERROR
