"""The ``chunkreg`` command line: a thin layer over the workflow functions.

Each sub-command lives in its own module exposing ``add_parser(subparsers)``, which
registers the command and sets ``func`` (taking the parsed namespace, returning an exit
code). Sub-commands never hold logic that the Python API lacks.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .._logging import configure_logging, verbosity_level
from ..errors import ChunkregError, TaskFailedError
from ._common import add_logging_arguments, storage_options_applied

__all__ = ["build_parser", "main"]

# Module names (in this package) that define sub-commands, in help order.
_COMMANDS: tuple[str, ...] = ("register", "flow", "blocks", "warp", "qc", "drift", "stitch")


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level argument parser with every sub-command registered."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="chunkreg",
        description="Register microscopy data far larger than memory, on a laptop or a Dask cluster.",
    )
    parser.add_argument("--version", action="version", version=f"chunkreg {__version__}")
    add_logging_arguments(parser, top_level=True)
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in _COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code.

    0: success; 1: some tiles/frames/chunks failed (listed; run again to retry them);
    2: bad input or options, or an output that cannot be written (nothing was written);
    3: with ``--strict``, every task succeeded but the quality control warns; 130: interrupted.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    configure_logging(verbosity_level(args.verbose, args.quiet, args.log_level))
    if args.quiet and hasattr(args, "progress"):
        args.progress = False
    try:
        with storage_options_applied(args):
            return int(args.func(args) or 0)
    except TaskFailedError as exc:
        # Work was attempted and partly failed: exit 1, like a run whose report lists failures.
        print(f"chunkreg: {exc}", file=sys.stderr)
        return 1
    except ChunkregError as exc:
        print(f"chunkreg: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. an output directory that is read-only
        from ..io import credentials_problem

        if problem := credentials_problem(exc):
            print(f"chunkreg: error: {problem}", file=sys.stderr)
            return 2
        where = f": {exc.filename}" if exc.filename else ""
        print(
            f"chunkreg: error: {exc.strerror or exc}{where}; choose an output location you can "
            "write to.",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print(
            "chunkreg: interrupted; completed work is recorded, run again to resume.",
            file=sys.stderr,
        )
        return 130
    except Exception as exc:
        from ..io import credentials_problem

        problem = credentials_problem(exc)
        if problem is None:
            raise
        print(f"chunkreg: error: {problem}", file=sys.stderr)
        return 2
