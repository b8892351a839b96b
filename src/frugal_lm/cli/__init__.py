"""The `frugal` command line: parse, call the package, print. No logic of its own.

Each area registers its subcommands from its own module (`cli/data.py`, `cli/train.py`,
...), so a command's arguments sit next to the handler that reads them. Every user
mistake surfaces as a `FrugalError` and is printed as one line on stderr with a non-zero
exit code; anything else is a bug and keeps its traceback.

The machine's refusals are handled here once, for every command: an `OSError` that names
a file (permission denied, a file where a directory was expected, a missing parent) is the
user's path, and an `OSError` without one whose errno is a property of the machine (disk
full, quota, I/O error, read-only filesystem) is too; both print one line and exit 2. Any
other `OSError` without a file name (a socket, a bad descriptor, one raised by our own code)
is treated as a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys

from frugal_lm import __version__
from frugal_lm.cli import data, demo, evals, infer, interop, plan, serve, train
from frugal_lm.errors import FrugalError

# Order of `frugal --help`: the main job first, then the pipeline left to right.
AREAS = (demo, data, train, interop, infer, serve, evals, plan)
MACHINE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG})
"""OSErrors that are the machine's state, not a bug, even when Python gives no file name
(a write to an already open file on a full disk)."""


DESCRIPTION = (
    "Train your own language model on instruction -> response data, on a budget you can name "
    "before you start: prepare data, plan the cost, train, evaluate, chat, serve and export it. "
    "New here? `frugal demo` trains a small reasoning model on this machine in about 10 minutes."
)


class _Parser(argparse.ArgumentParser):
    """A subcommand's parser reports an unknown argument with its own usage line
    (argparse leaves that to the top-level parser, whose usage does not help)."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras and self.prog != "frugal":
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="frugal", description=DESCRIPTION)
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
            raise
        except OSError as error:
            message = os_error_line(error)
            if message is None:
                raise
            print(f"frugal {args.command}: error: {message}", file=sys.stderr)
            return FrugalError.exit_code
    except BrokenPipeError:
        return _reader_went_away()


def os_error_line(error: OSError) -> str | None:
    """`PATH: reason` for an OSError on a user's path or the machine's state; None for one
    that is probably a bug (no file name, not a machine errno)."""
    reason = error.strerror or str(error)
    if error.filename is not None:
        names = [name for name in (error.filename, error.filename2) if name is not None]
        return " -> ".join(os.fsdecode(n) if isinstance(n, (str, bytes)) else str(n) for n in names) + f": {reason}"
    if error.errno in MACHINE_ERRNOS:
        return reason
    return None


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
