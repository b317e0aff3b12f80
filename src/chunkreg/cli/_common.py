"""Options and output shared by every sub-command that runs on a cluster."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator

from .._logging import LEVELS
from ..errors import InputError

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


def shards_value(text: str):
    """Parse ``--shards``: ``auto``, ``none`` or ``N[,N...]`` (argparse ``type=``)."""
    if text.lower() in ("auto", "none"):
        return "auto" if text.lower() == "auto" else None
    try:
        return int_tuple(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected auto, none or N[,N...]; got {text!r}") from None


def add_shards_argument(
    parser: argparse.ArgumentParser, *, inherited: str | None = "the input's", what: str = "output"
) -> None:
    """``--shards auto|none|N[,N...]``: the shard shape of an image output.

    With ``inherited=None`` the default is unsharded (nothing to inherit from).
    """
    default = "auto: " + inherited + " shards" if inherited else "none, unsharded"
    parser.add_argument(
        "--shards",
        type=shards_value,
        default="auto" if inherited else None,
        metavar="auto|none|N[,N...]" if inherited else "none|N[,N...]",
        help=f"{what} shard shape, a multiple of the chunks: one file per shard instead of per "
        f"chunk; tasks then write whole shards (default {default})",
    )


def add_channel_argument(parser, *, what: str = "register on") -> None:
    """``--channel C``: the registration channel of multi-channel inputs."""
    parser.add_argument(
        "--channel",
        type=int,
        metavar="C",
        help=f"channel to {what}, for multi-channel inputs (channel axis named c in the "
        "OME-Zarr axes or zarr dimension_names, default 0; a plain array's extra first axis "
        "needs it); the result applies to every channel",
    )


def storage_option(text: str) -> tuple[str, object]:
    """Parse ``--storage-option KEY=VALUE``; VALUE as JSON when it parses (true, 3), else text."""
    import json

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE; got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


@contextlib.contextmanager
def storage_options_applied(args: argparse.Namespace) -> Iterator[None]:
    """Make ``--storage-option`` the fsspec defaults of the URL schemes on the command line.

    They go into ``fsspec.config.conf`` for the duration of the command, so every URL of
    those schemes opened here (inputs and outputs) gets them; the stores pickle with them,
    so workers open the same way.
    """
    from ..io._arrays import storage_defaults, url_schemes

    pairs = getattr(args, "storage_option", None) or []
    if not pairs:
        yield
        return
    schemes = url_schemes(vars(args).values())
    if not schemes:
        raise InputError(
            "--storage-option applies to URL inputs or outputs (s3://...); none given."
        )
    with storage_defaults(schemes, dict(pairs)):
        yield


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
    group.add_argument(
        "--storage-option",
        type=storage_option,
        action="append",
        metavar="KEY=VALUE",
        help="option of the fsspec filesystem of URL inputs and outputs (s3://...), e.g. "
        "endpoint_url=http://127.0.0.1:9000 or anon=true; repeat for several",
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


def add_pyramid_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--no-pyramid`` (image outputs get display pyramid levels by default)."""
    parser.add_argument(
        "--no-pyramid",
        dest="pyramid",
        action="store_false",
        help="write level 0 only, without the display pyramid (levels 1, 2, ... of block means "
        "along the fine spatial axes, down to about 64 voxels)",
    )


def add_input_check_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--allow-sparse``."""
    parser.add_argument(
        "--allow-sparse",
        action="store_true",
        help="accept inputs whose stores lack chunk files (read as the fill value); by "
        "default a missing chunk next to stored data is refused, naming it",
    )
