"""Options and output shared by every sub-command that runs on a cluster."""

from __future__ import annotations

import argparse
import sys

from .._logging import LEVELS

__all__ = [
    "EXIT_QC_WARNING",
    "add_cluster_arguments",
    "add_input_check_arguments",
    "add_logging_arguments",
    "cluster_options",
    "finish",
    "int_tuple",
]


def add_logging_arguments(parser: argparse.ArgumentParser, *, top_level: bool = False) -> None:
    """Add ``-v/--verbose``, ``-q/--quiet`` and ``--log-level``.

    They are accepted before the command (``chunkreg -v flow ...``) and after it; the
    sub-command's copies default to "not given" so they never undo the top-level ones.
    """
    group = parser.add_argument_group("messages") if not top_level else parser

    def default(value):
        return value if top_level else argparse.SUPPRESS

    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=default(0),
        help="say more: -v what runs where (cluster, plan, retries), -vv debug messages",
    )
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default(False),
        help="errors and the final summary only (no progress lines, no warnings)",
    )
    group.add_argument(
        "--log-level",
        type=str.upper,
        choices=LEVELS,
        default=default(None),
        help="log level (overrides -v/-q)",
    )


def int_tuple(text: str) -> tuple[int, ...] | int:
    """Parse ``"64"`` as 64 and ``"64,128,128"`` as a tuple (argparse ``type=``)."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or N,N,...; got {text!r}") from None
    return values[0] if len(values) == 1 else values


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--scheduler``, ``--workers``, ``--overwrite``, ``--no-progress`` and ``--strict``."""
    group = parser.add_argument_group("execution")
    group.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="address of a running Dask scheduler (tcp://host:8786), or 'synchronous' to run "
        "in this process; default: start a local cluster",
    )
    group.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="workers of the local cluster (default: one per core)",
    )
    group.add_argument(
        "--overwrite", action="store_true", help="replace an existing output instead of resuming it"
    )
    group.add_argument(
        "--no-progress", dest="progress", action="store_false", help="do not draw progress bars"
    )
    group.add_argument(
        "--strict",
        action="store_true",
        help="exit with status 3 when every task succeeded but the quality control warns (e.g. "
        "registration made the images less similar)",
    )
    add_logging_arguments(parser)


def cluster_options(args: argparse.Namespace) -> dict:
    """Keyword arguments for the workflow functions from the parsed execution options."""
    return {
        "scheduler": args.scheduler,
        "n_workers": args.workers,
        "overwrite": args.overwrite,
        "progress": args.progress,
    }


#: Exit status of a run whose tasks all succeeded but whose quality control warns, under
#: ``--strict``.
EXIT_QC_WARNING = 3


def finish(reports, *, strict: bool = False) -> int:
    """Print each run report's summary and its quality-control warnings; return the exit code.

    1 if any task failed; else :data:`EXIT_QC_WARNING` if ``strict`` and a report warns; else 0.
    """
    if not isinstance(reports, (list, tuple)):
        reports = [reports]
    ok = True
    warnings = []
    for report in reports:
        print(report.summary())
        ok &= report.ok
        warnings += getattr(report, "warnings", [])
    for warning in warnings:
        print(f"chunkreg: warning: {warning}", file=sys.stderr)
    if not ok:
        print(
            "chunkreg: some tasks failed (listed above); run the same command again to retry them.",
            file=sys.stderr,
        )
        return 1
    return EXIT_QC_WARNING if strict and warnings else 0


def add_input_check_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--allow-sparse``."""
    parser.add_argument(
        "--allow-sparse",
        action="store_true",
        help="accept inputs whose stores lack chunk files (read as the fill value); by "
        "default a missing chunk next to stored data is refused, naming it",
    )
