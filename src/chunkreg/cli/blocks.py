"""``chunkreg blocks``: blockwise rigid (piecewise-rigid) registration of two zarr volumes."""

from __future__ import annotations

import argparse

from ._common import (
    add_channel_argument,
    add_cluster_arguments,
    add_input_check_arguments,
    add_shards_argument,
    cluster_options,
    finish,
    int_tuple,
)


def _max_deviation(text: str) -> float | None:
    """Parse ``"none"`` as None (no outlier rejection), anything else as a float."""
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected voxels or 'none'; got {text!r}") from None


def add_parser(subparsers) -> None:
    """Register the ``blocks`` sub-command."""
    parser = subparsers.add_parser(
        "blocks",
        help="one rigid shift per block (piecewise-rigid registration)",
        description="Estimate one shift per block of REFERENCE and MOVING by phase "
        "cross-correlation, mark empty or poorly matching blocks and outliers (shifts far from "
        "their neighbours') unreliable and fill them from their neighbours, and store the grid "
        "in OUTPUT. With --flow, also write the dense displacement field for `chunkreg warp`. "
        "Running again resumes.",
    )
    parser.add_argument("reference", help="reference zarr array (or OME-Zarr group)")
    parser.add_argument("moving", help="moving zarr array (or OME-Zarr group), same shape")
    parser.add_argument("output", help="output zarr group for the block shifts")
    parser.add_argument(
        "--block", type=int_tuple, default=64, metavar="N[,N..]", help="block shape (default 64)"
    )
    parser.add_argument(
        "--overlap",
        type=int_tuple,
        default=0,
        metavar="N[,N..]",
        help="voxels read beyond each side of a block (default 0)",
    )
    parser.add_argument(
        "--upsample", type=int, default=10, metavar="N", help="sub-voxel precision 1/N (default 10)"
    )
    parser.add_argument(
        "--normalization",
        choices=["none", "phase"],
        default="none",
        help="cross-power normalisation (default none: plain cross-correlation)",
    )
    parser.add_argument(
        "--min-quality",
        type=float,
        default=0.3,
        metavar="NCC",
        help="smallest NCC after shifting for a reliable block (default 0.3)",
    )
    parser.add_argument(
        "--max-deviation",
        type=_max_deviation,
        default=5.0,
        metavar="VOXELS",
        help="reject as outliers blocks whose shift is further than this from the median of "
        "their reliable neighbours' shifts (default 5; 'none' keeps every block)",
    )
    parser.add_argument(
        "--flow",
        metavar="FLOW",
        help="also write the dense displacement field (zarr group) here",
    )
    add_shards_argument(parser, inherited=None, what="--flow field's")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and write nothing")
    add_channel_argument(parser)
    add_input_check_arguments(parser)
    add_cluster_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the sub-command; return the exit code."""
    from ..volume._blockwise import blockwise_shifts, plan_blockwise_shifts
    from ..volume._shifts_to_flow import shifts_to_flow

    normalization = None if args.normalization == "none" else args.normalization
    params = {
        "block": args.block,
        "overlap": args.overlap,
        "upsample_factor": args.upsample,
        "normalization": normalization,
    }
    params["allow_sparse"] = args.allow_sparse
    params["channel"] = args.channel
    if args.dry_run:
        print(plan_blockwise_shifts(args.reference, args.moving, **params))
        return 0
    options = cluster_options(args)
    result = blockwise_shifts(
        args.reference,
        args.moving,
        args.output,
        min_quality=args.min_quality,
        max_deviation=args.max_deviation,
        **params,
        **options,
    )
    reports = [result.report]
    if args.flow is not None and result.report.ok:
        reports.append(shifts_to_flow(args.output, args.flow, shards=args.shards, **options))
    return finish(reports, strict=args.strict)
