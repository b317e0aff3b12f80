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

from ..errors import ChunkregError, TaskFailedError

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
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in _COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code.

    0: success; 1: some tiles/frames/chunks failed (listed; run again to retry them);
    2: bad input or options (nothing was written); 130: interrupted.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except TaskFailedError as exc:
        # Work was attempted and partly failed: exit 1, like a run whose report lists failures.
        print(f"chunkreg: {exc}", file=sys.stderr)
        return 1
    except ChunkregError as exc:
        print(f"chunkreg: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "chunkreg: interrupted; completed work is recorded, run again to resume.",
            file=sys.stderr,
        )
        return 130
