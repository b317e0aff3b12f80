"""``chunkreg qc``: summarise (and plot) the quality control stored in an output."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    """Register the ``qc`` sub-command."""
    parser = subparsers.add_parser(
        "qc",
        help="quality summary of a registration output",
        description="Print the quality control of OUTPUT (from `chunkreg blocks`, `warp "
        "--reference` or `flow`): NCC before and after registration per tile, worst tiles "
        "first, and the seam metric.",
    )
    parser.add_argument("output", help="a chunkreg output group")
    parser.add_argument(
        "--worst", type=int, default=10, metavar="N", help="list the N worst tiles (default 10)"
    )
    parser.add_argument(
        "--plot", metavar="PNG", help="also save a figure (needs matplotlib: chunkreg[plot])"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the sub-command; return the exit code."""
    from ..volume import plot_qc, summarise_qc

    print(summarise_qc(args.output, worst=args.worst))
    if args.plot:
        plot_qc(args.output, args.plot)
        print(f"figure written to {args.plot}")
    return 0
