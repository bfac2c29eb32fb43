"""The command line, thin: parse arguments, call the library, hand results to ``report``.

:func:`main` is the one place where input errors become a one-line message and exit code 2.
"""

from __future__ import annotations

import sys

from secmoe_sim.errors import InputError

USAGE_ERROR = 2


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (2 for any bad input, printed as one line)."""
    from secmoe_sim.cli.parser import build_parser

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except InputError as error:
        print(f"secmoe-sim: error: {error}", file=sys.stderr)
        return USAGE_ERROR
