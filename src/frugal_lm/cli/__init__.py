"""The `frugal` command: parse, call the package, print. No logic of its own.

Each area registers its subcommands from its own module (`cli/data.py`, `cli/train.py`,
...), so a command's arguments sit next to the handler that reads them. Every user
mistake surfaces as a `FrugalError` and is printed as one line on stderr with a non-zero
exit code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from frugal_lm import __version__
from frugal_lm.cli import data, demo, evals, infer, interop, plan, serve, train
from frugal_lm.errors import FrugalError

# Order of `frugal --help`: the main job first, then the pipeline left to right.
AREAS = (demo, data, train, interop, infer, serve, evals, plan)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="frugal", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"frugal-lm {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for area in AREAS:
        area.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        try:
            code = args.handler(args)
            sys.stdout.flush()  # here, not at exit: a reader that went away is then caught below
            return code
        except FrugalError as error:
            print(f"frugal {args.command}: error: {error}", file=sys.stderr)
            return error.exit_code
        except KeyboardInterrupt:
            print(f"frugal {args.command}: interrupted", file=sys.stderr)
            return 130
    except BrokenPipeError:
        return _reader_went_away()


def _reader_went_away() -> int:
    """`frugal ... | head`: the reader closed the pipe. Stop quietly, as `cat` does. Python
    flushes stdout once more at exit and would print an error about it, so stdout is first
    pointed at /dev/null (the recipe of Python's `signal` documentation)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (tests capture it): nothing to flush at exit
        pass
    return 1
